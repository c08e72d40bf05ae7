#!/usr/bin/env bash
# RFAD's speed knobs at equal wall-clock (issue 12): MNIST ipc 10, learned labels, $MIN minutes each (default 3),
# one knob changed at a time from the base (rf-convnet without the stem conv, i.e. DC's/RFAD's ConvNet; 2 networks
# of width 64 per training draw, a redraw and a new held target batch every 10 steps, 1280 target images). Every row
# is validated and evaluated with the fixed 8-network kernel of its own architecture. Rows land in the "Speed knobs"
# table of benchmarks/results/rfad.md. Run it alone: the rows are wall-clock budgets.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
MIN=${MIN:-3}
K0=rf-convnet:models=8,width=64,depth=3,stem=0
K1=rf-convnet:models=8,width=64,depth=3,stem=1
run() { $PY benchmarks/rfad.py --group ablation --dataset mnist --ipc 10 --minutes "$MIN" --no-baseline --redraw-every 10 "$@"; }
run --kernel $K0 --draw-models 2 --draw-width 64
run --kernel $K1 --draw-models 2 --draw-width 64
run --kernel $K0 --draw-models 1 --draw-width 64
run --kernel $K0 --draw-models 4 --draw-width 64
run --kernel $K0 --draw-models 2 --draw-width 32
run --kernel $K0 --draw-models 2 --draw-width 128
run --kernel $K0 --draw-models 2 --draw-width 64 --target-batch 320
run --kernel $K0 --draw-models 2 --draw-width 64 --target-batch 2560
run --kernel $K0 --draw-models 2 --draw-width 64 --redraw-every 1   # the later flag wins
run --kernel $K0 --draw-models 2 --draw-width 64 --redraw-every 50

#!/usr/bin/env bash
# The cross-architecture table (issue 27), benchmarks/results/cross_arch.md, from scratch: each method's set at ipc 1
# on MNIST and Fashion-MNIST, made with the commands below (RFAD and DC: 10 minutes of learning each; KIP: the
# README's 400 steps with the FC kernel and learned labels), then every set, and class-balanced random real
# images, trained on each architecture under its published protocol (benchmarks/cross_arch.py: one
# `kdistill evaluate --model M --seeds 2` a cell, one at a time). A set whose folder exists is not made again.
# About 2.5 hours on 2 cores; run it alone (the table records seconds per seed and the load average).
#
#   bash benchmarks/cross_arch.sh [DATASET...]        # default: mnist fashion_mnist
#   MODELS="convnet mlp" bash benchmarks/cross_arch.sh mnist   # some architectures only
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
OUT=runs/xarch
MODELS=${MODELS:-convnet mlp alexnet vgg11 resnet18}
mkdir -p "$OUT"

make_set() {  # NAME ARGS...: distil into $OUT/NAME unless it is there
  local name=$1; shift
  if [ ! -f "$OUT/$name/distilled.npz" ]; then
    $PY -m kdistill.cli distill "$@" --no-full --no-baseline --out "$OUT/$name" --force
  fi
}

DATASETS=${*:-mnist fashion_mnist}
for d in $DATASETS; do
  make_set "rfad_${d}_1" --dataset "$d" --method rfad --ipc 1 --learn-time-limit 600
  make_set "dc_${d}_1" --dataset "$d" --method dc --ipc 1 --learn-time-limit 600
  make_set "kip_${d}_1" --dataset "$d" --method kip --kernel fc-ntk:depth=1 --ipc 1 --steps 400 --val-every 50 \
    --learn-labels --reg 1e-6
  # shellcheck disable=SC2086
  $PY benchmarks/cross_arch.py run --dataset "$d" --ipc 1 --seeds 2 --models $MODELS --keep-random "$OUT" \
    --set "rfad=$OUT/rfad_${d}_1/distilled.npz" --set "dc=$OUT/dc_${d}_1/distilled.npz" \
    --set "kip=$OUT/kip_${d}_1/distilled.npz"
done

#!/bin/bash
# FRePo's outer learning rate on MNIST ipc 1 at equal wall-clock (5 minutes of learning each, no validation,
# target batch 256), each set evaluated under DC's protocol with 2 networks. Writes results/frepo_lr.txt:
# "lr  DC-protocol mean  last step". Run alone on the machine: the budget is wall-clock.
cd "$(dirname "$0")/.." || exit 1
out_dir=$(mktemp -d)
result=benchmarks/results/frepo_lr.txt
{ echo "# $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
  echo "# lr  dc_protocol_mean  steps"; } > "$result"
for lr in 0.0003 0.003 0.03; do
  out=$out_dir/lr$lr
  .venv/bin/kdistill distill --dataset mnist --method frepo --ipc 1 --learn-time-limit 300 --val-every 0 \
    --target-batch 256 --lr $lr --out "$out" --no-full --no-baseline > "$out.log" 2>&1
  .venv/bin/kdistill evaluate "$out/distilled.npz" --model convnet --seeds 2 --json > "$out.eval.json" 2>/dev/null
  echo "$lr $(grep -o '"mean": [0-9.]*' "$out.eval.json") $(grep -o 'frepo step [0-9]*' "$out.log" | tail -1)" >> "$result"
done
cat "$result"

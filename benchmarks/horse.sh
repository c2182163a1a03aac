#!/usr/bin/env bash
# Weizmann Horse on the CPU: FCN-8s/VGG16 from the shared ImageNet conv weights, a schedule
# that fits ~15 minutes on 2 cores (240 iterations, batch 4, 160×224), then the record:
# val metrics, panels, curves → docs/benchmarks/horse-cpu/.
#
#   bash benchmarks/horse.sh            # train + record (RUN defaults to runs/horse15)
#   bash benchmarks/horse.sh record     # record an existing run
set -euo pipefail
cd "$(dirname "$0")/.."
run="${RUN:-runs/horse15}"
out=docs/benchmarks/horse-cpu
if [ "${1:-all}" != record ]; then
  rm -rf "$run"
  start=$(date +%s)
  .venv/bin/fcnseg train fcn8s_vgg16_horse -o "$run" --no-progress --set train.iterations=240 \
    --set train.eval_every=120 --set train.checkpoint_every=120
  echo "$(( $(date +%s) - start ))" > "$run/wall_seconds.txt"
fi
mkdir -p "$out"
.venv/bin/fcnseg eval "$run" -o "$out" --save-panels 6 --no-progress
cp "$run/curves.png" "$run/log.csv" "$out/"
[ -f "$run/wall_seconds.txt" ] && cp "$run/wall_seconds.txt" "$out/"
echo "recorded $run → $out"

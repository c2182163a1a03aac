#!/usr/bin/env bash
# The whole GPU run of the benchmarks, as one prepared script for a lent CUDA machine.
#
#   bash benchmarks/gpu.sh prepare      # here: copy CamVid train+val and the VGG16 weights
#                                       #   (~56 MiB) into .gpu-data/ (git-ignored, carried)
#   bash benchmarks/gpu.sh run          # there (carry .gpu-data): CamVid run + speed table;
#                                       #   results in docs/benchmarks, and packed as
#                                       #   $OUT/gpu-results.tgz when $OUT is set (the device
#                                       #   tool returns at most 8 files)
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-run}" in
  prepare)
    src="${FCNSEG_SHARED:-../shared}"
    mkdir -p .gpu-data/data/camvid .gpu-data/weights
    for d in train trainannot val valannot; do cp -r "$src/data/camvid/$d" .gpu-data/data/camvid/; done
    cp "$src/weights/vgg16-imagenet-features.safetensors" .gpu-data/weights/
    grep -qx '/.gpu-data/' .git/info/exclude 2>/dev/null || echo '/.gpu-data/' >> .git/info/exclude
    du -sh .gpu-data
    ;;
  run)
    out=docs/benchmarks
    mkdir -p "$out"
    export FCNSEG_SHARED="$PWD/.gpu-data" PYTHONUNBUFFERED=1
    python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'"
    python -m pip install --quiet --no-deps -e . 2>/dev/null || true
    python benchmarks/camvid.py --preset gpu --out "$out" 2>&1 | tee "$out/camvid-gpu.console.txt"
    python benchmarks/speed.py --device cuda --batches 1 8 32 --compile --out "$out" \
      2>&1 | tee "$out/speed-cuda.console.txt"
    if [ -n "${OUT:-}" ]; then tar czf "$OUT/gpu-results.tgz" "$out"/camvid-gpu* "$out"/speed-cuda*; fi
    ;;
  *) echo "usage: bash benchmarks/gpu.sh prepare|run" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# Set up .venv (if needed) and run the demo: train a small FCN-8s on generated shapes, then
# predict on held-out images. Extra arguments go to `fcnseg demo` (e.g. -o DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet -e '.[dev]'
exec .venv/bin/fcnseg demo "$@"

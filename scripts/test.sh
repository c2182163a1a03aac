#!/usr/bin/env bash
# Set up a virtual environment in .venv (if needed) and run fcnseg's test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k alignment`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet -e '.[dev]'
exec .venv/bin/python -m pytest "$@"

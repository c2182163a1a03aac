#!/usr/bin/env bash
# Set up .venv (if needed) and run fcnseg's test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k alignment`.
source "$(dirname "$0")/venv.sh"
exec .venv/bin/python -m pytest "$@"

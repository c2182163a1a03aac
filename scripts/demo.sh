#!/usr/bin/env bash
# Set up .venv (if needed) and run the demo: train a small FCN-8s on generated shapes, then
# predict on held-out images. Extra arguments go to `fcnseg demo` (e.g. -o DIR).
source "$(dirname "$0")/venv.sh"
exec .venv/bin/fcnseg demo "$@"

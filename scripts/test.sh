#!/usr/bin/env bash
# Set up, then run the whole test suite (fast unit tests and the slow end-to-end ones).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m pytest -q "$@"

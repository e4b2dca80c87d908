#!/usr/bin/env bash
# The main job: set up, then the PACING-vs-GPT-2 study at its CPU preset on the embedded Shakespeare
# corpus. Writes runs/pacing_vs_gpt2-cpu/report.md (+ report.html, curves, samples).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/patchbench study recipes/pacing_vs_gpt2.yaml --preset cpu --out runs/pacing_vs_gpt2-cpu --resume "$@"

#!/usr/bin/env bash
# Set up, then run the whole test suite (fast unit tests and the slow end-to-end ones).
# The tests of the optional pieces need espeak-ng (speech synthesis) and RDKit (scaffold split), and the
# converge presets read Fashion-MNIST from Debian's dataset-fashion-mnist (/usr/share/datasets/fashion-mnist):
# all are installed here so that none of them is skipped or falls back to digits.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m pip install -q -e ".[test,chem]"
if ! command -v espeak-ng >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get install -y -q espeak-ng >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q espeak-ng >/dev/null 2>&1; }) \
    || echo "scripts/test.sh: could not install espeak-ng; its test will be skipped" >&2
fi
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; }) \
    || echo "scripts/test.sh: could not install dataset-fashion-mnist; image studies fall back to digits" >&2
fi
.venv/bin/python -m pytest -q "$@"

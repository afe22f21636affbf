#!/usr/bin/env bash
# Regenerate requirements.lock (exact versions of everything the study and the tests import)
# from the ranges in requirements.txt. torch/torchvision are held at the releases the tests run on.
#   bash scripts/lock.sh
set -euo pipefail
cd "$(dirname "$0")/.."
tools=$(mktemp -d)
python3 -m venv "$tools" && "$tools/bin/pip" install -q pip-tools==7.6.2
CUSTOM_COMPILE_COMMAND="bash scripts/lock.sh" "$tools/bin/pip-compile" -q --strip-extras --no-emit-index-url --no-emit-find-links \
  --upgrade-package torch==2.14.1 --upgrade-package torchvision==0.29.1 \
  --output-file requirements.lock requirements.txt
rm -rf "$tools"

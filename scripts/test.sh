#!/usr/bin/env bash
# Everything the tests need on a fresh Debian machine, then the test suite.
#   bash scripts/test.sh            # all tests
#   bash scripts/test.sh -m "not slow"
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v g++ >/dev/null 2>&1 || need+=(g++)  # torch.compile's CPU backend compiles C++
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || need+=(dataset-fashion-mnist)
if [ ${#need[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi

python3 -m pip install -q -r requirements.txt
python3 -m ipykernel install --user --name python3 >/dev/null 2>&1 || true

export TQDM_DISABLE=1 PYTHONUNBUFFERED=1
exec python3 -m pytest -q "$@"

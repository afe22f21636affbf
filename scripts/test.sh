#!/usr/bin/env bash
# Everything the tests need on a fresh Debian machine, then the test suite.
#   bash scripts/test.sh                 # all tests
#   bash scripts/test.sh -m "not slow"   # the quick check
# Python packages come from requirements.lock (exact versions) into the active virtual
# environment, or into .venv/ (made when missing) when none is active.
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

if [ -z "${VIRTUAL_ENV:-}" ]; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  # shellcheck disable=SC1091
  . .venv/bin/activate
fi
python -m pip install -q -r requirements.lock
python -m pip check

export TQDM_DISABLE=1 PYTHONUNBUFFERED=1
status=0
python -m pytest -q "$@" || status=$?
[ "$status" -eq 5 ] && { echo "no tests were collected"; exit 1; }
exit "$status"

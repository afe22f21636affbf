"""Write requirements.lock for another CUDA build of the same torch, for a driver older than the
lock's build needs (the lock's torch from PyPI is built for CUDA 13.0):

    python scripts/lock_for_cuda.py 12.6 > requirements-cu126.txt
    pip install -r requirements-cu126.txt && pip check

Every package keeps the lock's exact version; torch and torchvision become the same releases built
for that CUDA (PyTorch's index), and the lock's CUDA 13 runtime packages are left for pip to resolve
from that build's own requirements."""
from __future__ import annotations

import re
import sys
from pathlib import Path

LOCK = Path(__file__).resolve().parent.parent / "requirements.lock"
CUDA_RUNTIME = re.compile(r"^(nvidia-|cuda-)")  # what the lock's CUDA 13 torch pulls in from PyPI
BUILT_FOR_CUDA = ("torch", "torchvision")


def lock_for_cuda(lock_text: str, cuda: str) -> str:
    if not re.fullmatch(r"\d+\.\d", cuda):
        raise ValueError(f"CUDA version {cuda!r}: expected MAJOR.MINOR, as PyTorch's builds name it (12.6, 12.8)")
    tag = "cu" + cuda.replace(".", "")
    lines = [f"# requirements.lock for torch built for CUDA {cuda}: python scripts/lock_for_cuda.py {cuda}",
             f"--extra-index-url https://download.pytorch.org/whl/{tag}"]
    for line in lock_text.splitlines():
        pin = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)", line)
        if pin is None:
            continue
        name, version = pin.groups()
        if CUDA_RUNTIME.match(name):
            continue
        lines.append(f"{name}=={version}+{tag}" if name in BUILT_FOR_CUDA else f"{name}=={version}")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python scripts/lock_for_cuda.py CUDA_VERSION   (e.g. 12.6)", file=sys.stderr)
        return 2
    try:
        sys.stdout.write(lock_for_cuda(LOCK.read_text(), argv[0]))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

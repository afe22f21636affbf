import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_script(*args, env=None, timeout=900, cwd=ROOT):
    full_env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, str(ROOT / "desupcon.py"), *map(str, args)], capture_output=True,
                          text=True, env=full_env, timeout=timeout, cwd=cwd)


def trained_runs(stdout: str) -> list[str]:
    return [line.split()[1].rstrip(":") for line in stdout.splitlines()
            if line.startswith("== ") and ": training (" in line]


def cached_runs(stdout: str) -> list[str]:
    return [line.split()[1].rstrip(":") for line in stdout.splitlines()
            if line.startswith("== ") and (line.rstrip().endswith(": cached") or ": cached;" in line)]


def wait_for_file(path: Path, proc: subprocess.Popen, give_up_after: float = 120) -> None:
    """Poll until `path` exists while `proc` runs: a guard against a hung child, not a timing."""
    import time

    import pytest

    deadline = time.monotonic() + give_up_after
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"the process ended (exit {proc.returncode}) before {path.name} appeared")
        if time.monotonic() > deadline:
            pytest.fail(f"{path.name} did not appear within {give_up_after:.0f} s")
        time.sleep(0.05)

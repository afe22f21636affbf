import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_script(*args, env=None, timeout=300, cwd=ROOT):
    full_env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, str(ROOT / "desupcon.py"), *map(str, args)], capture_output=True,
                          text=True, env=full_env, timeout=timeout, cwd=cwd)


def trained_runs(stdout: str) -> list[str]:
    return [line.split()[1].rstrip(":") for line in stdout.splitlines()
            if line.startswith("== ") and ": training (" in line]


def cached_runs(stdout: str) -> list[str]:
    return [line.split()[1].rstrip(":") for line in stdout.splitlines()
            if line.startswith("== ") and (line.rstrip().endswith(": cached") or ": cached;" in line)]

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


def _one(folder: Path, pattern: str) -> Path:
    import re

    found = [p for p in folder.iterdir() if re.fullmatch(pattern, p.name)] if folder.is_dir() else []
    assert len(found) == 1, f"expected one file matching {pattern} in {folder}, found {[p.name for p in found]}"
    return found[0]


def results_file(out: Path, kind: str = "comprehensive") -> Path:
    """The study's results file (its name ends in the settings' id); exactly one must exist."""
    return _one(Path(out) / "json_results", rf"{kind}_results_.*_[0-9a-f]{{10}}\.json")


def report_file(out: Path, kind: str = "comprehensive") -> Path:
    return results_file(out, kind).with_suffix(".md")


def checkpoint_files(out: Path, name: str) -> list[Path]:
    """Every `pth_models/<name>-<id>.pth` (no resume state): one per config the run was trained with."""
    import re

    folder = Path(out) / "pth_models"
    return sorted(p for p in folder.glob(f"{name}-*.pth") if re.fullmatch(re.escape(name) + r"-[0-9a-f]{10}\.pth", p.name))


def checkpoint_file(out: Path, name: str, suffix: str = ".pth") -> Path:
    """`pth_models/<name>-<id>.pth` (or `.resume.pth`): the run's one checkpoint."""
    import re

    return _one(Path(out) / "pth_models", re.escape(name) + r"-[0-9a-f]{10}" + re.escape(suffix))


def log_file(out: Path, name: str) -> Path:
    import re

    return _one(Path(out) / "json_results" / "training_logs", re.escape(name) + r"-[0-9a-f]{10}\.json")


def wait_for_line(proc: subprocess.Popen, text: str) -> str:
    """Read the child's stdout until a line containing `text` (an event from the child, not a
    timing); fail if the child ends first. Returns that line."""
    import pytest

    for line in proc.stdout:
        if text in line:
            return line
    proc.wait()
    pytest.fail(f"the process ended (exit {proc.returncode}) before printing {text!r}")

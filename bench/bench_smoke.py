"""Wall time of the smoke study (not a test): the first run, which trains and analyses every run,
and a rerun that finds every checkpoint cached. The tests assert what the rerun does (it trains
nothing); the seconds live here.

    python bench/bench_smoke.py            # one JSON line
"""
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from lwsupcrd.data import write_cifar_like  # noqa: E402


def timed(args: list[str]) -> tuple[float, str]:
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    res = subprocess.run([sys.executable, str(ROOT / "desupcon.py"), *args], capture_output=True, text=True,
                         env=env, cwd=ROOT)
    seconds = time.perf_counter() - start
    if res.returncode:
        sys.exit(f"error: the smoke study failed:\n{res.stderr[-2000:]}")
    return seconds, res.stdout


def main() -> None:
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        data = write_cifar_like(Path(tmp) / "data", train_per_class=5, test_per_class=2)
        args = ["--preset", "smoke", "--data-dir", str(data), "--out-dir", str(Path(tmp) / "out")]
        first, out = timed(args)
        again, out_again = timed(args)
    trained = sum(": training (" in line for line in out.splitlines())
    cached = sum(line.startswith("== ") and ": cached" in line for line in out_again.splitlines())
    print(json.dumps(dict(bench="smoke_study", first_run_s=round(first, 1), cached_rerun_s=round(again, 1),
                          runs_trained=trained, runs_cached_on_rerun=cached, threads=torch.get_num_threads(),
                          torch=str(torch.__version__), machine=platform.machine(), date=str(date.today()))))


if __name__ == "__main__":
    main()

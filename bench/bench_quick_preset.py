"""The whole quick preset, timed with our training loop and with the plain reference loop
(`bench/reference_loop.py`), one after the other on the same machine (not a test).

    python bench/bench_quick_preset.py --data-dir /usr/share/datasets/fashion-mnist

Each way runs `desupcon.py --preset quick --dataset fashion-mnist --force-retrain` in its own
process and output folder; only the training loop differs (the probe, the analysis, the figures
and the report are the same code). Prints one JSON line per way, then the ratio.
"""
import argparse
import json
import os
import platform
import runpy
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(loop: str, argv: list[str]) -> None:
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "bench"))
    if loop == "reference":
        import lwsupcrd.study
        from reference_loop import reference_fit

        lwsupcrd.study.fit = reference_fit
    sys.argv = [str(ROOT / "desupcon.py"), *argv]
    runpy.run_path(str(ROOT / "desupcon.py"), run_name="__main__")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--loops", default="ours,reference")
    p.add_argument("--out-root", default=None, help="where each way's outputs go (default: a temporary folder)")
    a = p.parse_args()
    import torch

    root = Path(a.out_root or tempfile.mkdtemp(prefix="bench_quick_"))
    seconds = {}
    for loop in a.loops.split(","):
        out = root / loop
        argv = ["--preset", "quick", "--dataset", "fashion-mnist", "--data-dir", a.data_dir, "--out-dir", str(out),
                "--force-retrain", "--device", "cpu"]
        start = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--child", loop, *argv], check=True,
                       env={**os.environ, "TQDM_DISABLE": "1"}, stdout=subprocess.DEVNULL)
        seconds[loop] = time.perf_counter() - start
        results = json.loads(next((out / "json_results").glob("comprehensive_results_*.json")).read_text())
        runs = results["runs"]
        print(json.dumps({
            "loop": loop, "wall_seconds": round(seconds[loop], 1),
            "train_seconds": round(sum(r["metrics"].get("train_seconds", 0) for r in runs.values()), 1),
            "probe_test_acc": {n: round(r["metrics"]["probe_test_acc"], 2) for n, r in runs.items()
                               if "probe_test_acc" in r["metrics"]},
            "threads": torch.get_num_threads(), "torch": torch.__version__, "machine": platform.machine(),
            "cpus": os.cpu_count(), "date": str(date.today()), "out": str(out)}), flush=True)
    if len(seconds) == 2:
        print(json.dumps({"reference_over_ours": round(seconds["reference"] / seconds["ours"], 2)}))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:  # one way of the comparison: desupcon.py's own flags follow
        child(sys.argv[2], sys.argv[3:])
    else:
        main()

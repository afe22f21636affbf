"""The regime pilot's table: for each standard-protocol results file given, each baseline's gap to
the vanilla student on every seed (test top-1 at the last epoch, percentage points), and whether it
is ahead on every seed, as the published tables have KD, CRD and DKD on every pair.

    python bench/regime_pilot.py RESULTS.json [RESULTS.json ...]

Prints one Markdown table (rows: regime x baseline) for bench/RESULTS.md.
"""
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from lwsupcrd.benchmark import VANILLA, by_method  # noqa: E402

BASELINES = ("kd", "crd", "dkd")


def regime(settings: dict) -> str:
    return (f"{settings['train_subset']} images x {settings['student_epochs']} epochs, "
            f"{settings['bank_negatives']} negatives")


def rows(path: Path) -> list[str]:
    results = json.loads(path.read_text())
    groups = by_method(results)
    vanilla = groups[VANILLA].by_seed("test_acc")
    out = []
    for name in BASELINES:
        if name not in groups:
            continue
        acc = groups[name].by_seed("test_acc")
        seeds = sorted(set(acc) & set(vanilla))
        gaps = [acc[s] - vanilla[s] for s in seeds]
        seconds = [e["metrics"]["train_seconds"] for e in groups[name].entries]
        out.append(f"| {regime(results['settings'])} | {name} | {len(seeds)} | "
                   + ", ".join(f"{g:+.2f}" for g in gaps)
                   + f" | {sum(gaps) / len(gaps):+.2f} | {'yes' if all(g > 0 for g in gaps) else 'no'} | "
                   + f"{sum(vanilla[s] for s in seeds) / len(seeds):.2f} | {statistics.median(seconds):.0f} |")
    return out


def main(paths: list[str]) -> None:
    print("| Regime (per student) | Baseline | Seeds | Gap to vanilla per seed (pp) | Mean gap | Ahead on every seed "
          "| Vanilla mean (%) | Median train s |")
    print("|---|---|---|---|---|---|---|---|")
    for path in paths:
        print("\n".join(rows(Path(path))))


if __name__ == "__main__":
    main(sys.argv[1:])

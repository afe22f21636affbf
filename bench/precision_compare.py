"""Does bf16 autocast on the CPU keep a preset's accuracy over its seeds? (not a test)

Compares two standard-protocol results files of the same preset, one run in float32 and one with
`--cpu-bf16`, method by method over the seeds both hold: each one's mean ± sd, the paired
difference per seed (bf16 − float32), and whether the mean difference lies within the seed spread
(|mean difference| ≤ the smaller of the two sds), the rule the verdict issue sets for using bf16.

    python desupcon.py --protocol standard --preset evidence --data-dir D --out-dir F32          # float32
    python desupcon.py --protocol standard --preset evidence --data-dir D --out-dir BF16 --cpu-bf16 \\
        --only 'std_vanilla_*,std_kd_*,std_crd_resnet8_*,std_lwsupcrd_resnet8_*'
    python bench/precision_compare.py F32/json_results/standard_results_….json BF16/json_results/….json

Prints one Markdown table for bench/RESULTS.md, then the training seconds' medians of both.
"""
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lwsupcrd.benchmark import by_method, precision_of  # noqa: E402


def compare(f32: dict, bf16: dict) -> list[str]:
    a, b = by_method(f32), by_method(bf16)
    lines = ["| Method | Seeds | float32 (%) | bf16 (%) | bf16 − float32 per seed (pp) | Mean (pp) | Within the seed spread |",
             "|---|---|---|---|---|---|---|"]
    for method in a:
        if method == "teacher" or method not in b:
            continue
        x, y = a[method].by_seed("test_acc"), b[method].by_seed("test_acc")
        seeds = sorted(set(x) & set(y))
        if len(seeds) < 2:
            continue
        diffs = [y[s] - x[s] for s in seeds]
        sd = min(statistics.stdev([x[s] for s in seeds]), statistics.stdev([y[s] for s in seeds]))
        mean = statistics.mean(diffs)
        lines.append(f"| {method} | {len(seeds)} | {statistics.mean(x[s] for s in seeds):.2f} ± "
                     f"{statistics.stdev([x[s] for s in seeds]):.2f} | {statistics.mean(y[s] for s in seeds):.2f} ± "
                     f"{statistics.stdev([y[s] for s in seeds]):.2f} | " + ", ".join(f"{d:+.2f}" for d in diffs)
                     + f" | {mean:+.2f} | {'yes' if abs(mean) <= sd else 'no'} |")
    return lines


def seconds(results: dict) -> float:
    return statistics.median(e["metrics"]["train_seconds"] for e in results["runs"].values() if e["stage"] != "teacher")


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    f32, bf16 = (json.loads(Path(p).read_text()) for p in sys.argv[1:])
    if (precision_of(f32), precision_of(bf16)) != ("float32", "bf16 autocast"):
        sys.exit(f"expected a float32 file then a bf16 one, got {precision_of(f32)} and {precision_of(bf16)}")
    print("\n".join(compare(f32, bf16)))
    print(f"\nstudents' median training seconds: float32 {seconds(f32):.0f}, bf16 {seconds(bf16):.0f}")


if __name__ == "__main__":
    main()

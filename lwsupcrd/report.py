"""The results report: the original work's tables, filled only from a comprehensive results file.

    python -m lwsupcrd.report json_results/comprehensive_results_resnet18_cifar100.json

writes REPORT.md beside the results file and prints the same tables. With several seeds each
number is mean ± standard deviation over seeds (n given), and a difference to SupCon is marked
significant (*) only when a paired t-test over the seeds gives p < 0.05.
"""
from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

from .checkpoint import write_text

SEED_SUFFIX = re.compile(r"_seed\d+$")


def base_name(name: str, entry: dict) -> str:
    return entry.get("base") or SEED_SUFFIX.sub("", name)


def value(entry: dict, key: str):
    if key in entry.get("metrics", {}):
        return entry["metrics"][key]
    return entry.get("analysis", {}).get("features", {}).get(key)


class Group:
    """The runs of one experiment, one per seed."""

    def __init__(self, base: str, entries: list[dict]):
        self.base, self.entries = base, entries
        self.first = entries[0]
        self.stage, self.config = self.first["stage"], self.first["config"]

    def by_seed(self, key: str) -> dict[int, float]:
        return {e["config"]["seed"]: value(e, key) for e in self.entries if value(e, key) is not None}

    def stats(self, key: str):
        vals = list(self.by_seed(key).values())
        if not vals:
            return None
        mean = sum(vals) / len(vals)
        std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
        return mean, std, len(vals)

    def fmt(self, key: str, digits: int = 2) -> str:
        st = self.stats(key)
        if st is None:
            return "–"
        mean, std, n = st
        return f"{mean:.{digits}f}" if n == 1 else f"{mean:.{digits}f} ± {std:.{digits}f} (n={n})"


def paired_delta(group: Group, ref: Group | None, key: str = "probe_test_acc") -> str:
    """Mean paired difference to the reference; '*' when a paired t-test over seeds has p < 0.05."""
    if ref is None:
        return "–"
    a, b = group.by_seed(key), ref.by_seed(key)
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return "–"
    diffs = [a[s] - b[s] for s in seeds]
    mean = sum(diffs) / len(diffs)
    if len(diffs) < 2:
        return f"{mean:+.2f}"
    from scipy.stats import ttest_rel

    if all(d == diffs[0] for d in diffs):
        p = 0.0 if diffs[0] != 0 else 1.0
    else:
        p = float(ttest_rel([a[s] for s in seeds], [b[s] for s in seeds]).pvalue)
    return f"{mean:+.2f}{'*' if p < 0.05 else ''} (p={p:.3f})"


def groups_of(results: dict) -> dict[str, Group]:
    grouped: dict[str, list[dict]] = {}
    for name, entry in results["runs"].items():
        grouped.setdefault(base_name(name, entry), []).append(entry)
    return {b: Group(b, sorted(es, key=lambda e: e["config"]["seed"])) for b, es in grouped.items()}


def conditions(results: dict, groups: list[Group]) -> str:
    s = results["settings"]
    env = results.get("environment", {})
    entries = [e for g in groups for e in g.entries]
    def machine(e: dict) -> str:
        return e.get("gpu") or f"CPU, {e.get('cpu_threads', '?')} threads ({e.get('platform', '?')})"

    hardware = sorted({machine(e.get("environment", {})) for e in entries}) or [machine(env)]
    epochs = sorted({e["config"]["epochs"] for e in entries})
    seeds = sorted({e["config"]["seed"] for e in entries})
    return (f"*Preset `{s.get('preset', '?')}`, dataset {s['dataset']}, student {s['student_arch']}, teacher "
            f"{s['teacher_arch']}, train images {entries[0]['config'].get('train_size', '?')}, epochs "
            f"{'/'.join(map(str, epochs))}, batch {s['batch_size']}, seeds {seeds}, hardware: {'; '.join(hardware)}, "
            f"torch {env.get('torch', '?')}, code {env.get('git_sha', '?')}. Accuracy: linear probe on the frozen "
            f"backbone (test split); alignment (same-class pairs) and uniformity (t=2): L2-normalised backbone "
            f"features of the test split.*")


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def label(g: Group) -> str:
    c = g.config
    bank = f" + bank {c['bank_negatives']}" if c.get("bank_negatives") else ""
    ablation = " (wd 1e-4, cosine)" if g.stage == "bank_ablation" else ""
    if g.stage == "teacher":
        return f"Teacher ({c['arch']})"
    if c["method"] == "lwsupcrd":
        return f"LW-SupCRD (α={c['alpha']:g}, β={c['beta']:g}, τ={c['temperature']:g}){bank}{ablation}"
    if c["method"] == "crd":
        return f"CRD{bank}{ablation}"
    return {"supcon": "SupCon", "undistilled": "Undistilled student (CE)"}.get(c["method"], g.base)


def build_report(results: dict) -> str:
    groups = groups_of(results)
    supcon = next((g for b, g in groups.items() if "baseline_supcon" in b), None)

    def acc(g):
        st = g.stats("probe_test_acc")
        return st[0] if st else None

    out = ["# Results report", "",
           "Generated by `python -m lwsupcrd.report` from the results file alone; every number below was "
           "produced by this code under the conditions stated with each table. With several seeds: mean ± "
           "standard deviation over seeds; * marks a difference to SupCon with paired t-test p < 0.05.", ""]
    default_lw = next((b for b in groups if b.startswith("student_alpha_1.0_beta_10.0_temp_0.07")), None)
    main = [g for b, g in groups.items() if acc(g) is not None
            and (g.stage in ("teacher", "baselines", "bank_ablation") or b == default_lw)]
    main.sort(key=lambda g: -acc(g))
    if main:
        out += ["## Main results", "", conditions(results, main), "",
                _table(["Method", "Run", "Test acc (%)", "Δ vs SupCon", "Alignment ↓", "Uniformity ↓"],
                       [[label(g), f"`{g.base}`", g.fmt("probe_test_acc"), paired_delta(g, supcon),
                         g.fmt("class_alignment", 4), g.fmt("uniformity", 4)] for g in main]), ""]

    sweep = [g for g in groups.values() if g.stage == "lwsupcrd"]
    for key, symbol, fixed in (("alpha", "α", dict(beta=10.0, temperature=0.07)),
                               ("beta", "β", dict(alpha=1.0, temperature=0.07)),
                               ("temperature", "τ", dict(alpha=1.0, beta=10.0))):
        rows = sorted((g for g in sweep if all(g.config[k] == v for k, v in fixed.items())),
                      key=lambda g: g.config[key])
        if len(rows) < 2:
            continue
        names = {"alpha": "α", "beta": "β", "temperature": "τ"}
        fixed_txt = ", ".join(f"{names[k]}={v:g}" for k, v in fixed.items())
        out += [f"## {symbol} sweep ({fixed_txt}, adaptive β, no bank)", "", conditions(results, rows), "",
                _table([symbol, "Test acc (%)", "Δ vs SupCon", "Alignment ↓", "Uniformity ↓"],
                       [[f"{g.config[key]:g}", g.fmt("probe_test_acc"), paired_delta(g, supcon),
                         g.fmt("class_alignment", 4), g.fmt("uniformity", 4)] for g in rows]), ""]

    bank = sorted((g for g in groups.values() if g.stage == "bank_ablation" and acc(g) is not None),
                  key=lambda g: -acc(g))
    if bank:
        out += ["## Memory-bank ablation (weight decay 1e-4, cosine annealing)", "", conditions(results, bank), "",
                _table(["Method", "Bank", "Test acc (%)", "Train acc (%)", "Gap", "Alignment ↓", "Uniformity ↓"],
                       [["LW-SupCRD" if g.config["method"] == "lwsupcrd" else "CRD",
                         str(g.config.get("bank_negatives") or "none"), g.fmt("probe_test_acc"),
                         g.fmt("probe_train_acc"), g.fmt("probe_gap"), g.fmt("class_alignment", 4),
                         g.fmt("uniformity", 4)] for g in bank]), ""]
    return "\n".join(out)


def aggregate(results: dict) -> dict:
    """mean, std and n over seeds of every numeric metric, per experiment (for the results file)."""
    out = {}
    for b, g in groups_of(results).items():
        keys = {k for e in g.entries for k, v in e.get("metrics", {}).items() if isinstance(v, (int, float))}
        keys |= {k for e in g.entries for k, v in e.get("analysis", {}).get("features", {}).items()
                 if isinstance(v, (int, float))}
        out[b] = {k: dict(zip(("mean", "std", "n"), g.stats(k))) for k in sorted(keys) if g.stats(k)}
    return out


def write_report(results_path: str | Path) -> Path:
    results_path = Path(results_path)
    results = json.loads(results_path.read_text())
    path = results_path.parent / "REPORT.md"
    write_text(path, build_report(results) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m lwsupcrd.report <comprehensive_results.json>", file=sys.stderr)
        return 2
    try:
        path = write_report(argv[0])
    except (OSError, json.JSONDecodeError, KeyError) as err:
        print(f"error: cannot build the report from {argv[0]}: {err}", file=sys.stderr)
        return 2
    print(path.read_text())
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

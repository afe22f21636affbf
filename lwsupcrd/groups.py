"""The runs of one experiment across seeds: their statistics and paired comparisons.

A results file holds one entry per run; the runs that differ only in their seed form a `Group`.
Statistics are mean, sample standard deviation and n over seeds; two groups are compared on the
seeds they share, by the paired differences and a paired t-test.
"""
from __future__ import annotations

import math
import re

SEED_SUFFIX = re.compile(r"_seed\d+$")


def base_name(name: str, entry: dict) -> str:
    return entry.get("base") or SEED_SUFFIX.sub("", name)


def value(entry: dict, key: str, space: str = "projection"):
    if key in entry.get("metrics", {}):
        return entry["metrics"][key]
    return entry.get("analysis", {}).get(space, {}).get(key)


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
    return mean, math.sqrt(var)


class Group:
    """The runs of one experiment, one per seed."""

    def __init__(self, base: str, entries: list[dict]):
        self.base, self.entries = base, entries
        self.first = entries[0]
        self.stage, self.config = self.first["stage"], self.first["config"]
        self.control = self.first.get("control")  # a run name; `Roles.control_of` finds its group

    def by_seed(self, key: str, space: str = "projection") -> dict[int, float]:
        return {e["config"]["seed"]: value(e, key, space) for e in self.entries if value(e, key, space) is not None}

    def stats(self, key: str, space: str = "projection"):
        vals = list(self.by_seed(key, space).values())
        return (*mean_std(vals), len(vals)) if vals else None

    def fmt(self, key: str, digits: int = 2, space: str = "projection") -> str:
        st = self.stats(key, space)
        if st is None:
            return "–"
        mean, std, n = st
        return f"{mean:.{digits}f}" if n == 1 else f"{mean:.{digits}f} ± {std:.{digits}f} (n={n})"


def headline(settings: dict) -> tuple[str, str]:
    """The original protocol's headline accuracy and how it was read: the original's online classifier
    (`accuracy` "online") or the linear probe on the frozen backbone (ours; every results file before
    the setting existed)."""
    if settings.get("accuracy") == "online":
        return "head_test_acc", ("the online linear classifier trained beside each student and read after its "
                                 "last epoch (the teacher and the undistilled student: their own head), test split")
    return "probe_test_acc", "linear probe on the frozen backbone, test split"


def paired(group: Group, ref: Group, key: str = "probe_test_acc") -> tuple[dict[int, float], float | None]:
    """The per-seed differences group - ref on their shared seeds, and a paired t-test's p (None below 2 seeds)."""
    a, b = group.by_seed(key), ref.by_seed(key)
    diffs = {s: a[s] - b[s] for s in sorted(set(a) & set(b))}
    if len(diffs) < 2:
        return diffs, None
    values = list(diffs.values())
    if all(d == values[0] for d in values):
        return diffs, 0.0 if values[0] != 0 else 1.0
    from scipy.stats import ttest_rel

    seeds = list(diffs)
    return diffs, float(ttest_rel([a[s] for s in seeds], [b[s] for s in seeds]).pvalue)


def paired_delta(group: Group, ref: Group | None, key: str = "probe_test_acc") -> str:
    """Mean paired difference to the reference; '*' when a paired t-test over seeds has p < 0.05."""
    if ref is None:
        return "–"
    diffs, p = paired(group, ref, key)
    if not diffs:
        return "–"
    mean = sum(diffs.values()) / len(diffs)
    return f"{mean:+.2f}" if p is None else f"{mean:+.2f}{'*' if p < 0.05 else ''} (p={p:.3f})"


def groups_of(results: dict) -> dict[str, Group]:
    grouped: dict[str, list[dict]] = {}
    for name, entry in results["runs"].items():
        grouped.setdefault(base_name(name, entry), []).append(entry)
    return {b: Group(b, sorted(es, key=lambda e: e["config"]["seed"])) for b, es in grouped.items()}


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def aggregate(results: dict) -> dict:
    """mean, std and n over seeds of every numeric metric, per experiment (for the results file)."""
    out = {}
    for b, g in groups_of(results).items():
        agg = {}
        keys = {k for e in g.entries for k, v in e.get("metrics", {}).items() if isinstance(v, (int, float))}
        for k in sorted(keys):
            agg[k] = dict(zip(("mean", "std", "n"), g.stats(k)))
        for space in ("projection", "features"):  # the geometry's two embedding spaces
            keys = {k for e in g.entries for k, v in e.get("analysis", {}).get(space, {}).items()
                    if isinstance(v, (int, float)) and v is not None}
            for k in sorted(keys):
                if g.stats(k, space):
                    agg[f"{space}.{k}"] = dict(zip(("mean", "std", "n"), g.stats(k, space)))
        out[b] = agg
    return out

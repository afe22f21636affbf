"""The declared families of comparisons, one per protocol, and the statistics every member is
reported with. A family is declared here, before any run, and reported whole.

Each member compares a run with a reference that differs from it in one thing, paired by seed:

* the mean and standard deviation of the per-seed differences (percentage points);
* the 95 % confidence interval of the mean difference, mean ± t(0.975, n − 1) · sd / √n;
* the paired t-test's two-sided p, and that p adjusted over the members of the family that were
  run (Holm's step-down method);
* on how many seeds the run is ahead.

The verdict follows fixed rules, in this order (`verdict`):

* "better" or "worse": the Holm-adjusted p is below 0.05;
* "no difference > 0.5 pp": the whole 95 % confidence interval lies within ±0.5 points (`MARGIN`);
* "inconclusive": anything else, a single seed included.

Nothing here is computed by a training run: adding a member never marks a cached run as trained by
other code.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

ALPHA = 0.05  # the family-wise error rate of the "better"/"worse" verdicts
MARGIN = 0.5  # pp: a difference smaller than this is of no practical interest here


@dataclass(frozen=True)
class Member:
    what: str  # what the run changes against its reference
    run: str
    reference: str


# The standard protocol: the rows of `methods.STANDARD` by name. The regime checks come first: they
# say whether the literature's baselines beat the vanilla student here, as they do in its tables.
STANDARD = (
    Member("regime check: KD instead of the vanilla student", "kd", "vanilla"),
    Member("regime check: the published CRD instead of the vanilla student", "crd", "vanilla"),
    Member("regime check: DKD instead of the vanilla student", "dkd", "vanilla"),
    Member("the logit weighting (vs unweighted SupCRD)", "lwsupcrd", "supcrd_unweighted"),
    Member("the teacher's probabilities at LW-SupCRD's strength (vs a one-hot teacher)", "lwsupcrd", "supcrd_onehot"),
    Member("LW-SupCRD instead of the published CRD", "lwsupcrd", "crd"),
    Member("LW-SupCRD instead of KD", "lwsupcrd", "kd"),
    Member("LW-SupCRD instead of DKD", "lwsupcrd", "dkd"),
    Member("distillation at all: LW-SupCRD instead of the vanilla student", "lwsupcrd", "vanilla"),
    Member("LW-SupCRD+KD instead of KD", "lwsupcrd_kd", "kd"),
    Member("LW-SupCRD+KD instead of DKD", "lwsupcrd_kd", "dkd"),
    Member("LW-SupCRD+KD instead of CRD+KD", "lwsupcrd_kd", "crd_kd"),
    Member("KD added to LW-SupCRD", "lwsupcrd_kd", "lwsupcrd"),
    Member("KD added to CRD", "crd_kd", "crd"),
    Member("class-level instead of instance-level contrast against the teacher (unweighted SupCRD vs CRD's "
           "InfoNCE form, the same bank)", "supcrd_unweighted", "crd_infonce"),
    Member("same-class keys left out of CRD's negatives (its InfoNCE form)", "crd_infonce_classaware", "crd_infonce"),
)


# The methods added after that family was declared (AB, FT, FSP, ReviewKD, LW-SupCRD's anchor form), a
# family of their own, declared before their runs: each against the vanilla student and against KD, and
# the original's anchor form against the per-positive row. Holm is applied within each family.
STANDARD_MORE = tuple(
    [Member(f"{label} instead of {ref_label}", run, ref)
     for ref, ref_label in (("vanilla", "the vanilla student"), ("kd", "KD"))
     for run, label in (("ab", "AB"), ("ft", "FT"), ("fsp", "FSP"), ("reviewkd", "ReviewKD"))]
    + [Member("LW-SupCRD in the original's anchor form instead of its per-positive form", "lwsupcrd_anchor", "lwsupcrd")])


def compared(family: tuple[Member, ...]) -> tuple[str, ...]:
    """The methods a family compares, in the order they first appear in it."""
    return tuple(dict.fromkeys(m for member in family for m in (member.reference, member.run)))

# The original protocol: roles that `roles.Roles.role` finds in a results file ("bank" stands for
# every bank run, each against its matched control).
ORIGINAL = (
    Member("regime check: SupCon instead of the undistilled student", "supcon", "undistilled"),
    Member("regime check: CRD instead of the undistilled student", "crd", "undistilled"),
    Member("the logit weighting (vs unweighted SupCRD)", "lwsupcrd", "unweighted"),
    Member("the teacher's probabilities at LW-SupCRD's strength (vs a one-hot teacher)", "lwsupcrd", "onehot"),
    Member("LW-SupCRD instead of SupCon", "lwsupcrd", "supcon"),
    Member("LW-SupCRD instead of CRD", "lwsupcrd", "crd"),
    Member("distillation at all: LW-SupCRD instead of the undistilled student", "lwsupcrd", "undistilled"),
    Member("one term per positive (ours) instead of the original's one term per anchor", "perpositive", "lwsupcrd"),
    Member("α on the positive's logit instead of its weight (per-positive form)", "logit", "lwsupcrd"),
    Member("constant push β = 10/1.5 instead of 1 (one-hot teacher vs unweighted)", "onehot", "unweighted"),
    Member("contrast against the teacher's keys instead of the student's own views (unweighted vs SupCon)",
           "unweighted", "supcon"),
    Member("class-level instead of instance-level contrast against the teacher (unweighted vs CRD)",
           "unweighted", "crd"),
    Member("same-class keys left out of CRD's negatives (our InfoNCE form)", "crd_classaware", "crd"),
    Member("the memory bank (each bank run vs its matched control)", "bank", "control"),
)


def paired_stats(diffs: list[float]) -> dict:
    """Mean, sd, the 95 % CI of the mean, the paired t-test's p and the seeds ahead of per-seed
    differences. One seed: no sd, CI or p. Identical differences: a CI of zero width and p = 0
    (1 when they are all zero), the limits of the t-test."""
    from scipy import stats

    n = len(diffs)
    mean = sum(diffs) / n
    out = {"n": n, "mean": mean, "sd": None, "ci": None, "p": None, "ahead": sum(d > 0 for d in diffs)}
    if n < 2:
        return out
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    out["sd"] = sd
    if sd == 0:
        out["ci"], out["p"] = (mean, mean), (0.0 if mean != 0 else 1.0)
        return out
    se = sd / math.sqrt(n)
    half = float(stats.t.ppf(1 - ALPHA / 2, n - 1)) * se
    out["ci"] = (mean - half, mean + half)
    out["p"] = float(2 * stats.t.sf(abs(mean) / se, n - 1))
    return out


def holm(ps: list[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of the p-values that are not None (the members run with two
    seeds or more); None stays None."""
    order = sorted((p, i) for i, p in enumerate(ps) if p is not None)
    m, adjusted, running = len(order), list(ps), 0.0
    for rank, (p, i) in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def verdict(row: dict) -> str:
    if row.get("holm") is not None and row["holm"] < ALPHA:
        return "better" if row["mean"] > 0 else "worse"
    if row.get("ci") is not None and -MARGIN <= row["ci"][0] and row["ci"][1] <= MARGIN:
        return f"no difference > {MARGIN:g} pp"
    return "inconclusive"


def family(pairs: list[tuple[str, str, str, dict[int, float] | None, dict[int, float] | None]]) -> list[dict]:
    """Every member's row from `(what, run name, reference name, run's {seed: score}, reference's)`;
    a side that was not run is None, and its row says so. Holm runs over the members with a p."""
    rows = []
    for what, run, ref, a, b in pairs:
        row = {"what": what, "run": run, "reference": ref, "diffs": None}
        if a is not None and b is not None:
            diffs = {s: a[s] - b[s] for s in sorted(set(a) & set(b))}
            if diffs:
                row.update(diffs=diffs, **paired_stats(list(diffs.values())))
        rows.append(row)
    for row, adjusted in zip(rows, holm([r.get("p") for r in rows])):
        row["holm"] = adjusted
        row["verdict"] = verdict(row) if row["diffs"] else "not run"
    return rows


def table_rows(rows: list[dict]) -> list[list[str]]:
    """The rows as text: what changes, run − reference, Δ mean ± sd, 95 % CI, p, Holm p, ahead, verdict."""
    def num(x, fmt):
        return "–" if x is None else format(x, fmt)

    out = []
    for r in rows:
        if not r["diffs"]:
            out.append([r["what"], f"`{r['run']}` − `{r['reference']}`", "–", "–", "–", "–", "–", r["verdict"]])
            continue
        ci = "–" if r["ci"] is None else f"[{r['ci'][0]:+.2f}, {r['ci'][1]:+.2f}]"
        sd = "" if r["sd"] is None else f" ± {r['sd']:.2f}"
        out.append([r["what"], f"`{r['run']}` − `{r['reference']}`", f"{r['mean']:+.2f}{sd}", ci, num(r["p"], ".3f"),
                    num(r["holm"], ".3f"), f"{r['ahead']} of {r['n']}", r["verdict"]])
    return out


def readme_table(rows: list[dict], delta: str = "Δ (pp)") -> str:
    """The family as the README shows it: every member with its difference, CI, Holm p and verdict."""
    from .groups import markdown_table

    text = [[r[0], r[2], r[3], r[5], r[6], r[7]] for r in table_rows(rows)]
    return markdown_table(["What changes", f"{delta}, mean ± sd", "95 % CI", "Holm p", "Ahead", "Verdict"], text)


HEADER = ["What changes", "Run − reference", "Δ (pp), mean ± sd", "95 % CI", "p", "Holm p", "Ahead", "Verdict"]
RULES = (f"Paired by seed: the mean ± sd of the per-seed differences (percentage points), the 95 % confidence "
         f"interval of the mean, the paired t-test's p, p adjusted over the family (Holm), seeds ahead. Verdict: "
         f"better/worse when the Holm p < {ALPHA:g}; no difference > {MARGIN:g} pp when the whole CI lies within "
         f"±{MARGIN:g}; inconclusive otherwise. Every declared comparison is listed, run or not.")

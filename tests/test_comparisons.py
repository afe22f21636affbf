"""The declared families of comparisons, recomputed from the committed results files with code of
their own (scipy directly, Holm by hand), against what the report, README and docs show."""
import json
import math

import pytest
from scipy import stats

from helpers import ROOT
from lwsupcrd.benchmark import family as standard_family
from lwsupcrd.comparisons import MARGIN, ORIGINAL, STANDARD, holm, paired_stats, verdict
from lwsupcrd.roles import Roles

ORIGINAL_EVIDENCE = ROOT / "results" / "evidence" / "comprehensive_results_resnet8_fashion-mnist.json"
STANDARD_EVIDENCE = ROOT / "results" / "standard-evidence" / \
    "standard_results_resnet20-resnet8_fashion-mnist_0a2ffc2bba.json"


def scores(results: dict, pick, key: str) -> dict[int, float]:
    """{seed: score} of the runs `pick(entry)` chooses, straight from the file."""
    return {e["config"]["seed"]: e["metrics"][key] for e in results["runs"].values()
            if pick(e) and key in e.get("metrics", {})}


def expected_rows(pairs: list[tuple[dict, dict]]) -> list[dict]:
    rows = []
    for a, b in pairs:
        seeds = sorted(set(a) & set(b))
        if not seeds:
            rows.append(None)
            continue
        d = [a[s] - b[s] for s in seeds]
        mean = sum(d) / len(d)
        row = {"mean": mean, "ahead": sum(x > 0 for x in d), "n": len(d), "p": None, "ci": None}
        if len(d) > 1:
            row["p"] = float(stats.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds]).pvalue)
            sem = stats.sem(d)
            row["ci"] = stats.t.interval(0.95, len(d) - 1, loc=mean, scale=sem)
        rows.append(row)
    ps = [(r["p"], i) for i, r in enumerate(rows) if r and r["p"] is not None]
    m = len(ps)
    for rank, (p, i) in enumerate(sorted(ps)):
        rows[i]["holm"] = max([min(1.0, (m - k) * q) for k, (q, _) in enumerate(sorted(ps)[:rank + 1])])
    for r in rows:
        if r is None:
            continue
        h = r.get("holm")
        if h is not None and h < 0.05:
            r["verdict"] = "better" if r["mean"] > 0 else "worse"
        elif r["ci"] is not None and -MARGIN <= r["ci"][0] and r["ci"][1] <= MARGIN:
            r["verdict"] = f"no difference > {MARGIN:g} pp"
        else:
            r["verdict"] = "inconclusive"
    return rows


def assert_same(ours: list[dict], expected: list[dict | None]):
    assert len(ours) == len(expected)
    for row, exp in zip(ours, expected):
        if exp is None:
            assert row["verdict"] == "not run", row["what"]
            continue
        assert math.isclose(row["mean"], exp["mean"], abs_tol=1e-9), row["what"]
        assert row["ahead"] == exp["ahead"] and row["n"] == exp["n"], row["what"]
        assert (row["p"] is None) == (exp["p"] is None) and (exp["p"] is None or math.isclose(row["p"], exp["p"],
                                                                                             rel_tol=1e-9)), row["what"]
        if exp["ci"] is not None:
            assert all(math.isclose(x, y, abs_tol=1e-9) for x, y in zip(row["ci"], exp["ci"])), row["what"]
            assert math.isclose(row["holm"], exp["holm"], rel_tol=1e-9), row["what"]
        assert row["verdict"] == exp["verdict"], row["what"]


# the committed original-protocol evidence's runs by role: base names read off the results file
ORIGINAL_ROLES = {
    "lwsupcrd": "student_alpha_1.0_beta_10.0_temp_0.07_resnet8_fashion-mnist",
    "unweighted": "student_supcrd_unweighted_resnet8_fashion-mnist",
    "onehot": "student_supcrd_onehot_resnet8_fashion-mnist",
    "supcon": "student_baseline_supcon_resnet8_fashion-mnist",
    "crd": "student_baseline_crd_resnet8_fashion-mnist",
    "undistilled": "student_undistilled_resnet8_fashion-mnist",
    "perpositive": "student_lwsupcrd_perpositive_resnet8_fashion-mnist",
    "logit": None, "crd_classaware": None,  # not in the preset: the original has neither
}


def test_every_declared_comparison_of_the_original_evidence_recomputed():
    results = json.loads(ORIGINAL_EVIDENCE.read_text())
    assert results["settings"]["accuracy"] == "online"
    key = "head_test_acc"  # the online classifier's accuracy: the original's measurement, the headline

    def of(base):
        return scores(results, lambda e: e.get("base") == base, key) if base else {}

    pairs = []
    for m in ORIGINAL:
        if m.run == "bank":
            bank = "student_lwsupcrd_bank4096_resnet8_fashion-mnist"
            pairs.append((of(bank), of(ORIGINAL_ROLES["lwsupcrd"])))  # the bank run's matched control
        else:
            pairs.append((of(ORIGINAL_ROLES[m.run]), of(ORIGINAL_ROLES[m.reference])))
    assert_same(Roles(results).family(), expected_rows(pairs))


def test_every_declared_comparison_of_the_standard_evidence_recomputed():
    results = json.loads(STANDARD_EVIDENCE.read_text())

    def of(recipe):
        return scores(results, lambda e: e["config"].get("recipe") == recipe, "test_acc")

    ours = standard_family(results)
    assert [r["what"] for r in ours] == [m.what for m in STANDARD]  # the whole family, in its order
    assert_same(ours, expected_rows([(of(m.run), of(m.reference)) for m in STANDARD]))


def test_the_readme_lists_every_member_of_both_families():
    readme = (ROOT / "README.md").read_text()
    for m in (*ORIGINAL, *STANDARD):
        if m.run != "bank":
            assert f"| {m.what} |" in readme, m.what


def test_holm_and_the_verdict_rules():
    assert holm([0.01, None, 0.04, 0.03]) == [0.03, None, 0.06, 0.06]
    assert holm([0.5, 0.001]) == [0.5, 0.002]
    assert verdict({"holm": 0.01, "mean": -1.0, "ci": (-2, -0.1)}) == "worse"
    assert verdict({"holm": 0.2, "mean": 0.1, "ci": (-0.4, 0.45)}) == "no difference > 0.5 pp"
    assert verdict({"holm": 0.2, "mean": 0.1, "ci": (-0.6, 0.45)}) == "inconclusive"
    assert verdict({"holm": None, "mean": 1.0, "ci": None}) == "inconclusive"  # one seed


@pytest.mark.parametrize("diffs", [[1.0, 1.0, 1.0], [0.0, 0.0], [0.3, -0.2, 0.5, 0.1, 0.0]])
def test_paired_stats_limits(diffs):
    s = paired_stats(diffs)
    assert s["n"] == len(diffs) and math.isclose(s["mean"], sum(diffs) / len(diffs))
    assert s["ci"][0] <= s["mean"] <= s["ci"][1]
    if len(set(diffs)) == 1:
        assert s["ci"] == (s["mean"], s["mean"]) and s["p"] == (0.0 if diffs[0] else 1.0)


def test_the_standard_family_names_only_rows_of_the_registry():
    from lwsupcrd.methods import STANDARD as ROWS

    from lwsupcrd.comparisons import STANDARD_MORE

    for family in (STANDARD, STANDARD_MORE):
        assert {name for m in family for name in (m.run, m.reference)} <= set(ROWS)

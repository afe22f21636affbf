"""The answer a study opens with: its comparative figures and findings, from the results file alone."""
import json
import statistics

import pytest

from helpers import ROOT
from lwsupcrd.groups import groups_of
from lwsupcrd.overview import overview

EVIDENCE = ROOT / "results" / "evidence" / "comprehensive_results_resnet8_fashion-mnist.json"


def finding_rows(markdown: str) -> dict[str, list[str]]:
    rows = [line.strip("| ").split(" | ") for line in markdown.splitlines() if line.startswith("| ")]
    return {r[0]: r[1:] for r in rows[1:]}


def test_the_original_evidence_answers_with_its_paired_comparisons(tmp_path):
    results = json.loads(EVIDENCE.read_text())
    text, figures = overview(results, tmp_path)
    assert [p.name for p in figures] == ["accuracy.png", "comparisons.png", "curves.png", "geometry.png"]
    assert all(p.stat().st_size > 10_000 for p in figures)
    groups = groups_of(results)
    key = "head_test_acc"  # the original's online classifier, the headline
    lw = groups["student_alpha_1.0_beta_10.0_temp_0.07_resnet8_fashion-mnist"].by_seed(key)
    control = groups["student_supcrd_unweighted_resnet8_fashion-mnist"].by_seed(key)
    diffs = [lw[s] - control[s] for s in sorted(lw)]
    row = finding_rows(text)["the logit weighting (vs unweighted SupCRD)"]
    assert row[0] == f"{sum(diffs) / len(diffs):+.2f} ± {statistics.stdev(diffs):.2f}"
    assert row[3] == f"{sum(d > 0 for d in diffs)} of {len(diffs)}"
    seeds = results["settings"]["seeds"]
    assert len(seeds) >= 5 and f"seeds {sorted(seeds)}" in text and "Preset `evidence`" in text
    assert text.count("*Preset") == 1


def standard_results(seeds=(0, 1, 2)):
    runs = {}
    for seed in seeds:
        for recipe, acc in (("vanilla", 80.0), ("kd", 82.0), ("lwsupcrd", 81.0 + seed / 10),
                            ("supcrd_unweighted", 81.0), ("supcrd_onehot", 80.5)):
            curve = {"test_acc": [acc - 10, acc - 2, acc], "train_acc": [50.0, 70.0, 90.0], "ce": [2.0, 1.0, 0.5]}
            runs[f"std_{recipe}_seed{seed}"] = {
                "stage": "distillation", "base": f"std_{recipe}", "curve": curve,
                "config": {"method": "standard", "recipe": recipe, "seed": seed},
                "metrics": {"test_acc": acc}, "environment": {"cpu_threads": 2},
                "analysis": {"features": {"class_alignment": 0.5 + seed / 100, "uniformity": -2.0}}}
        runs[f"std_teacher_seed{seed}"] = {"stage": "teacher", "base": "std_teacher", "config": {
            "method": "ce", "seed": 0}, "metrics": {"test_acc": 90.0}}
    settings = {"protocol": "standard", "preset": "evidence", "dataset": "fashion-mnist", "teacher_arch": "resnet20",
                "student_arch": "resnet8"}
    return {"settings": settings, "runs": runs}


def test_the_standard_protocol_draws_all_four_figures_and_names_each_finding(tmp_path):
    text, figures = overview(standard_results(), tmp_path)
    assert [p.name for p in figures] == ["accuracy.png", "comparisons.png", "curves.png", "geometry.png"]
    rows = finding_rows(text)
    assert rows["LW-SupCRD instead of KD"][0] == "-0.90 ± 0.10" and rows["LW-SupCRD instead of KD"][-1] == "worse"
    # +0.0, +0.1, +0.2: the whole 95 % CI [-0.15, +0.35] lies within ±0.5
    assert rows["the logit weighting (vs unweighted SupCRD)"][3:] == ["2 of 3", "no difference > 0.5 pp"]
    assert rows["distillation at all: LW-SupCRD instead of the vanilla student"][-1] == "better"
    assert rows["LW-SupCRD instead of DKD"] == ["–", "–", "–", "–", "not run"]  # declared, not run: still listed
    assert "Vanilla student: 80.00. Teacher: 90.00." in text
    assert "**curves**" in text and "**geometry**" in text


def test_one_seed_says_no_test_and_no_scores_say_so(tmp_path):
    text, _ = overview(standard_results(seeds=(0,)), tmp_path)
    assert finding_rows(text)["LW-SupCRD instead of KD"][1:] == ["–", "–", "0 of 1", "inconclusive"]
    empty = standard_results()
    for entry in empty["runs"].values():
        entry["metrics"] = {}
    text, figures = overview(empty, tmp_path / "none")
    assert figures == [] and "No student has a score yet" in text


@pytest.mark.parametrize("kind", ["original", "standard"])
def test_stage_tables_average_over_seeds_and_fold_the_runs(kind, tmp_path):
    from lwsupcrd.show import per_seed, stage_table

    results = json.loads(EVIDENCE.read_text()) if kind == "original" else standard_results()
    names = [n for n, e in results["runs"].items() if e["stage"] in ("baselines", "distillation")]
    if kind == "original":
        table = stage_table(results, names)
        seeds = len(results["settings"]["seeds"])
        assert f"(n={seeds})" in table and table.count("\n") == 1 + len({results["runs"][n]["base"] for n in names})
    folded = per_seed(results, names, tmp_path, ("test_acc",))
    assert folded.startswith("<details>") and f"{len(names)} runs" in folded
    if kind == "original":  # every run's own figures are linked, none is drawn
        assert folded.count("[t-SNE](") == len(names) and "![" not in folded

"""Analysis on constructed embeddings with known answers, the report, and the smoke run's figures."""
import json
import math
import re
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from helpers import ROOT, report_file, results_file
from lwsupcrd.analysis import geometry
from lwsupcrd.metrics import Embeddings
from lwsupcrd.readme import README_BEGIN, README_END, readme_section
from lwsupcrd.report import build_report
from lwsupcrd.protocol import PRESETS, build_runs


def test_geometry_of_collapsed_classes():
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [-1.0, 0.0]])
    labels = torch.tensor([0, 0, 1, 1])
    g = geometry(Embeddings("features", x, x, x, labels))
    assert g["class_alignment"] == 0 and g["view_alignment"] == 0
    assert g["intra_class_distance"] == 0 and g["inter_class_distance"] == pytest.approx(2)
    # pairs: 2 at distance^2 0, 4 at distance^2 4 -> log((2 + 4 e^-8) / 6)
    assert g["uniformity"] == pytest.approx(math.log((2 + 4 * math.exp(-8)) / 6))
    assert g["n"] == 4 and g["dim"] == 2


def test_geometry_view_alignment_of_rotated_views():
    gen = torch.Generator().manual_seed(0)
    x = F.normalize(torch.randn(50, 2, generator=gen), dim=1)
    angle = 0.3
    rot = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    g = geometry(Embeddings("features", x, x, x @ rot.T, torch.arange(50) % 5))
    assert g["view_alignment"] == pytest.approx(2 - 2 * math.cos(angle), rel=1e-5)


def test_smoke_run_has_every_figure_and_metric(smoke):
    out = smoke["out"]
    results = json.loads(results_file(out).read_text())
    for name in [r.name for r in build_runs(dict(PRESETS["smoke"], seed=0))]:
        entry = results["runs"][name]["analysis"]
        for space in ("features", "projection"):
            assert {"n", "dim", "class_alignment", "uniformity", "view_alignment", "intra_class_distance",
                    "inter_class_distance", "separation_ratio"} <= set(entry[space])
            assert entry[space]["n"] == 200
        for figure in ("tsne", "hypersphere", "alignment", "curves") + (
                ("weights",) if results["runs"][name]["config"]["method"] == "lwsupcrd" else ()):
            assert (out / entry["figures"][figure]).stat().st_size > 1000
        assert entry["figure_space"] == "projection"
        assert entry["projection_head_trained"] == (results["runs"][name]["config"]["method"] not in
                                                    ("ce", "undistilled"))
    for figure in ("sweeps_accuracy.png", "bank_ablation.png", "alignment_uniformity.png"):
        assert (out / "plots" / results_file(out).stem / figure).exists()  # the study's own figures
    assert (out / "plots" / "plotly.min.js").exists()
    report = report_file(out).read_text()
    for heading in ("## Floors", "## Main results", "## α sweep", "## β sweep", "## τ sweep", "## The declared comparisons",
                    "## Memory bank against matched controls", "## What the weights do"):
        assert heading in report
    assert "Align. proj. ↓" in report and "Align. backbone ↓" in report
    assert "Preset `smoke`" in report and "seeds [0]" in report


def test_report_rebuilds_from_json_alone(smoke, tmp_path):
    src = results_file(smoke["out"])
    copy = tmp_path / src.name
    copy.write_text(src.read_text())
    res = subprocess.run([sys.executable, "-m", "lwsupcrd.report", str(copy)], capture_output=True, text=True,
                         cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert copy.with_suffix(".md").read_text() == report_file(smoke["out"]).read_text()
    assert "## Main results" in res.stdout


def entry(stage, seed=0, acc=None, proj=None, feats=None, **config):
    return {"stage": stage, "config": {"epochs": 3, "seed": seed, **config},
            "metrics": {} if acc is None else {"probe_test_acc": acc},
            "analysis": {"projection": proj or {}, "features": feats or {}}}


def test_report_numbers_come_from_the_results():
    settings = {"dataset": "d", "student_arch": "s", "teacher_arch": "t", "batch_size": 8, "preset": "p",
                "sweep_centre": {"alpha": 1.0, "beta": 10.0, "temperature": 0.07}}
    lw = dict(method="lwsupcrd", alpha=1.0, beta=10.0, temperature=0.07)
    runs = {
        "teacher_t_d": entry("teacher", acc=90.0, proj={"class_alignment": 9.0, "uniformity": -9.0},
                             feats={"class_alignment": 0.3, "uniformity": -1.0}, method="ce", arch="t"),
        "teacher_t_d_with_projection": entry("projection", proj={"class_alignment": 0.7, "uniformity": -3.3},
                                             method="projection", arch="t"),
        "student_baseline_supcon_s_d": entry("baselines", acc=50.0, proj={"class_alignment": 0.5, "uniformity": -2.0},
                                             feats={"class_alignment": 0.25, "uniformity": -1.5}, method="supcon"),
        "student_alpha_1.0_beta_10.0_temp_0.07_s_d": dict(entry("lwsupcrd", acc=52.5, **lw), centre=True),
        "student_lwsupcrd_bank64_s_d": dict(entry("bank_ablation", acc=54.0, bank_negatives=64, **lw),
                                            control="student_alpha_1.0_beta_10.0_temp_0.07_s_d"),
    }
    report = build_report({"settings": settings, "runs": runs,
                           "floors": {"0": {"train_size": 10, "raw_pixels": 40.0, "random_student": 30.0}}})
    assert "| 52.50 | +2.50 | +12.50 |" in report  # against SupCon, then against the raw-pixel floor
    assert "| 50.00 | +0.00 | +10.00 | 0.5000 | -2.0000 | 0.2500 | -1.5000 |" in report  # projection, then backbone
    assert "| 90.00 | +40.00 | – | 0.7000 | -3.3000 | 0.3000 | -1.0000 |" in report  # the teacher's distillation head
    assert "| 54.00 | +1.50 | +4.00 |" in report  # against its matched control, then against SupCon
    assert "| 0 | 10 | 40.00 | 30.00 |" in report


def test_report_comparisons_pair_runs_by_seed_and_change_one_thing():
    settings = {"dataset": "d", "student_arch": "s", "teacher_arch": "t", "batch_size": 8, "preset": "p",
                "sweep_centre": {"alpha": 1.0, "beta": 10.0, "temperature": 0.07}}
    lw = dict(method="lwsupcrd", alpha=1.0, beta=10.0, temperature=0.07)
    runs = {}
    for seed, (sup, unw, weighted, logit, onehot) in enumerate([(50, 50, 52, 52, 53), (50, 51, 52, 50, 52),
                                                                (50, 52, 55, 57, 54)]):
        runs[f"student_baseline_supcon_s_d_seed{seed}"] = entry("baselines", seed, sup, method="supcon")
        runs[f"student_supcrd_onehot_s_d_seed{seed}"] = entry(
            "baselines", seed, onehot, **dict(lw, beta=10 / 1.5, logit_weighting=False, adaptive_beta=False))
        runs[f"student_supcrd_unweighted_s_d_seed{seed}"] = entry(
            "baselines", seed, unw, **dict(lw, beta=1.0, logit_weighting=False, adaptive_beta=False))
        runs[f"student_alpha_1.0_beta_10.0_temp_0.07_s_d_seed{seed}"] = dict(entry("lwsupcrd", seed, weighted, **lw),
                                                                               centre=True)
        runs[f"student_alpha_1.0_beta_10.0_temp_0.07_logit_s_d_seed{seed}"] = entry(
            "lwsupcrd", seed, logit, alpha_mode="logit", **lw)
        runs[f"student_baseline_supcon_s_d_seed{seed}"]["metrics"]["train_seconds"] = (10.0, 30.0, 20.0)[seed]
    report = build_report({"settings": settings, "runs": runs})
    # weighted - unweighted: +2, +1, +3 -> mean 2 ± 1; paired t = 2 / (1 / sqrt 3) with 2 df: p = 0.074;
    # 95 % CI 2 ± 4.303 / sqrt 3
    assert ("| the logit weighting (vs unweighted SupCRD) | `student_alpha_1.0_beta_10.0_temp_0.07_s_d` − "
            "`student_supcrd_unweighted_s_d` | +2.00 ± 1.00 | [-0.48, +4.48] | 0.074 |") in report
    assert "| +0.00 ± 2.00 | [-4.97, +4.97] | 1.000 |" in report  # alpha on the logit, vs weight
    assert "| +1.00 ± 1.00 | [-1.48, +3.48] | 0.225 |" in report  # unweighted vs SupCon
    # weighted - one-hot teacher: -1, 0, +1; one-hot - unweighted: +3, +1, +2
    assert ("| the teacher's probabilities at LW-SupCRD's strength (vs a one-hot teacher) | "
            "`student_alpha_1.0_beta_10.0_temp_0.07_s_d` − `student_supcrd_onehot_s_d` | +0.00 ± 1.00 | "
            "[-2.48, +2.48] | 1.000 |") in report
    assert "`student_supcrd_onehot_s_d` − `student_supcrd_unweighted_s_d` | +2.00 ± 1.00 |" in report
    assert "| SupCRD, LW-SupCRD's weights for a one-hot teacher (α=1, β=6.67, τ=0.07) |" in report
    # no CRD run: that comparison is listed as declared and not run, never invented
    assert "| LW-SupCRD instead of CRD | `student_alpha_1.0_beta_10.0_temp_0.07_s_d` − `crd` | – | – | – | – | – " \
           "| not run |" in report
    assert "| SupCon | 3 | 3 | 20 | 10–30 |" in report and "summed over the study: 1 min." in report


EVIDENCE = ROOT / "results" / "evidence" / "comprehensive_results_resnet8_fashion-mnist.json"


def between(text, begin, end):
    return begin + text.split(begin, 1)[1].split(end, 1)[0] + end


def test_docs_results_section_is_the_committed_evidence_regenerated():
    committed = between((ROOT / "docs" / "results.md").read_text(), README_BEGIN, README_END)
    regenerated = readme_section(json.loads(EVIDENCE.read_text()), EVIDENCE.relative_to(ROOT).as_posix())
    assert committed == regenerated, "docs/results.md is stale: rerun python -m lwsupcrd.readme <results.json>"
    assert "\n## " not in committed and "\n### Floors" in committed and "\n### The declared comparisons" in committed


def test_readme_answer_and_its_figure_are_the_committed_evidence_regenerated(tmp_path):
    """The README's answer is generated from the committed results; so is its figure, whose metadata
    names the SHA-256 of the results file it was drawn from."""
    from PIL import Image

    from lwsupcrd.files import file_sha256
    from lwsupcrd.readme import FIGURE, SUMMARY_BEGIN, SUMMARY_END, summary_figure, summary_section

    results = json.loads(EVIDENCE.read_text())
    committed = between((ROOT / "README.md").read_text(), SUMMARY_BEGIN, SUMMARY_END)
    assert committed == summary_section(results, EVIDENCE.relative_to(ROOT).as_posix(), FIGURE.as_posix())
    assert "| the logit weighting (vs unweighted SupCRD) |" in committed and f"]({FIGURE.as_posix()})" in committed
    assert Image.open(ROOT / FIGURE).info["Source"] == file_sha256(EVIDENCE), "rerun python -m lwsupcrd.readme"
    redrawn = summary_figure(results, tmp_path / "f.png", file_sha256(EVIDENCE))
    assert Image.open(redrawn).size == Image.open(ROOT / FIGURE).size


def test_the_readme_is_short_and_links_every_page_of_the_docs():
    readme = (ROOT / "README.md").read_text()
    # the generated blocks are the declared comparisons, listed whole; the prose around them stays short
    prose = re.sub(r"<!-- (\w+):begin.*?<!-- \1:end -->", "", readme, flags=re.S)
    assert len(prose.split()) <= 1000 and len(prose.split()) < len(readme.split())
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"](docs/{page.name})" in readme, f"README does not link docs/{page.name}"
    first_screen = "\n".join(readme.splitlines()[:45])
    assert "## The answer so far" in first_screen and "![" in first_screen


def test_report_rewrites_only_the_readme_section(tmp_path):
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"settings": {"dataset": "d", "student_arch": "s", "teacher_arch": "t",
                                                "batch_size": 8, "preset": "p"},
                                   "runs": {"student_baseline_supcon_s_d": entry("baselines", acc=50.0,
                                                                                 method="supcon")}}))
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nbefore\n\n{README_BEGIN}\nstale\n{README_END}\n\nafter\n")
    cmd = [sys.executable, "-m", "lwsupcrd.readme", str(results), "--results-section", str(readme)]
    assert subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT).returncode == 0
    text = readme.read_text()
    assert text.startswith("# Title\n\nbefore\n\n" + README_BEGIN) and text.endswith(README_END + "\n\nafter\n")
    assert "stale" not in text and "| SupCon | `student_baseline_supcon_s_d` | 50.00 |" in text
    readme.write_text("no markers\n")
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and "markers" in res.stderr
    assert readme.read_text() == "no markers\n"


def test_report_cli_bad_input(tmp_path):
    res = subprocess.run([sys.executable, "-m", "lwsupcrd.report", str(tmp_path / "missing.json")],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 2 and res.stderr.startswith("error: cannot build the report")


def test_probe_listing_pairs_each_run_with_its_own_seeds_supcon(capsys):
    from types import SimpleNamespace

    from lwsupcrd.show import show_probe

    runs = {}
    for seed, (sup, lw) in enumerate([(50.0, 51.0), (60.0, 58.0)]):
        runs[f"student_baseline_supcon_s_d_seed{seed}"] = entry("baselines", seed, sup, method="supcon")
        runs[f"student_lw_s_d_seed{seed}"] = entry("lwsupcrd", seed, lw, method="lwsupcrd")
    for e in runs.values():
        e["base"] = e["config"]["method"]
        e["metrics"].update(probe_train_acc=0.0, probe_gap=0.0)
    study = SimpleNamespace(standard=False, results={"settings": {}, "runs": runs}, order=lambda: list(runs),
                            results_path="r.json")
    show_probe(study)
    lines = {line.split()[0]: line.split()[-1] for line in capsys.readouterr().out.splitlines()[1:-1]}
    assert lines["student_lw_s_d_seed0"] == "+1.00" and lines["student_lw_s_d_seed1"] == "-2.00"


def test_training_curves_draw_train_accuracy_only_where_the_loss_measures_it(tmp_path, monkeypatch):
    from lwsupcrd import plots

    drawn = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: drawn.append([ax.get_title() for ax in fig.axes]))
    rows = [{"epoch": e, "loss": 1.0 / e, "lr": 0.1, "epoch_seconds": 1.0} for e in (1, 2)]
    plots.curves_figure({"run": "supcon", "epochs": rows}, tmp_path / "a.png")
    plots.curves_figure({"run": "ce", "epochs": [dict(r, train_acc=50.0) for r in rows]}, tmp_path / "b.png")
    assert drawn == [["loss", "learning rate"], ["loss", "train accuracy (%)", "learning rate"]]


def test_weights_figure_of_a_constant_weight(tmp_path):
    """The one-hot teacher's control pushes with the constant 10/1.5: its mean is its percentiles,
    and the figure (error bars from the mean to each percentile) draws it."""
    from lwsupcrd import plots
    from lwsupcrd.steps import weight_summary

    const = torch.full((5000,), 10 / 1.5)
    summary = weight_summary({k: [const] * 3 for k in ("q", "beta_i", "w_push", "margin")})
    assert summary["w.w_push_mean"] == summary["w.w_push_p05"] == summary["w.w_push_p95"]
    rows = [dict(summary, epoch=e) for e in (1, 2)]
    rows[1]["w.margin_mean"] = rows[1]["w.margin_p05"] - 1e-6  # a mean a rounding error outside the band
    plots.weights_figure({"run": "onehot", "epochs": rows}, tmp_path / "w.png")
    assert (tmp_path / "w.png").stat().st_size > 0


def test_report_conditions_name_the_teachers_and_the_students_budgets_apart():
    from lwsupcrd.report import conditions
    from lwsupcrd.roles import Roles

    budget = {"teacher": dict(train_size=60000, epochs=5, batch_size=128, optimizer="sgd", lr=0.1),
              "baselines": dict(train_size=10000, epochs=6, batch_size=64, optimizer="adam", lr=0.005)}
    runs = {f"{stage}_seed0": {"stage": stage, "config": {"seed": 0, "method": "x", **b}, "metrics": {}}
            for stage, b in budget.items()}
    r = Roles({"settings": {"dataset": "d", "student_arch": "s", "teacher_arch": "t", "batch_size": 128},
                "runs": runs})
    assert ("train images per seed: teacher 60000, students 10000; epochs: teacher 5, students 6; batch: teacher "
            "128, students 64; optimiser: teacher sgd, students adam, lr teacher 0.1, students 0.005; seeds [0]"
            ) in conditions(r, list(r.groups.values()))


STANDARD = ROOT / "results" / "standard-evidence" / "standard_results_resnet20-resnet8_fashion-mnist_0a2ffc2bba.json"
STANDARD_MORE = ROOT / "results" / "standard-evidence" / "standard_results_resnet20-resnet8_fashion-mnist_978fd8a38d.json"


def test_the_standard_evidence_holds_the_familys_methods_on_five_seeds_with_a_teacher_ahead():
    from lwsupcrd.benchmark import precision_of, row_of
    from lwsupcrd.comparisons import STANDARD as FAMILY, compared
    from lwsupcrd.groups import groups_of
    from lwsupcrd.pairs import dkd_beta

    results = json.loads(STANDARD.read_text())
    by_method = {row_of(g.config): g for g in groups_of(results).values()}
    assert set(by_method) == {"teacher", *compared(FAMILY)}  # every method the declared family compares
    assert all(len(g.by_seed("test_acc")) >= 5 for m, g in by_method.items() if m != "teacher")
    assert by_method["dkd"].config["dkd_beta"] == dkd_beta("resnet20-resnet8")[0] == 2.0  # the stated beta
    assert precision_of(results) == "float32"
    teacher = by_method["teacher"].stats("test_acc")[0]
    assert all(teacher - acc >= 3 for acc in by_method["vanilla"].by_seed("test_acc").values())


def test_readme_and_benchmark_doc_are_the_committed_standard_evidence_regenerated(tmp_path):
    from PIL import Image

    from lwsupcrd.files import file_sha256
    from lwsupcrd.readme import (BENCHMARK_DOC, BLOCK_BEGIN, BLOCK_END, README, STANDARD_BEGIN, STANDARD_END,
                                 STANDARD_FIGURE, standard_block, standard_figure, standard_summary)

    results, source = json.loads(STANDARD.read_text()), STANDARD.relative_to(ROOT).as_posix()
    readme = between((ROOT / README).read_text(), STANDARD_BEGIN, STANDARD_END)
    assert readme == standard_summary(results, source), "README is stale: rerun python -m lwsupcrd.readme " + source
    assert "| LW-SupCRD instead of KD |" in readme and "wall clock: bench/RESULTS.md" in readme
    assert f"]({STANDARD_FIGURE.as_posix()})" in readme  # the forest plot, drawn from the same file
    assert Image.open(ROOT / STANDARD_FIGURE).info["Source"] == file_sha256(STANDARD), "rerun python -m lwsupcrd.readme"
    assert Image.open(standard_figure(results, tmp_path / "f.png", file_sha256(STANDARD))).size == \
        Image.open(ROOT / STANDARD_FIGURE).size
    block = between((ROOT / BENCHMARK_DOC).read_text(), BLOCK_BEGIN, BLOCK_END)
    assert block == standard_block(results, source)
    header = next(line for line in block.splitlines() if line.startswith("| Method |"))
    assert "not comparable with the published numbers" in block and "published" not in header


def test_the_newer_methods_block_is_their_committed_results_regenerated():
    """The Fashion-MNIST block of AB, FT, FSP, ReviewKD and the anchor form: their own family, every
    member run on the five seeds of the evidence, and their initialisations in the same file."""
    from lwsupcrd.comparisons import STANDARD_MORE as MORE
    from lwsupcrd.readme import BENCHMARK_DOC, MORE_BEGIN, MORE_END, more_block
    from lwsupcrd.benchmark import family

    results, source = json.loads(STANDARD_MORE.read_text()), STANDARD_MORE.relative_to(ROOT).as_posix()
    assert between((ROOT / BENCHMARK_DOC).read_text(), MORE_BEGIN, MORE_END) == more_block(results, source), \
        "rerun python -m lwsupcrd.readme " + source
    rows = family(results, members=MORE)
    assert len(rows) == len(MORE) and all(len(r["diffs"]) == 5 for r in rows)
    assert sum(e["stage"] == "initialisation" for e in results["runs"].values()) == 3 * 5

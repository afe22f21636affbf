"""Analysis on constructed embeddings with known answers, the report, and the smoke run's figures."""
import json
import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from helpers import ROOT
from lwsupcrd.analysis import Embeddings, geometry
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
    results = json.loads((out / "json_results" / "comprehensive_results_resnet8_cifar100.json").read_text())
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
    for figure in ("sweeps_accuracy.png", "bank_ablation.png", "alignment_uniformity.png", "plotly.min.js"):
        assert (out / "plots" / figure).exists()
    report = (out / "json_results" / "REPORT.md").read_text()
    for heading in ("## Floors", "## Main results", "## α sweep", "α reading `logit`", "## β sweep", "## τ sweep",
                    "## Memory bank against matched controls", "## What the weights do"):
        assert heading in report
    assert "Align. proj. ↓" in report and "Align. backbone ↓" in report
    assert "Preset `smoke`" in report and "seeds [0]" in report


def test_report_rebuilds_from_json_alone(smoke, tmp_path):
    src = smoke["out"] / "json_results" / "comprehensive_results_resnet8_cifar100.json"
    copy = tmp_path / src.name
    copy.write_text(src.read_text())
    res = subprocess.run([sys.executable, "-m", "lwsupcrd.report", str(copy)], capture_output=True, text=True,
                         cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "REPORT.md").read_text() == (smoke["out"] / "json_results" / "REPORT.md").read_text()
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
    assert "| 52.50 | +2.50 |" in report
    assert "| 50.00 | +0.00 | 0.5000 | -2.0000 | 0.2500 | -1.5000 |" in report  # projection first, then backbone
    assert "| 90.00 | +40.00 | 0.7000 | -3.3000 | 0.3000 | -1.0000 |" in report  # the teacher's distillation head
    assert "| 54.00 | +1.50 | +4.00 |" in report  # against its matched control, then against SupCon
    assert "| 0 | 10 | 40.00 | 30.00 |" in report


def test_report_cli_bad_input(tmp_path):
    res = subprocess.run([sys.executable, "-m", "lwsupcrd.report", str(tmp_path / "missing.json")],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 2 and res.stderr.startswith("error: cannot build the report")

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
from lwsupcrd.study import PRESETS, build_runs


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
        for figure in ("tsne", "hypersphere", "alignment", "curves"):
            assert (out / entry["figures"][figure]).stat().st_size > 1000
    for figure in ("sweeps_accuracy.png", "bank_ablation.png", "alignment_uniformity.png", "plotly.min.js"):
        assert (out / "plots" / figure).exists()
    report = (out / "json_results" / "REPORT.md").read_text()
    for heading in ("## Main results", "## α sweep", "## β sweep", "## τ sweep", "## Memory-bank ablation"):
        assert heading in report
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


def test_report_numbers_come_from_the_results():
    results = {"settings": {"dataset": "d", "student_arch": "s", "teacher_arch": "t", "batch_size": 8,
                            "preset": "p"},
               "runs": {"student_baseline_supcon_s_d": {"stage": "baselines", "config": {"method": "supcon", "epochs": 3,
                                                                                           "seed": 0},
                                                        "metrics": {"probe_test_acc": 50.0},
                                                        "analysis": {"features": {"class_alignment": 0.5,
                                                                                  "uniformity": -2.0}}},
                        "student_alpha_1.0_beta_10.0_temp_0.07_s_d": {
                            "stage": "lwsupcrd", "config": {"method": "lwsupcrd", "alpha": 1.0, "beta": 10.0,
                                                            "temperature": 0.07, "epochs": 3, "seed": 0},
                            "metrics": {"probe_test_acc": 52.5}, "analysis": {"features": {}}}}}
    report = build_report(results)
    assert "| 52.50 | +2.50 |" in report and "| 50.00 | +0.00 | 0.5000 | -2.0000 |" in report


def test_report_cli_bad_input(tmp_path):
    res = subprocess.run([sys.executable, "-m", "lwsupcrd.report", str(tmp_path / "missing.json")],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 2 and res.stderr.startswith("error: cannot build the report")

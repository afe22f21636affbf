"""The study end to end on data generated in CIFAR's own on-disk format (smoke preset)."""
import json

import pytest
import torch

from helpers import cached_runs, checkpoint_file, log_file, report_file, results_file, run_script, trained_runs
from lwsupcrd.checkpoint import load_checkpoint
from lwsupcrd.models import ModelWrapper
from lwsupcrd.protocol import PRESETS, build_runs

SMOKE_RUNS = [r.name for r in build_runs(dict(PRESETS["smoke"], seed=0))]
BANK_RUNS = [n for n in SMOKE_RUNS if "nobank" in n or "bank64" in n]


def smoke_args(smoke, *extra):
    return ("--preset", "smoke", "--data-dir", smoke["data"], "--out-dir", smoke["out"], *extra)


def test_smoke_writes_every_checkpoint_log_and_results(smoke):
    out = smoke["out"]
    assert len(SMOKE_RUNS) == 21 and len(BANK_RUNS) == 5
    assert sorted(trained_runs(smoke["first"].stdout)) == sorted(SMOKE_RUNS)
    for name in SMOKE_RUNS:
        ckpt = load_checkpoint(checkpoint_file(out, name))
        assert ckpt["config"]["epochs"] == 1 and ckpt["environment"]["torch"] == torch.__version__
        assert not list((out / "pth_models").glob(f"{name}-*.resume.pth"))
        log = json.loads(log_file(out, name).read_text())
        row = log["epochs"][0]
        assert {"loss", "lr", "epoch_seconds", "images_per_second"} <= set(row)
        assert log["config"] == ckpt["config"]
    results = json.loads(results_file(out).read_text())
    assert set(results["runs"]) == set(SMOKE_RUNS)
    for name, entry in results["runs"].items():
        if "with_projection" not in name:
            assert 0 <= entry["metrics"]["probe_test_acc"] <= 100
    assert "head_test_acc" in results["runs"]["student_undistilled_resnet8_cifar100"]["metrics"]
    lw = load_checkpoint(checkpoint_file(out, "student_alpha_1.0_beta_10.0_temp_0.07_resnet8_cifar100"))
    assert lw["config"]["alpha"] == 1.0 and lw["config"]["beta"] == 10.0 and lw["config"]["method"] == "lwsupcrd"
    assert "teacher_resnet8_cifar100_with_projection" in lw["config"]["requires"]


def test_checkpoint_loads_into_model_wrapper(smoke):
    ckpt = torch.load(checkpoint_file(smoke["out"], "student_baseline_supcon_resnet8_cifar100"),
                      weights_only=True)
    model = ModelWrapper.from_config(ckpt["config"])  # arch, classes and projection head, as trained
    model.load_state_dict(ckpt["state_dict"])
    features, projections, logits = model.eval()(torch.randn(2, 3, 32, 32))
    assert features.shape == (2, 64) and projections.shape == (2, 64) and logits.shape == (2, 100)


def test_rerun_trains_nothing(smoke):
    again = run_script(*smoke_args(smoke))
    assert again.returncode == 0, again.stderr[-3000:]
    assert trained_runs(again.stdout) == []
    assert sorted(cached_runs(again.stdout)) == sorted(SMOKE_RUNS)


def test_force_retrain_bank_ablation_retrains_exactly_the_bank_runs(smoke):
    res = run_script(*smoke_args(smoke, "--force-retrain-bank-ablation"))
    assert res.returncode == 0, res.stderr[-3000:]
    assert sorted(trained_runs(res.stdout)) == sorted(BANK_RUNS)


def test_changed_config_says_which_keys_differ(smoke):
    res = run_script(*smoke_args(smoke, "--only", "student_baseline_supcon_resnet8_cifar100", "--batch-size", "16"))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "batch_size: 32 -> 16" in res.stdout
    assert trained_runs(res.stdout) == ["student_baseline_supcon_resnet8_cifar100"]


@pytest.mark.slow
def test_force_retrain_retrains_everything(smoke, tmp_path):
    res = run_script("--preset", "smoke", "--data-dir", smoke["data"], "--out-dir", smoke["out"], "--force-retrain")
    assert res.returncode == 0, res.stderr[-3000:]
    assert sorted(trained_runs(res.stdout)) == sorted(SMOKE_RUNS)


def test_only_brings_in_prerequisites_and_list_prints_order(smoke, tmp_path):
    listed = run_script("--preset", "smoke", "--list")
    assert listed.returncode == 0
    names = [line.split()[1] for line in listed.stdout.splitlines() if line.startswith(("teacher ", "projection",
                                                                                         "baselines", "lwsupcrd",
                                                                                         "bank_ablation"))]
    assert names == SMOKE_RUNS
    res = run_script("--preset", "smoke", "--data-dir", smoke["data"], "--out-dir", tmp_path,
                     "--only", "student_baseline_crd_resnet8_cifar100")
    assert res.returncode == 0, res.stderr[-3000:]
    assert trained_runs(res.stdout) == ["teacher_resnet8_cifar100", "teacher_resnet8_cifar100_with_projection",
                                        "student_baseline_crd_resnet8_cifar100"]


@pytest.mark.parametrize("args,message", [
    (("--preset", "fast"), "invalid choice: 'fast'"),
    (("--student-arch", "resnet19"), "invalid choice: 'resnet19'"),
    (("--dataset", "mnist"), "invalid choice: 'mnist'"),
    (("--batch-size", "1"), "batch_size=1 is not allowed: batch_size takes an integer >= 2"),
    (("--set", "student_batch_size=1"), "student_batch_size=1 is not allowed"),
    (("--set", "student_batch_size=5000"), "student batch size 5000 exceeds the training set (1000 images)"),
    (("--only", "student_nonsense"), "--only 'student_nonsense' names no stage"),
    (("--epochs", "0"), "student_epochs=0 is not allowed: student_epochs takes an integer >= 1"),
    # values that are type-checked but were not range-checked, and inputs to refuse rather than run
    (("--set", "proj_head=foo"), "proj_head='foo' is not allowed: proj_head takes one of original, linear, mlp"),
    (("--set", "student_schedule=bogus"), "student_schedule='bogus' is not allowed: student_schedule takes one of"),
    (("--set", "alpha_modes=bogus"), "alpha_modes=['bogus'] is not allowed: alpha_modes takes one or both of"),
    (("--set", "bank_negatives=-5"), "bank_negatives=-5 is not allowed: bank_negatives takes an integer >= 1"),
    (("--set", "bank_negatives=0"), "bank_negatives=0 is not allowed"),
    (("--seed", str(2**70)), f"seed {2**70} is out of range"),
    (("--set", "alpha_sweep="), "alpha_sweep takes a comma-separated list of values (none: no sweep)"),
    (("--set", "alpha_sweep=1,,2"), "alpha_sweep takes a comma-separated list"),
    (("--only", ","), "--only ',' names nothing"),
])
def test_bad_input_is_one_line_before_any_work(args, message, tmp_path):
    res = run_script("--preset", "smoke", "--data-dir", tmp_path / "nodata", "--out-dir", tmp_path / "out", *args)
    assert res.returncode == 2
    assert message in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "out" / "pth_models").exists() or not any((tmp_path / "out" / "pth_models").iterdir())


def test_missing_data_names_the_files(tmp_path):
    res = run_script("--preset", "smoke", "--dataset", "fashion-mnist", "--data-dir", tmp_path / "nodata",
                     "--out-dir", tmp_path / "out", env={"LWSUPCRD_NO_DEBIAN_DATA": "1"})
    assert res.returncode == 2
    assert "train-images-idx3-ubyte" in res.stderr and str(tmp_path / "nodata") in res.stderr
    assert "Traceback" not in res.stderr


def test_unwritable_out_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    res = run_script("--preset", "smoke", "--out-dir", blocker / "out")
    assert res.returncode == 2 and "not writable" in res.stderr


@pytest.mark.slow
def test_seeds_run_the_whole_protocol_with_mean_std_and_paired_significance(smoke, tmp_path):
    """Every run of the smoke protocol, twice: distilled runs find their seed's teacher, each seed
    draws its own training subset, and the report gives mean ± std with paired tests."""
    res = run_script("--preset", "smoke", "--data-dir", smoke["data"], "--out-dir", tmp_path, "--seeds", "0", "1")
    assert res.returncode == 0, res.stderr[-3000:]
    names = [f"{b}_seed{s}" for s in (0, 1) for b in SMOKE_RUNS]
    assert sorted(trained_runs(res.stdout)) == sorted(names)
    results = json.loads(results_file(tmp_path).read_text())
    assert set(results["runs"]) == set(names)
    crd = results["runs"]["student_baseline_crd_resnet8_cifar100_seed1"]
    assert crd["teacher"] == "teacher_resnet8_cifar100_with_projection_seed1"
    assert list(crd["config"]["requires"]) == ["teacher_resnet8_cifar100_with_projection_seed1"]
    bank = results["runs"]["student_lwsupcrd_bank64_resnet8_cifar100_seed1"]
    assert bank["control"] == "student_lwsupcrd_nobank_resnet8_cifar100_seed1"
    agg = results["aggregates"]["student_undistilled_resnet8_cifar100"]["probe_test_acc"]
    accs = [results["runs"][f"student_undistilled_resnet8_cifar100_seed{s}"]["metrics"]["probe_test_acc"]
            for s in (0, 1)]
    assert agg["n"] == 2 and agg["mean"] == pytest.approx(sum(accs) / 2)
    assert agg["std"] == pytest.approx(abs(accs[0] - accs[1]) / 2 ** 0.5)
    assert set(results["floors"]) == {"0", "1"}
    report = report_file(tmp_path).read_text()
    assert "(n=2)" in report and "(p=" in report and "## Floors" in report


def test_each_seed_draws_its_own_training_subset(smoke, tmp_path):
    from lwsupcrd.options import StudyConfig
    from lwsupcrd.study import Study

    study = Study(StudyConfig(preset="smoke", data_dir=str(smoke["data"]), out_dir=str(tmp_path), device="cpu",
                              seeds=[0, 1]))
    study.load_data()
    a, b = study.split_of(0), study.split_of(1)
    assert len(a) == len(b) == 500  # the generated split is smaller than the subset: all of it
    study.settings["train_subset"] = 300
    study.splits.clear()
    a, b = study.split_of(0), study.split_of(1)
    assert len(a) == len(b) == 300 and not torch.equal(a.indices, b.indices)
    assert torch.equal(torch.bincount(a.labels), torch.bincount(b.labels))  # both class-balanced


def test_set_overrides_a_preset_value_type_checked():
    from lwsupcrd.options import StudyConfig, parse_args, parse_override

    cfg = parse_args(["--preset", "quick", "--set", "bank_negatives=1024", "--set", "alpha_sweep=1,2"], StudyConfig())
    assert cfg.settings()["bank_negatives"] == 1024 and cfg.settings()["alpha_sweep"] == [1.0, 2.0]
    assert parse_override("paper", "train_subset=none") == ("train_subset", None)
    assert parse_override("paper", "bank_ablation=false") == ("bank_ablation", False)
    with pytest.raises(ValueError, match=r"--set bank_negatives='many': bank_negatives takes an integer"):
        parse_override("paper", "bank_negatives=many")
    with pytest.raises(ValueError, match=r"--set 'bank_size=3': expected KEY=VALUE with KEY one of dataset, "):
        parse_override("paper", "bank_size=3")


def test_paper_preset_seed_and_evidence_seeds():
    from lwsupcrd.options import StudyConfig

    assert StudyConfig().settings()["seed"] == 42 and StudyConfig().seed_list() is None
    assert StudyConfig(preset="evidence").seed_list() == [0, 1, 2, 3, 4]
    assert StudyConfig(preset="evidence", seed=5).seed_list() is None  # an explicit seed: one chain
    assert StudyConfig(preset="quick", seeds=[3, 4]).settings()["seeds"] == [3, 4]


def test_protocol_roles():
    quick = {r.base: r for r in build_runs(dict(PRESETS["quick"], seed=0))}
    bank = quick["student_lwsupcrd_bank4096_resnet8_cifar100"]
    assert bank.control == "student_lwsupcrd_nobank_resnet8_cifar100"  # same schedule, no bank
    assert quick[bank.control].cfg == {k: v for k, v in bank.cfg.items()
                                       if k not in ("bank_negatives", "bank_momentum", "bank_init", "bank_form")}
    init = quick["student_lwsupcrd_bank4096_teacherinit_resnet8_cifar100"]
    assert init.control == bank.base and init.cfg == dict(bank.cfg, bank_init="teacher")
    unweighted = quick["student_supcrd_unweighted_resnet8_cifar100"].cfg
    assert (unweighted["alpha"], unweighted["beta"], unweighted["adaptive_beta"], unweighted["logit_weighting"]) == \
        (1.0, 1.0, False, False)
    onehot = quick["student_supcrd_onehot_resnet8_cifar100"].cfg  # LW-SupCRD's weights at q = 1: pull 1, push 10/1.5
    assert onehot == dict(unweighted, beta=10 / 1.5) and onehot["alpha"] == 1.0
    with_logit = {r.base: r for r in build_runs(dict(PRESETS["quick"], seed=0, alpha_modes=("weight", "logit")))}
    modes = {r.cfg["alpha"]: [] for r in with_logit.values() if r.stage == "lwsupcrd"}
    for r in with_logit.values():
        if r.stage == "lwsupcrd" and r.cfg["lw_form"] == "anchor":
            modes[r.cfg["alpha"]].append(r.cfg["alpha_mode"])
    assert modes == {1.0: ["weight"], 5.0: ["weight"]}  # the logit reading is of the per-positive form only
    assert [r.cfg["alpha"] for r in with_logit.values() if r.cfg.get("alpha_mode") == "logit"] == [1.0, 5.0]
    evidence = {r.base: r for r in build_runs(dict(PRESETS["evidence"], seed=0))}
    centre = [r for r in evidence.values() if r.centre and r.cfg["alpha_mode"] == "weight"]
    assert evidence["student_lwsupcrd_bank4096_resnet8_fashion-mnist"].control == centre[0].base
    assert all(r.cfg["proj_head"] == "mlp" for r in evidence.values())


def test_paired_significance_rule():
    from lwsupcrd.groups import Group, paired_delta

    def group(accs):
        return Group("x", [{"stage": "baselines", "config": {"seed": s, "method": "supcon"},
                            "metrics": {"probe_test_acc": a}} for s, a in enumerate(accs)])

    ref = group([50.0, 52.0, 51.0, 53.0])
    assert paired_delta(group([51.0, 53.1, 51.9, 54.0]), ref).startswith("+1.00*")  # diffs 1.0, 1.1, 0.9, 1.0: a consistent gain
    noisy = paired_delta(group([53.0, 50.0, 54.0, 50.5]), ref)
    assert "*" not in noisy  # same mean gain order, but the seeds disagree


def test_two_processes_share_one_study(smoke, tmp_path):
    """Sharding: two processes work through one smoke study at once; every run is trained once."""
    import subprocess
    import sys

    from helpers import ROOT

    env = {**__import__("os").environ, "TQDM_DISABLE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    wanted = ["teacher_resnet8_cifar100", "teacher_resnet8_cifar100_with_projection"] + BANK_RUNS
    cmd = [sys.executable, str(ROOT / "desupcon.py"), "--preset", "smoke", "--data-dir", str(smoke["data"]),
           "--out-dir", str(tmp_path), "--only", ",".join(BANK_RUNS)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    trained = [trained_runs(out) for out, _ in outs]
    assert sorted(trained[0] + trained[1]) == sorted(wanted)  # each run trained exactly once
    assert trained[0] and trained[1]  # and both did some of the work
    results = json.loads(results_file(tmp_path).read_text())
    assert set(results["runs"]) == set(wanted)
    for name in wanted:
        load_checkpoint(checkpoint_file(tmp_path, name))


def test_force_retrain_names_stages_and_run_patterns(tmp_path):
    from lwsupcrd.options import StudyConfig, parse_args, validate
    from lwsupcrd.study import Study

    args = ["--preset", "smoke", "--out-dir", str(tmp_path)]
    cfg = parse_args(args + ["--force-retrain", "bank_ablation,student_alpha_*_temp_0.05_*"], StudyConfig())
    validate(cfg)
    study = Study(cfg)
    forced = sorted(n for n, r in study.runs.items() if study.forced(r))
    tau = [n for n in SMOKE_RUNS if "_temp_0.05_" in n]
    assert forced == sorted(BANK_RUNS + tau) and len(tau) == 1
    assert parse_args(args + ["--force-retrain"], StudyConfig()).force_retrain is True
    assert parse_args(args + ["--force-retrain", "--no-force-retrain"], StudyConfig()).force_retrain is False
    with pytest.raises(ValueError, match="--force-retrain 'student_nope' names no stage"):
        validate(parse_args(args + ["--force-retrain", "student_nope"], StudyConfig()))


def test_stage_description_uses_the_configured_values():
    from lwsupcrd.show import describe

    runs = [r for r in build_runs(dict(PRESETS["quick"], seed=0, alpha_modes=("weight", "logit"))) if r.stage == "lwsupcrd"]
    text = describe(runs)
    assert "resnet8, 4 epochs, adam lr 0.002" in text and "(5, 10, 0.07, logit)" in text


def test_every_study_prints_its_time_estimate_before_anything_trains(smoke):
    """On any device, not only for the paper preset on a CPU; the figure is labelled as computed."""
    out = smoke["first"].stdout
    assert "time estimate on cpu: about" in out and "computed from one timed training step, not measured" in out
    assert out.index("time estimate on") < out.index("== teacher_")

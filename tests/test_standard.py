"""The standard protocol (CRD's CIFAR-100 benchmark): its runs, its recipe, a published teacher,
the Table-1 layout, and a smoke run of every method end to end."""
import json

import pytest
import torch

from helpers import cached_runs, checkpoint_file, report_file, results_file, run_script, trained_runs
from lwsupcrd.checkpoint import load_checkpoint
from lwsupcrd.benchmark import ROWS, published, row_of, standard_table
from lwsupcrd.data import write_cifar_like
from lwsupcrd.machine import forward_flops
from lwsupcrd.models import create_model
from lwsupcrd.options import StudyConfig, validate
from lwsupcrd.methods import STANDARD
from lwsupcrd.protocol import STANDARD_PRESETS, build_standard_runs
from lwsupcrd.published import reference_state
from lwsupcrd.optimizers import build_optimizer, build_scheduler


def settings(**kw):
    return StudyConfig(protocol="standard", preset="smoke", **kw).settings()


def test_every_method_is_a_run_with_the_references_weights():
    runs = build_standard_runs(settings(pair="resnet32x4-resnet8x4"))
    teacher, students = runs[0], [r for r in runs[1:] if r.stage == "distillation"]  # initialisations: below
    assert teacher.stage == "teacher" and teacher.cfg["arch"] == "resnet32x4" and teacher.cfg["method"] == "ce"
    assert [row_of(r.cfg) for r in students] == list(STANDARD)
    for r in students:
        c = r.cfg
        assert (c["arch"], c["batch_size"], c["optimizer"], c["lr"], c["weight_decay"], c["schedule"]) == \
               ("resnet8x4", 32, "sgd", 0.05, 5e-4, "step")
        assert c["proj_dim"] == 128 and c["proj_head"] == "linear" and c["kd_temperature"] == 4.0
        assert (r.teacher is None) == (row_of(c) == "vanilla")
        assert ("bank_negatives" in c) == (c["distill"] in ("infonce", "lwsupcrd"))
        assert ("nce_negatives" in c) == (c["distill"] == "nce")
    weights = {row_of(r.cfg): (r.cfg["gamma"], r.cfg["kd_weight"], r.cfg["distill_weight"]) for r in students}
    assert weights["kd"] == (0.1, 0.9, 0.0) and weights["crd"] == (1.0, 0.0, 0.8) and weights["crd_kd"] == (1.0, 1.0, 0.8)
    assert weights["fitnet"] == (1.0, 0.0, 100.0) and weights["at"] == (1.0, 0.0, 1000.0)
    dkd = next(r.cfg for r in students if row_of(r.cfg) == "dkd")
    assert (dkd["dkd_alpha"], dkd["dkd_beta"], dkd["kd_temperature"], dkd["dkd_warmup"]) == (1.0, 8.0, 4.0, 1)
    other = build_standard_runs(settings(pair="resnet56-resnet20"))
    assert next(r.cfg for r in other if row_of(r.cfg) == "dkd")["dkd_beta"] == 2.0  # its CIFAR weight
    paper = STANDARD_PRESETS["paper"]
    assert (paper["student_epochs"], paper["batch_size"], paper["lr"], tuple(paper["lr_milestones"])) == \
           (240, 64, 0.05, (150, 180, 210))


def test_step_schedule_decays_at_the_milestones():
    p = torch.nn.Parameter(torch.zeros(1))
    cfg = dict(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4, schedule="step", lr_milestones=[2, 4],
               lr_decay=0.1, epochs=5)
    opt = build_optimizer(cfg, [p])
    sched = build_scheduler(cfg, opt)
    lrs = []
    for _ in range(5):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.05, 0.05, 0.005, 0.005, 0.0005])


def test_flops_order_the_networks():
    small, large = (forward_flops(a, 100, 3, 32) for a in ("resnet8x4", "resnet32x4"))
    assert 0 < small < large
    assert forward_flops("resnet32x4", 100, 3, 32) == pytest.approx(1.08e9 * 2, rel=0.1)  # ~1.08 G multiply-adds


def test_bad_standard_options_are_named_before_any_work(tmp_path):
    def error(**kw):
        with pytest.raises(ValueError) as err:
            validate(StudyConfig(protocol="standard", preset="smoke", out_dir=str(tmp_path), **kw))
        assert "\n" not in str(err.value)
        return str(err.value)

    assert "--pair 'resnet32x4'" in error(pair="resnet32x4")
    assert "no such file" in error(teacher_checkpoint=str(tmp_path / "missing.pth"))
    wrong = tmp_path / "wrong.pth"
    torch.save({"model": reference_state("resnet8", create_model("resnet8", 100))}, wrong)
    assert "does not fit resnet14" in error(teacher_checkpoint=str(wrong))
    with pytest.raises(ValueError, match="does not fit resnet8"):  # the original protocol reads teacher files too
        validate(StudyConfig(preset="smoke", out_dir=str(tmp_path), teacher_checkpoint=str(wrong), pair="resnet8-resnet8",
                             dataset="cifar10"))
    with pytest.raises(ValueError, match="unknown preset 'quick' for the standard protocol"):
        validate(StudyConfig(protocol="standard", preset="quick", out_dir=str(tmp_path)))


def results_of(pair, accs):
    """A results file of the standard protocol with the given per-seed accuracies per method."""
    runs = {}
    for method, values in accs.items():
        for seed, acc in enumerate(values):
            cfg = dict(STANDARD[method].config(pair, 240) if method != "teacher" else {},
                       method="ce" if method == "teacher" else "standard", seed=seed)
            runs[f"{method}_seed{seed}"] = {"stage": "teacher" if method == "teacher" else "distillation",
                                           "base": method, "config": cfg, "metrics": {"test_acc": acc}}
    t, s = pair.split("-")
    return {"settings": dict(STANDARD_PRESETS["paper"], teacher_arch=t, student_arch=s, preset="paper"),
            "runs": runs, "environment": {"torch": "x"}}


def test_table_sets_ours_beside_the_published_numbers():
    results = results_of("resnet56-resnet20", {"teacher": [72.0, 72.5], "vanilla": [69.0, 69.5],
                                               "lwsupcrd_kd": [71.0, 72.0]})
    table = standard_table([results, results_of("wrn_40_2-wrn_16_2", {"kd": [74.0]})])
    lines = table.splitlines()
    assert lines[0] == "| Method | resnet56 → resnet20: ours | published | wrn_40_2 → wrn_16_2: ours | published |"
    rows = {line.split(" | ")[0].lstrip("| "): line for line in lines[2:2 + len(ROWS)]}
    assert "72.25 ± 0.35 (n=2) | 72.34 |" in rows["Teacher"]
    assert "71.50 ± 0.71 (n=2) | – |" in rows["LW-SupCRD+KD"]  # no published number: a dash, never ours
    assert f"| 74.00 | {published('kd', 'wrn_40_2-wrn_16_2'):.2f} |" in rows["KD"]
    assert "| – | 71.16 |" in rows["CRD"] and "| – | 71.97 |" in rows["DKD"]  # published, and no run of ours
    assert "| – | 76.23 |" in rows["DKD"] and "| – | 73.58 |" in rows["FitNet"] and "| – | 74.08 |" in rows["AT"]
    assert "RepDistiller README, commit b84f547" in table and "mdistiller README, commit a08d46f" in table
    assert "- CRD, InfoNCE form (ours): one-direction InfoNCE" in table and "full training split" in table


@pytest.mark.slow
def test_smoke_run_of_every_method_then_a_published_teacher(tmp_path):
    data = write_cifar_like(tmp_path / "data", train_per_class=5, test_per_class=2)
    out = tmp_path / "out"
    args = ("--protocol", "standard", "--preset", "smoke", "--data-dir", data, "--out-dir", out)
    first = run_script(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "TFLOP, about" in first.stdout  # the time estimate, before anything trains
    assert first.stdout.index("TFLOP") < first.stdout.index("== std_teacher")
    assert len(trained_runs(first.stdout)) == 1 + len(STANDARD) + len(TWO_STAGE)  # AB, FT, FSP initialise first
    results = json.loads(results_file(out, "standard").read_text())
    for name, entry in results["runs"].items():
        if entry["stage"] == "initialisation":  # read through the distillation that starts from it
            assert "test_acc" not in entry["metrics"] and "analysis" not in entry
            continue
        assert 0 <= entry["metrics"]["test_acc"] <= 100, name
        geometry = entry["analysis"]["features"]  # the backbone's geometry and the curves; no t-SNE
        assert geometry["n"] == 200 and "tsne" not in entry["analysis"] and set(entry["analysis"]["figures"]) == {"curves"}
        assert entry["stage"] == "teacher" or len(entry["curve"]["test_acc"]) == entry["config"]["epochs"]
    logs = {p.stem: json.loads(p.read_text()) for p in (out / "json_results" / "training_logs").glob("*.json")}
    crd_kd = next(v for k, v in logs.items() if k.startswith("std_crd_kd"))
    assert {"ce", "kd", "distill"} <= set(crd_kd["epochs"][-1]) and crd_kd["epochs"][-1]["lr"] == pytest.approx(0.005)
    assert all("test_acc" in row for row in crd_kd["epochs"])  # scored after every epoch: the best one is kept too
    assert crd_kd["metrics"]["best_test_acc"] == max(row["test_acc"] for row in crd_kd["epochs"])
    report = report_file(out, "standard").read_text()
    assert "resnet14 → resnet8: ours" in report and "LW-SupCRD+KD" in report and "| DKD |" in report
    crd = load_checkpoint(checkpoint_file(out, "std_crd_resnet8_from_resnet14_cifar100"))
    memories = crd["method_state"]  # CRD's memories and Z are saved with the student
    slots = (crd["config"]["train_size"], 128)  # one per training image
    assert memories["student"].shape == memories["teacher"].shape == slots and (memories["z"] > 0).all()
    fitnet = load_checkpoint(checkpoint_file(out, "std_fitnet_resnet8_from_resnet14_cifar100"))
    assert "conv.weight" in fitnet["method_state"]  # FitNet's regressor too
    ft_init = load_checkpoint(checkpoint_file(out, "std_ft_init_resnet8_from_resnet14_cifar100"))
    ft = load_checkpoint(checkpoint_file(out, "std_ft_resnet8_from_resnet14_cifar100"))
    assert ft["config"]["requires"]["std_ft_init_resnet8_from_resnet14_cifar100"] == ft_init["weights_sha256"]
    paraphraser = {k for k in ft["method_state"] if k.startswith("paraphraser.")}
    assert paraphraser == set(ft_init["method_state"]) and {k for k in ft["method_state"] if k.startswith("translator.")}
    assert all(torch.equal(ft["method_state"][k], ft_init["method_state"][k]) for k in paraphraser)  # trained, then frozen

    again = run_script(*args)
    assert again.returncode == 0 and trained_runs(again.stdout) == []
    assert len(cached_runs(again.stdout)) == 1 + len(STANDARD) + len(TWO_STAGE)

    teacher = tmp_path / "ckpt_epoch_240.pth"  # as RepDistiller's train_teacher.py saves it
    torch.save({"epoch": 240, "model": reference_state("resnet14", create_model("resnet14", 100)),
                "accuracy": torch.tensor(1.0), "optimizer": {"state": {}, "param_groups": []}}, teacher)
    published = run_script(*args, "--teacher-checkpoint", teacher, "--only", "std_kd_resnet8_from_resnet14_cifar100")
    assert published.returncode == 0, published.stderr[-3000:]
    assert f"teacher read from {teacher}: test top-1" in published.stdout
    assert trained_runs(published.stdout) == ["std_teacher_resnet14_cifar100_published",
                                              "std_kd_resnet8_from_resnet14_cifar100"]


@pytest.mark.slow
def test_smoke_run_of_every_method_on_a_cross_architecture_pair(tmp_path):
    """resnet8 -> ShuffleV1 (as RepDistiller's resnet32x4 -> ShuffleV1, small): every method the pair
    defines trains and is scored, FSP is named as not defined, a rerun reads every run from the cache,
    and the table has a row for each. (Each method's bit-exact resume on this pair: test_methods.py.)"""
    data = write_cifar_like(tmp_path / "data", train_per_class=2, test_per_class=1)
    out = tmp_path / "out"
    # an untrained teacher on random images: at ShuffleV1's lr 0.01, DKD's term diverges; the run steps gently
    args = ("--protocol", "standard", "--preset", "smoke", "--pair", "resnet8-ShuffleV1", "--set", "lr=0.001",
            "--set", "student_epochs=1", "--data-dir", data, "--out-dir", out)
    listed = run_script(*args, "--list")
    assert "not run        fsp: FSP needs equal channels at every stage" in listed.stdout
    first = run_script(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    methods = [n for n in STANDARD if n != "fsp"]
    assert len(trained_runs(first.stdout)) == 1 + len(methods) + len(TWO_STAGE) - 1
    results = json.loads(results_file(out, "standard").read_text())
    scored = {e["config"]["recipe"] for e in results["runs"].values()
              if e["stage"] == "distillation" and 0 <= e["metrics"]["test_acc"] <= 100}
    assert scored == set(methods)
    report = report_file(out, "standard").read_text()
    assert "resnet8 → ShuffleV1: ours" in report
    assert all(f"| {STANDARD[n].label} | " in report for n in methods)
    again = run_script(*args)
    assert again.returncode == 0 and trained_runs(again.stdout) == []


def test_docs_show_the_table_layout_with_the_published_numbers():
    from helpers import ROOT
    from lwsupcrd.benchmark import published_table
    from lwsupcrd.pairs import CROSS_ARCHITECTURE, SAME_ARCHITECTURE

    doc = (ROOT / "docs" / "standard-benchmark.md").read_text()
    assert published_table(SAME_ARCHITECTURE) in doc and published_table(CROSS_ARCHITECTURE) in doc


def test_the_evidence_preset_shares_one_teacher_and_draws_each_seeds_students_subset():
    from lwsupcrd.data import Split, balanced_subset
    from lwsupcrd.protocol import STANDARD_PRESETS, build_study_runs

    cfg = StudyConfig(protocol="standard", preset="evidence")
    runs = build_study_runs(cfg.settings(), cfg.seed_list())
    teachers = [r for r in runs if r.stage == "teacher"]
    students = [r for r in runs if r.stage == "distillation"]
    assert len(teachers) == 1 and teachers[0].cfg["train_subset"] is None  # the whole training split, once
    from lwsupcrd.comparisons import STANDARD as FAMILY, compared

    # the methods the declared family compares, each on the verdict's five seeds, in the table's order
    family = compared(FAMILY)
    assert {row_of(r.cfg) for r in students} == set(family) and len(students) == 5 * len(family)
    assert [row_of(r.cfg) for r in students if r.cfg["seed"] == 0] == [m for m in STANDARD if m in family]
    assert {r.cfg["seed"] for r in students} == {0, 1, 2, 3, 4}
    every = build_study_runs(StudyConfig(protocol="standard", preset="evidence", overrides=("methods=all",)).settings(),
                             cfg.seed_list())
    assert {row_of(r.cfg) for r in every if r.stage == "distillation"} == set(STANDARD)  # --set methods=all
    assert all(r.requires == (teachers[0].name,) for r in students if r.teacher is not None)
    assert {r.cfg["train_subset"] for r in students} == {STANDARD_PRESETS["evidence"]["train_subset"]}
    assert all(r.cfg["score_every"] == 5 for r in students)  # every 5th epoch and the last: the curves, the best
    full = Split(torch.zeros(6000, 1, 2, 2, dtype=torch.uint8), torch.arange(6000) % 10, torch.arange(6000), [])
    subsets = [balanced_subset(full, 2000, seed).indices for seed in (0, 1)]
    assert not torch.equal(*subsets) and torch.bincount(full.labels[subsets[0]]).tolist() == [200] * 10


def test_comparisons_are_paired_by_seed_and_other_data_shows_no_published_column():
    results = results_of("resnet56-resnet20", {"kd": [70.0, 71.0, 72.0], "lwsupcrd": [71.0, 71.5, 74.0],
                                               "dkd": [72.0, 72.0, 72.0]})
    from lwsupcrd.benchmark import comparisons

    rows = {line.split(" | ")[0].lstrip("| "): line for line in comparisons(results).splitlines()[2:]}
    assert "| `lwsupcrd` − `kd` | +1.17 ± 0.76 | +1.00, +0.50, +2.00 | [-0.73, +3.06] |" in rows["LW-SupCRD instead of KD"]
    assert "| 3 of 3 |" in rows["LW-SupCRD instead of KD"] and "| 1 of 3 |" in rows["LW-SupCRD instead of DKD"]
    results["settings"]["dataset"] = "fashion-mnist"
    header = standard_table([results]).splitlines()[0]
    assert header == "| Method | resnet56 → resnet20 (fashion-mnist): ours |"  # CIFAR-100's numbers are not set beside it


# DKD's beta in mdistiller's configs/cifar100/dkd/*.yaml (commit e8c5bb3; a config that sets none takes the
# default, 8: res32x4_res8x4, res32x4_shuv1, res32x4_shuv2, res50_mv2, wrn40_2_shuv1)
MDISTILLER_DKD_BETA = {"resnet32x4-resnet8x4": 8.0, "wrn_40_2-wrn_16_2": 6.0, "wrn_40_2-wrn_40_1": 6.0,
                       "resnet56-resnet20": 2.0, "resnet110-resnet32": 2.0, "vgg13-vgg8": 6.0, "vgg13-MobileNetV2": 6.0,
                       "ResNet50-MobileNetV2": 8.0, "resnet32x4-ShuffleV1": 8.0, "resnet32x4-ShuffleV2": 8.0,
                       "wrn_40_2-ShuffleV1": 8.0}
# RepDistiller's 13 pairs (README, commit b84f547: Table 1 then Table 2) and each student's learning rate as
# its train_student.py sets it (lines 93-94: MobileNetV2, ShuffleV1 and ShuffleV2 at 0.01; the rest 0.05)
REPDISTILLER_PAIRS = {"wrn_40_2-wrn_16_2": 0.05, "wrn_40_2-wrn_40_1": 0.05, "resnet56-resnet20": 0.05,
                      "resnet110-resnet20": 0.05, "resnet110-resnet32": 0.05, "resnet32x4-resnet8x4": 0.05,
                      "vgg13-vgg8": 0.05, "vgg13-MobileNetV2": 0.01, "ResNet50-MobileNetV2": 0.01, "ResNet50-vgg8": 0.05,
                      "resnet32x4-ShuffleV1": 0.01, "resnet32x4-ShuffleV2": 0.01, "wrn_40_2-ShuffleV1": 0.01}


def test_every_repdistiller_pair_runs_with_its_students_learning_rate():
    from lwsupcrd.pairs import PAIRS
    from lwsupcrd.protocol import STANDARD_PRESETS, build_standard_runs
    from lwsupcrd.runs import listing

    assert list(PAIRS) == list(REPDISTILLER_PAIRS)
    for pair, lr in REPDISTILLER_PAIRS.items():
        teacher, student = pair.split("-")
        settings = dict(STANDARD_PRESETS["paper"], teacher_arch=teacher, student_arch=student, seed=0)
        runs = build_standard_runs(settings)
        assert {r.cfg["lr"] for r in runs if r.stage == "distillation"} == {lr}, pair
        lines = listing(runs)  # what `--list --pair <pair>` prints, a line per run with its settings
        assert len(lines) == len(runs) and all(f"arch={student}" in line for line in lines[1:]), pair
        assert runs[0].cfg["lr"] == 0.05 and runs[0].cfg["arch"] == teacher
    settings = dict(STANDARD_PRESETS["paper"], teacher_arch="vgg13", student_arch="MobileNetV2", seed=0, lr=0.02)
    assert {r.cfg["lr"] for r in build_standard_runs(settings)} == {0.02}  # a lr the user set is kept


def test_dkd_runs_with_each_pairs_beta_and_says_where_it_comes_from():
    from lwsupcrd.pairs import dkd_beta

    for pair, beta in MDISTILLER_DKD_BETA.items():
        assert STANDARD["dkd"].config(pair, 240)["dkd_beta"] == beta and "mdistiller's config" in dkd_beta(pair)[1]
    assert STANDARD["dkd"].config("resnet20-resnet8", 30)["dkd_beta"] == 2.0  # thin ResNets, stated
    assert STANDARD["dkd"].config("wrn_16_2-wrn_16_1", 30)["dkd_beta"] == 6.0
    assert dkd_beta("resnet50-resnet18")[1].startswith("no mdistiller config")


@pytest.mark.parametrize("every, scored", [(1, [1, 2, 3, 4, 5, 6, 7]), (3, [3, 6, 7]), (0, [7])])
def test_the_test_split_is_scored_every_kth_epoch_and_the_last(every, scored):
    from lwsupcrd.protocol import scored_epoch

    assert [e for e in range(1, 8) if scored_epoch({"epochs": 7, "score_every": every}, e)] == scored


def test_fit_keeps_the_scores_of_the_scored_epochs_only(tmp_path):
    """A run scored every 2nd epoch is asked after each epoch; its rows carry test_acc at the 2nd and the last."""
    from lwsupcrd.data import DATASETS, Split
    from lwsupcrd.models import ModelWrapper
    from lwsupcrd.protocol import scored_epoch
    from lwsupcrd.train import fit

    cfg = dict(arch="resnet8", num_classes=10, in_channels=1, epochs=3, batch_size=16, seed=0, method="ce",
               optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4, schedule="cosine", score_every=2)
    gen = torch.Generator().manual_seed(0)
    train = Split(torch.randint(0, 256, (48, 1, 28, 28), generator=gen, dtype=torch.uint8), torch.arange(48) % 10,
                  torch.arange(48), [str(i) for i in range(10)])
    asked = []

    def score(epoch):
        asked.append(epoch)
        return {"test_acc": float(epoch)} if scored_epoch(cfg, epoch) else None

    torch.manual_seed(0)
    rows = fit("r", cfg, ModelWrapper.from_config(cfg), train, DATASETS["fashion-mnist"], torch.device("cpu"),
               progress=False, score_epoch=score)
    assert asked == [1, 2, 3] and [r.get("test_acc") for r in rows] == [None, 2.0, 3.0]


def test_list_shows_each_pairs_runs_with_the_settings_that_differ():
    from helpers import run_script

    listed = run_script("--protocol", "standard", "--list", "--pair", "vgg13-MobileNetV2")
    assert listed.returncode == 0, listed.stderr[-2000:]
    lines = [line for line in listed.stdout.splitlines() if line.startswith(("teacher ", "initialisation ",
                                                                             "distillation "))]
    assert len(lines) == 1 + len(STANDARD) - 1 + 2  # FSP is not defined here; AB and FT initialise first
    assert sum(line.startswith("initialisation ") for line in lines) == 2
    assert "not run        fsp: FSP needs equal channels at every stage" in listed.stdout
    assert "std_teacher_vgg13_cifar100" in lines[0] and "lr=0.05" in lines[0] and "arch=vgg13" in lines[0]
    assert all("lr=0.01" in line and "arch=MobileNetV2" in line for line in lines[1:])
    assert "dkd_beta=6.0" in next(line for line in lines if "std_dkd_" in line)  # mdistiller's vgg13_mv2.yaml


# RepDistiller (b84f547): scripts/run_cifar_distill.sh gives b (-b 1 abound, -b 200 factor, -b 50 fsp; -a 0),
# train_student.py its --init_epochs 30 (of 240), helper/pretrain.py the initialisation's lr (0.01 for FT
# with these students, else the student's), and its README FSP only where the channels agree (N/A for
# wrn_40_2-wrn_40_1, no row in Table 2)
TWO_STAGE = {"ab": 1.0, "ft": 200.0, "fsp": 50.0}
FT_INIT_LR = {"wrn_16_2": 0.01, "wrn_40_1": 0.01, "resnet20": 0.01, "resnet32": 0.01, "resnet8x4": 0.01, "vgg8": 0.05,
              "MobileNetV2": 0.01, "ShuffleV1": 0.01, "ShuffleV2": 0.01}
FSP_PAIRS = {"wrn_40_2-wrn_16_2", "resnet56-resnet20", "resnet110-resnet20", "resnet110-resnet32", "resnet32x4-resnet8x4",
             "vgg13-vgg8"}


def test_two_stage_methods_initialise_as_repdistiller_does_on_every_pair():
    from lwsupcrd.pairs import PAIRS
    from lwsupcrd.protocol import STANDARD_PRESETS, build_standard_runs, left_out

    for pair in PAIRS:
        teacher, student = pair.split("-")
        settings = dict(STANDARD_PRESETS["paper"], teacher_arch=teacher, student_arch=student, seed=0, protocol="standard")
        runs = {r.name: r for r in build_standard_runs(settings)}
        assert ("fsp" not in left_out(settings)) == (pair in FSP_PAIRS), pair
        for name, b in TWO_STAGE.items():
            if name == "fsp" and pair not in FSP_PAIRS:
                assert not any(r.cfg["recipe"] == "fsp" for r in runs.values() if r.stage != "teacher")
                continue
            init = runs[f"std_{name}_init_{student}_from_{teacher}_cifar100"]
            distil = runs[f"std_{name}_{student}_from_{teacher}_cifar100"]
            assert distil.init == init.name and set(distil.requires) == {runs[init.name].requires[0], init.name}
            assert (distil.cfg["distill_weight"], distil.cfg["kd_weight"], distil.cfg["gamma"]) == (b, 0.0, 1.0)
            assert (init.cfg["method"], init.cfg["epochs"], init.cfg["schedule"]) == ("initialisation", 30, "constant")
            assert "score_every" not in init.cfg and distil.cfg["epochs"] == 240
            expected = FT_INIT_LR[student] if name == "ft" else distil.cfg["lr"]
            assert init.cfg["lr"] == expected, (pair, name)


# dvlab-research/ReviewKD (cede6ea), CIFAR-100/model/reviewkd.py `build_review_kd`: per student (and
# teacher) the ABFs' in_channels, out_channels, shapes and out_shapes (out_shapes None: the shapes);
# CIFAR-100/script/reviewKD.sh and mdistiller's reviewkd.yaml (a08d46f): the weights
REVIEW_LAYOUT = {
    "resnet32x4-resnet8x4": ([64, 128, 256, 256], [64, 128, 256, 256], [1, 8, 16, 32], [1, 8, 16, 32], 5.0),
    "resnet56-resnet20": ([16, 32, 64, 64], [16, 32, 64, 64], [1, 8, 16, 32], [1, 8, 16, 32], 0.6),
    "resnet110-resnet32": ([16, 32, 64, 64], [16, 32, 64, 64], [1, 8, 16, 32], [1, 8, 16, 32], 1.0),
    "wrn_40_2-wrn_16_2": ([32, 64, 128, 128], [32, 64, 128, 128], [1, 8, 16, 32], [1, 8, 16, 32], 5.0),
    "wrn_40_2-wrn_40_1": ([16, 32, 64, 64], [32, 64, 128, 128], [1, 8, 16, 32], [1, 8, 16, 32], 5.0),
    "vgg13-vgg8": ([128, 256, 512, 512, 512], [128, 256, 512, 512, 512], [1, 4, 4, 8, 16], [1, 4, 4, 8, 16], 5.0),
    "ResNet50-vgg8": ([128, 256, 512, 512, 512], [256, 512, 1024, 2048, 2048], [1, 4, 4, 8, 16], [1, 4, 8, 16, 32], 5.0),
    "vgg13-MobileNetV2": ([12, 16, 48, 160, 1280], [128, 256, 512, 512, 512], [1, 2, 4, 8, 16], [1, 4, 4, 8, 16], 5.0),
    "ResNet50-MobileNetV2": ([12, 16, 48, 160, 1280], [256, 512, 1024, 2048, 2048], [1, 2, 4, 8, 16], [1, 4, 8, 16, 32],
                             5.0),
    "resnet32x4-ShuffleV1": ([240, 480, 960, 960], [64, 128, 256, 256], [1, 4, 8, 16], [1, 8, 16, 32], 5.0),
    "wrn_40_2-ShuffleV1": ([240, 480, 960, 960], [32, 64, 128, 128], [1, 4, 8, 16], [1, 8, 16, 32], 5.0),
    "resnet32x4-ShuffleV2": ([116, 232, 464, 1024], [64, 128, 256, 256], [1, 4, 8, 16], [1, 8, 16, 32], 8.0),
}


@pytest.mark.parametrize("pair", list(REVIEW_LAYOUT))
def test_reviewkd_modules_and_weight_per_pair_are_the_references(pair):
    from lwsupcrd.connectors import review_fusion
    from lwsupcrd.models import ModelWrapper
    from lwsupcrd.data import Split

    in_channels, out_channels, shapes, out_shapes, weight = REVIEW_LAYOUT[pair]
    teacher, student = (ModelWrapper(a, 100, proj_head="linear") for a in pair.split("-"))
    split = Split(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), torch.zeros(2, dtype=torch.long), torch.arange(2), [])
    fusion = review_fusion(student, teacher, split)
    abfs = list(fusion.abfs)[::-1]  # shallow first, as the lists above
    assert [a.conv1[0].in_channels for a in abfs] == in_channels
    assert [a.conv2[0].out_channels for a in abfs] == out_channels
    assert (fusion.shapes, fusion.out_shapes) == (shapes, out_shapes)
    assert {a.conv1[0].out_channels for a in abfs} == {min(512, in_channels[-1])}
    runs = build_standard_runs(settings(pair=pair))
    assert next(r.cfg for r in runs if row_of(r.cfg) == "reviewkd")["distill_weight"] == weight

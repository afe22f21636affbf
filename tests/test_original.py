"""The original work's losses against its own code: a fixture recorded once by
`scripts/record_original_fixture.py` from the notebook of reducereX/ATML_Proj (6f2838b) and the
later mdistiller port's bank and loss (reducereX/mdistiller 826e52a)."""
from pathlib import Path

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from lwsupcrd.losses import lw_supcrd_loss
from lwsupcrd.original_losses import cosine_prototype_loss, instance_crd_loss, lw_supcrd_anchor_loss
from lwsupcrd.memory_bank import MomentumMemoryBank

FIXTURE = torch.load(Path(__file__).parent / "fixtures" / "original_lwsupcrd.pt", weights_only=True)
BATCH = FIXTURE["batch"]


def loss_and_grads(fn):
    z = BATCH["z"].clone().requires_grad_(True)
    t = BATCH["t"].clone().requires_grad_(True)
    loss = fn(z, t)
    loss.backward()
    return loss.detach(), z.grad, t.grad


def assert_matches(ours, recorded, rtol=1e-10, atol=1e-12):
    loss, grad_z, grad_t = ours
    torch.testing.assert_close(loss, recorded["loss"], rtol=rtol, atol=atol)
    torch.testing.assert_close(grad_z, recorded["grad_z"], rtol=rtol, atol=atol)
    torch.testing.assert_close(grad_t, recorded["grad_t"], rtol=rtol, atol=atol)


def probs():
    return torch.softmax(BATCH["teacher_logits"], dim=1)


@pytest.mark.parametrize("key", ["alpha1", "alpha2"])
def test_anchor_form_matches_the_notebook_with_the_own_key_among_the_positives(key):
    rec = FIXTURE["lw"][key]
    ours = loss_and_grads(lambda z, t: lw_supcrd_anchor_loss(
        z, t, BATCH["labels"], probs(), rec["alpha"], rec["beta"], rec["temperature"], adaptive_beta=False,
        own_key=True))
    assert_matches(ours, rec)


def test_anchor_form_matches_the_port_without_the_own_key():
    rec = FIXTURE["port"]["nobank"]
    ours = loss_and_grads(lambda z, t: lw_supcrd_anchor_loss(
        z, t, BATCH["labels"], probs(), rec["alpha"], rec["beta"], rec["temperature"], adaptive_beta=True,
        own_key=False))
    assert_matches(ours, rec)


def test_the_two_diagonal_forms_differ():
    with_own = lw_supcrd_anchor_loss(BATCH["z"], BATCH["t"], BATCH["labels"], probs(), own_key=True)
    without = lw_supcrd_anchor_loss(BATCH["z"], BATCH["t"], BATCH["labels"], probs(), own_key=False)
    assert abs(float(with_own - without)) > 0.05


def port_bank() -> MomentumMemoryBank:
    rec = FIXTURE["port"]["bank"]
    before = rec["before"]
    bank = MomentumMemoryBank(len(before["memory_labels"]), before["memory_features"].shape[1],
                              before["memory_labels"], momentum=rec["momentum"], num_classes=FIXTURE["classes"])
    bank = bank.double()
    bank.keys.copy_(before["memory_features"])
    bank.logits.copy_(before["memory_logits"])
    return bank


def test_port_bank_update_matches_the_port():
    """Both views' keys and logits written to the image's slot, as the port writes them: the second
    view's write is the one that stays (the port indexes one slot twice)."""
    rec, b = FIXTURE["port"]["bank"], len(FIXTURE["port"]["bank"]["slots"])
    bank = port_bank()
    bank.update_last_view(rec["slots"], BATCH["t"], BATCH["teacher_logits"])
    torch.testing.assert_close(bank.keys, rec["after"]["memory_features"], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(bank.logits, rec["after"]["memory_logits"], rtol=1e-12, atol=1e-14)
    assert torch.equal(bank.labels[rec["slots"]], BATCH["labels"][:b])


def test_port_bank_loss_matches_the_port():
    """The bank's negatives weighted by the probabilities stored with each key at the anchor's class."""
    rec = FIXTURE["port"]["bank"]
    after = rec["after"]
    sampled = rec["sampled"]
    bank_probs = torch.softmax(after["memory_logits"][sampled], dim=1)
    ours = loss_and_grads(lambda z, t: lw_supcrd_anchor_loss(
        z, t, BATCH["labels"], probs(), rec["alpha"], rec["beta"], rec["temperature"], adaptive_beta=True,
        own_key=False, bank_keys=after["memory_features"][sampled], bank_labels=after["memory_labels"][sampled],
        bank_probs=bank_probs))
    assert_matches(ours, rec)


def test_instance_crd_matches_the_notebooks_baseline_crd():
    rec = FIXTURE["crd"]
    assert_matches(loss_and_grads(lambda z, t: instance_crd_loss(z, t, rec["temperature"])), rec)


def test_anchor_form_equals_the_per_positive_form_with_one_positive_each():
    """With one positive per anchor (distinct classes, own key included) the two forms agree, up to
    the original's eps."""
    g = torch.Generator().manual_seed(0)
    z = F.normalize(torch.randn(6, 8, generator=g, dtype=torch.float64), dim=1)
    t = F.normalize(torch.randn(6, 8, generator=g, dtype=torch.float64), dim=1)
    labels = torch.arange(6)
    p = torch.softmax(torch.randn(6, 6, generator=g, dtype=torch.float64), dim=1)
    a = lw_supcrd_anchor_loss(z, t, labels, p, 1.0, 10.0, 0.07, eps=0.0)
    b = lw_supcrd_loss(z, t, labels, p, 1.0, 10.0, 0.07)
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9)


def head_from_seed(seed: int):
    """The notebook builds the head, then the prototypes, right after seeding: the same draws here."""
    torch.manual_seed(seed)
    head = nn.Sequential(nn.Linear(2048, 512), nn.ReLU(), nn.Linear(512, 128), nn.ReLU(), nn.Linear(128, 64))
    prototypes = nn.Linear(64, 100, bias=False)
    return head, prototypes


def test_cosine_prototype_step_matches_the_notebook():
    """One step of the notebook's head pre-training: its teacher in train mode (BatchNorm on the
    batch's statistics, running statistics drift), cross-entropy on cosine prototypes over tau."""
    rec = FIXTURE["cosine"]
    bn = nn.BatchNorm1d(2048)
    bn.weight.data.copy_(rec["bn_weight"])
    bn.bias.data.copy_(rec["bn_bias"])
    bn.train()
    with torch.no_grad():
        features = bn(rec["features"])
    torch.testing.assert_close(bn.running_mean, rec["bn"]["running_mean"])
    assert not torch.equal(bn.running_mean, rec["bn_running_mean_before"])  # the drift the original has
    head, prototypes = head_from_seed(rec["seed"])
    loss = cosine_prototype_loss(head(features), prototypes.weight, rec["labels"], rec["temperature"])
    loss.backward()
    torch.testing.assert_close(loss.detach(), rec["loss"], rtol=1e-5, atol=1e-6)
    for name, p in head.named_parameters():
        if name.startswith("0."):
            continue
        torch.testing.assert_close(p.grad, rec["grad"][name], rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(head[0].weight.grad.norm(), rec["grad_first_norm"], rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(head[0].weight.grad[::37, ::101], rec["grad_first_sample"], rtol=1e-4, atol=1e-7)


# ---------------------------------------------------------------- the original protocol's settings
from lwsupcrd.data import DATASETS, Split, color_jitter  # noqa: E402
from lwsupcrd.models import ModelWrapper  # noqa: E402
from lwsupcrd.protocol import ORIGINAL, PRESETS, build_runs, head_config  # noqa: E402
from lwsupcrd.published import load_teacher_file  # noqa: E402
from lwsupcrd.train import TrainingInterrupted, fit  # noqa: E402

CPU = torch.device("cpu")


def test_color_jitter_matches_torchvision_in_each_images_order():
    import torchvision.transforms.v2.functional as TF

    g = torch.Generator().manual_seed(0)
    for channels in (3, 1):
        x = torch.rand(6, channels, 8, 8, generator=g)
        factors = 0.8 + 0.4 * torch.rand(6, 3, generator=g)
        order = torch.stack([torch.randperm(3, generator=g) for _ in range(6)])
        ours = color_jitter(x, (factors, order))
        ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation)
        for i in range(6):
            y = x[i]
            for k in order[i].tolist():
                y = ops[k](y, float(factors[i, k]))
            torch.testing.assert_close(ours[i], y, rtol=0, atol=1e-6)


def test_every_preset_runs_the_original_as_its_code_does():
    for name in ("paper", "quick", "evidence", "smoke"):
        assert {k: PRESETS[name][k] for k in ORIGINAL} == ORIGINAL, name
        assert PRESETS[name]["alpha_modes"] == ("weight",), name  # the "logit" reading left the presets
    runs = {r.name: r for r in build_runs(dict(PRESETS["paper"]))}
    head = runs["teacher_resnet50_cifar100_with_projection"].cfg
    assert head["proj_hidden"] == [512, 128] and head["head_pretraining"] == "cosine_prototype"
    assert head["views"] == 1 and head["teacher_bn_drift"] and head["color_jitter"] == 0.2
    lw = runs["student_alpha_1.0_beta_10.0_temp_0.07_resnet18_cifar100"].cfg
    assert lw["proj_hidden"] == [128] and lw["online_classifier"] and lw["online_lr"] == 1e-3
    assert (lw["lw_form"], lw["own_key"], lw["teacher_head_lr_scale"], lw["color_jitter"]) == ("anchor", True, 0.1, 0.2)
    assert runs["student_lwsupcrd_perpositive_resnet18_cifar100"].cfg["lw_form"] == "per_positive"
    assert runs["student_baseline_crd_resnet18_cifar100"].cfg["crd_form"] == "instance"
    assert runs["student_undistilled_resnet18_cifar100"].cfg["views"] == 1
    assert runs["student_lwsupcrd_bank4096_resnet18_cifar100"].cfg["bank_form"] == "port"
    assert "student_baseline_crd_classaware_resnet18_cifar100" not in runs  # a control of our InfoNCE form only


def test_ours_is_one_setting_away():
    runs = {r.name: r for r in build_runs(dict(PRESETS["paper"], lw_form="per_positive", crd_form="ours",
                                               proj_head="linear", undistilled_views=2))}
    assert runs["student_alpha_1.0_beta_10.0_temp_0.07_resnet18_cifar100"].cfg["proj_head"] == "linear"
    assert runs["student_lwsupcrd_anchor_resnet18_cifar100"].cfg["lw_form"] == "anchor"
    assert "student_baseline_crd_classaware_resnet18_cifar100" in runs


def tiny(**overrides):
    info = DATASETS["fashion-mnist"]
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 1, 28, 28), generator=gen, dtype=torch.uint8)
    train = Split(images, torch.arange(64) % 10, torch.arange(64), [str(i) for i in range(10)])
    cfg = dict(method="lwsupcrd", arch="resnet8", num_classes=10, in_channels=1, epochs=1, batch_size=16,
               optimizer="adam", lr=1e-3, weight_decay=0.0, schedule="constant", temperature=0.07, seed=0, alpha=1.0,
               beta=10.0, adaptive_beta=True, alpha_mode="weight", logit_weighting=True, online_classifier=True,
               online_lr=1e-3, teacher_head_lr_scale=0.1, color_jitter=0.2, lw_form="anchor", own_key=True,
               crd_form="instance", **head_config("original", "student"))
    cfg.update(overrides)
    torch.manual_seed(0)
    student = ModelWrapper.from_config(cfg)
    teacher = ModelWrapper.from_config({**cfg, **head_config("original", "teacher")})
    teacher.requires_grad_(False)
    teacher.projection.requires_grad_(True)
    return cfg, student, teacher, train, info


BANK = dict(bank_negatives=20, bank_momentum=0.5, bank_form="port")


@pytest.mark.parametrize("method, extra", [
    ("lwsupcrd", BANK), *(pytest.param(m, e, marks=pytest.mark.slow) for m, e in (
        ("lwsupcrd", {}), ("crd", {}), ("supcon", {}), ("crd", BANK),
        ("lwsupcrd", dict(logit_weighting=False, adaptive_beta=False))))])
def test_a_killed_original_run_resumes_bit_for_bit(tmp_path, method, extra):
    """Two epochs at once, or one, a new process's worth of objects, and the second: the same weights,
    online classifier, teacher head, bank and optimisers' states."""
    cfg, student, teacher, train, info = tiny(method=method, epochs=2, **extra)
    whole = fit("w", cfg, copy.deepcopy(student), train, info, CPU, teacher=copy.deepcopy(teacher), progress=False)
    path = tmp_path / "r.resume.pth"
    first_student, first_teacher = copy.deepcopy(student), copy.deepcopy(teacher)
    with pytest.raises(TrainingInterrupted):
        fit("r", cfg, first_student, train, info, CPU, teacher=first_teacher, resume_path=path, progress=False,
            on_epoch=lambda row: (_ for _ in ()).throw(KeyboardInterrupt()))
    resumed_student, resumed_teacher = copy.deepcopy(student), copy.deepcopy(teacher)
    history = fit("r", cfg, resumed_student, train, info, CPU, teacher=resumed_teacher, resume_path=path,
                  progress=False)
    assert [row["loss"] for row in history] == [row["loss"] for row in whole]


def test_online_classifier_and_teacher_head_have_their_own_optimisers():
    """The classifier learns only from its cross-entropy on detached features (the backbone gets no
    gradient from it), at its own lr; the teacher's head moves at lr/10 in its own Adam."""
    cfg, student, teacher, train, info = tiny(epochs=1, lr=1e-3)
    fc_before = student.classifier.weight.detach().clone()
    head_before = [p.detach().clone() for p in teacher.projection.parameters()]
    row = fit("o", cfg, student, train, info, CPU, teacher=teacher, progress=False)[0]
    assert "online_ce" in row and 0 <= row["train_acc"] <= 100
    assert not torch.equal(student.classifier.weight, fc_before)
    steps = len(train) // cfg["batch_size"]
    moved = max(float((p.detach() - q).abs().max()) for p, q in zip(teacher.projection.parameters(), head_before))
    assert 0 < moved <= steps * 1e-4 * 1.01  # Adam moves each weight by at most ~lr per step
    cfg2, student2, teacher2, *_ = tiny(epochs=1, online_classifier=False)
    fc2 = student2.classifier.weight.detach().clone()
    fit("o", cfg2, student2, train, info, CPU, teacher=teacher2, progress=False)
    assert torch.equal(student2.classifier.weight, fc2)  # without it, no gradient reaches the classifier


@pytest.mark.parametrize("drift", [True, False])
def test_head_pretraining_with_cosine_prototypes_moves_batchnorm_only_with_the_quirk(drift):
    from lwsupcrd.methods import build_extras

    cfg, _, teacher, train, info = tiny(method="projection", head_pretraining="cosine_prototype", views=1,
                                        teacher_bn_drift=drift, **head_config("original", "teacher"))
    stats = {k: v.clone() for k, v in teacher.backbone.state_dict().items() if "running_mean" in k}
    weights = {k: v.clone() for k, v in teacher.backbone.state_dict().items() if k.endswith("weight")}
    extras = build_extras(cfg, teacher, None, train)
    assert extras.weight.shape == (10, 64) and extras.bias is None
    row = fit("p", cfg, teacher, train, info, CPU, extras=extras, progress=False)[0]
    assert "cosine_ce" in row
    after = teacher.backbone.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in weights.items())  # the backbone's weights never move
    assert any(not torch.equal(v, after[k]) for k, v in stats.items()) == drift


def test_the_undistilled_student_trains_on_one_view():
    from lwsupcrd.steps import Batch, Networks, StepContext, step_undistilled

    cfg, student, _, train, info = tiny(method="undistilled", views=1)
    x = torch.randn(16, 1, 28, 28)
    ctx = StepContext(cfg, Networks.of(student, None, None), student, None, None)
    result = step_undistilled(ctx, Batch(x, torch.arange(16) % 10, torch.arange(16)))
    assert result.seen == 16


def test_a_file_in_the_hub_teachers_layout_loads_with_equal_outputs(tmp_path):
    """detectors' resnet50_cifar100 is timm's ResNet-50 with a 3x3 stride-1 stem and no max-pool:
    made here from torchvision's ResNet-50 (the same modules and key names), saved as the hub's plain
    state dict; also with the head saved as `classifier`, which the original's loader renames."""
    import torchvision

    torch.manual_seed(0)
    ref = torchvision.models.resnet50(num_classes=100)
    ref.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    ref.maxpool = nn.Identity()
    for m in ref.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    ref.eval()
    x = torch.randn(3, 3, 32, 32)
    for name, state in (("pytorch_model.bin", ref.state_dict()),
                        ("renamed.bin", {k.replace("fc.", "classifier.", 1) if k.startswith("fc.") else k: v
                                         for k, v in ref.state_dict().items()})):
        torch.save(state, tmp_path / name)
        ours = load_teacher_file(tmp_path / name, "resnet50", 100).eval()
        with torch.no_grad():
            torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=0)


def test_hub_teacher_offline_is_one_line(tmp_path, monkeypatch):
    import urllib.request

    from lwsupcrd.options import StudyConfig, validate

    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    cfg = StudyConfig(preset="smoke", teacher_checkpoint="hub:edadaltocg/resnet50_cifar100", out_dir=str(tmp_path),
                      pair="resnet50-resnet8")
    with pytest.raises(ValueError, match="cannot download the teacher edadaltocg/resnet50_cifar100.*--teacher-checkpoint PATH"):
        validate(cfg)
    assert not list(tmp_path.rglob("*.bin"))


@pytest.mark.slow
def test_the_smoke_study_runs_from_a_file_in_the_hub_teachers_layout(tmp_path):
    """`--teacher-checkpoint` with a ResNet-50 saved as the hub serves it: the teacher is read (its
    accuracy measured with its own head), its head pre-trained, and a student distilled from it."""
    import torchvision

    from helpers import results_file, run_script
    from lwsupcrd.data import write_cifar_like

    torch.manual_seed(0)
    ref = torchvision.models.resnet50(num_classes=100)
    ref.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    ref.maxpool = nn.Identity()
    torch.save(ref.state_dict(), tmp_path / "pytorch_model.bin")
    data = write_cifar_like(tmp_path / "data", train_per_class=2, test_per_class=1)
    centre = "student_alpha_1.0_beta_10.0_temp_0.07_resnet8_cifar100"
    done = run_script("--preset", "smoke", "--pair", "resnet50-resnet8", "--teacher-checkpoint",
                      tmp_path / "pytorch_model.bin", "--data-dir", data, "--out-dir", tmp_path / "out",
                      "--only", centre, "--set", "bank_ablation=false", "--set", "bank_init_pair=false")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "teacher read from" in done.stdout and "(its own head)" in done.stdout
    import json

    runs = json.loads(results_file(tmp_path / "out").read_text())["runs"]
    teacher = runs["teacher_resnet50_cifar100_published"]
    assert teacher["config"]["method"] == "published" and "head_test_acc" in teacher["metrics"]
    assert {"head_test_acc", "probe_test_acc"} <= set(runs[centre]["metrics"])
    assert "teacher_resnet50_cifar100_published_with_projection" in runs

"""The training loop's diagnostics and options: LW-SupCRD's weight statistics per epoch, and a
memory bank initialised from the teacher's keys."""
import copy

import pytest
import torch
import torch.nn.functional as F

from lwsupcrd.data import DATASETS, Split, normalize
from lwsupcrd.methods import STANDARD, TERMS
from lwsupcrd.models import ModelWrapper
from lwsupcrd.steps import teacher_bank_keys
from lwsupcrd.train import fit

CPU = torch.device("cpu")


def tiny(**overrides):
    info = DATASETS["fashion-mnist"]
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 1, 28, 28), generator=gen, dtype=torch.uint8)
    train = Split(images, torch.arange(64) % 10, torch.arange(64), [str(i) for i in range(10)])
    cfg = dict(method="lwsupcrd", arch="resnet8", num_classes=10, in_channels=1, proj_head="linear", epochs=1,
               batch_size=32, optimizer="adam", lr=1e-3, weight_decay=0.0, schedule="constant", temperature=0.07,
               seed=0, alpha=1.0, beta=10.0, adaptive_beta=True, alpha_mode="weight", logit_weighting=True)
    cfg.update(overrides)
    torch.manual_seed(0)
    student, teacher = ModelWrapper.from_config(cfg), ModelWrapper.from_config(cfg)
    teacher.requires_grad_(False)
    teacher.projection.requires_grad_(True)
    return cfg, student, teacher, train, info


def test_lwsupcrd_epoch_logs_its_weights():
    cfg, student, teacher, train, info = tiny()
    row = fit("w", cfg, student, train, info, CPU, teacher=teacher, progress=False)[0]
    for key in ("q", "beta_i", "w_pull", "w_push", "margin"):
        assert row[f"w.{key}_p05"] <= row[f"w.{key}_mean"] <= row[f"w.{key}_p95"], key
    assert 0 < row["w.q_p05"] and row["w.q_p95"] <= 1
    assert 10 / 1.5 <= row["w.beta_i_p05"] and row["w.beta_i_p95"] <= 10 / 0.5  # beta / (q + 0.5)
    assert 0 <= row["w.teacher_wrong"] <= 1
    # the margin is log(w_push / w_pull); with q < 1 and adaptive beta it is positive here
    assert row["w.margin_mean"] > 0


def test_unweighted_supcrd_has_constant_weights():
    cfg, student, teacher, train, info = tiny(alpha=1.0, beta=1.0, adaptive_beta=False, logit_weighting=False)
    row = fit("w", cfg, student, train, info, CPU, teacher=teacher, progress=False)[0]
    assert row["w.w_push_p05"] == row["w.w_push_p95"] == 1.0 and row["w.margin_mean"] == 0.0


def test_no_weights_for_other_methods():
    cfg, student, teacher, train, info = tiny(method="crd")
    row = fit("w", cfg, student, train, info, CPU, teacher=teacher, progress=False)[0]
    assert not [k for k in row if k.startswith("w.")]


def test_teacher_bank_keys_are_the_teachers_unit_keys_of_clean_images():
    cfg, _, teacher, train, info = tiny()
    keys = teacher_bank_keys(teacher, train, info, batch_size=24)  # several batches
    with torch.no_grad():
        expected = F.normalize(teacher.eval().projection(teacher.backbone.forward_features(normalize(train.images, info))))
    torch.testing.assert_close(keys, expected, rtol=1e-5, atol=1e-6)
    assert teacher.training is False  # eval() above; the helper restores whatever mode it found


@pytest.mark.parametrize("init", ["random", "teacher"])
def test_bank_initialisation_changes_the_first_epoch_only_through_the_bank(init):
    runs = {}
    for mode in ("random", init):
        cfg, student, teacher, train, info = tiny(bank_negatives=32, bank_momentum=0.5, bank_init=mode)
        runs[mode] = fit("b", cfg, copy.deepcopy(student), train, info, CPU, teacher=teacher, progress=False)[0]
    if init == "random":
        assert runs["random"]["loss"] == runs[init]["loss"]
    else:
        assert runs["random"]["loss"] != runs["teacher"]["loss"]


@pytest.mark.parametrize("name", list(STANDARD))
def test_standard_step_trains_each_method(name):
    """The standard protocol's step on one view: its parts are the weighted terms, the teacher's
    embedding head trains only with a term that uses it, and the backbone of the teacher stays put."""
    from lwsupcrd.train import check_frozen, frozen_snapshot

    method = STANDARD[name]
    params = method.config("resnet8-resnet8", 1)
    params.update({k: 16 for k in ("bank_negatives", "nce_negatives") if k in params})
    cfg, student, teacher, train, info = tiny(method="standard", optimizer="sgd", lr=0.05, momentum=0.9,
                                              schedule="step", lr_milestones=[1], lr_decay=0.1, kd_temperature=4.0,
                                              proj_dim=16, **params)
    head = copy.deepcopy(teacher.projection.state_dict())
    frozen = frozen_snapshot(teacher.backbone)
    row = fit("s", cfg, student, train, info, CPU, teacher=teacher if method.needs_teacher else None,
              progress=False)[0]
    assert ("kd" in row) == bool(method.kd_weight) and ("distill" in row) == (method.term is not None)
    expected = method.gamma * row["ce"] + method.kd_weight * row.get("kd", 0) + method.term_weight * row.get("distill", 0)
    assert row["loss"] == pytest.approx(expected, rel=1e-5)
    assert 0 <= row["train_acc"] <= 100 and row["images_per_second"] > 0
    moved = any(not torch.equal(v, teacher.projection.state_dict()[k]) for k, v in head.items())
    assert moved == (method.term is not None and TERMS[method.term].trains_teacher_head)
    check_frozen("s", frozen, teacher.backbone)


def test_a_standard_student_without_teacher_terms_needs_no_teacher():
    cfg, student, _, train, info = tiny(method="standard", kd_temperature=4.0, **STANDARD["vanilla"].config("", 1))
    assert fit("v", cfg, student, train, info, CPU, progress=False)[0]["ce"] > 0
    cfg.update(STANDARD["kd"].config("", 1))
    with pytest.raises(ValueError, match="needs a teacher"):
        fit("v", cfg, student, train, info, CPU, progress=False)

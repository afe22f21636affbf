"""The original work's losses against its own code: a fixture recorded once by
`scripts/record_original_fixture.py` from the notebook of reducereX/ATML_Proj (6f2838b) and the
later mdistiller port's bank and loss (reducereX/mdistiller 826e52a)."""
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from lwsupcrd.losses import cosine_prototype_loss, instance_crd_loss, lw_supcrd_anchor_loss, lw_supcrd_loss
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

import pytest
import torch
import torch.nn.functional as F

from lwsupcrd.memory_bank import MomentumMemoryBank


def make_bank(size=50, dim=8, seed=0, momentum=0.5):
    return MomentumMemoryBank(size, dim, torch.arange(size) % 5, momentum=momentum, seed=seed)


def test_initial_slots_are_unit_and_seeded():
    a, b, c = make_bank(seed=1), make_bank(seed=1), make_bank(seed=2)
    assert torch.allclose(a.keys.norm(dim=1), torch.ones(50))
    assert torch.equal(a.keys, b.keys) and not torch.equal(a.keys, c.keys)


def test_update_follows_momentum_rule_and_leaves_other_slots():
    bank = make_bank(momentum=0.3)
    before = bank.keys.clone()
    idx = torch.tensor([4, 17, 3])
    keys = torch.randn(3, 8).requires_grad_()
    bank.update(idx, keys)
    want = F.normalize(0.3 * before[idx] + 0.7 * keys.detach(), dim=1)
    assert torch.allclose(bank.keys[idx], want)
    rest = torch.ones(50, dtype=torch.bool)
    rest[idx] = False
    assert torch.equal(bank.keys[rest], before[rest])
    assert not bank.keys.requires_grad


@pytest.mark.parametrize("idx,keys,match", [
    (torch.tensor([1, 1]), torch.randn(2, 8), "unique"),
    (torch.tensor([1, 50]), torch.randn(2, 8), r"\[0, 50\)"),
    (torch.tensor([-1]), torch.randn(1, 8), r"\[0, 50\)"),
    (torch.tensor([1, 2]), torch.randn(2, 7), "shape"),
    (torch.tensor([1, 2, 3]), torch.randn(2, 8), "indices"),
])
def test_update_rejects_bad_input(idx, keys, match):
    bank = make_bank()
    before = bank.keys.clone()
    with pytest.raises(ValueError, match=match):
        bank.update(idx, keys)
    assert torch.equal(bank.keys, before)


def test_sample_distinct_with_labels():
    bank = make_bank()
    keys, labels, idx = bank.sample(20)
    assert keys.shape == (20, 8) and len(set(idx.tolist())) == 20
    assert torch.equal(labels, idx % 5) and torch.equal(keys, bank.keys[idx])
    assert sorted(bank.sample(50)[2].tolist()) == list(range(50))
    with pytest.raises(ValueError, match="k=51"):
        bank.sample(51)


def test_state_dict_round_trip_resumes_sampling():
    a = make_bank(seed=3)
    a.update(torch.tensor([0, 1]), torch.randn(2, 8))
    a.sample(10)
    state = a.state_dict()
    b = make_bank(seed=99)
    b.load_state_dict(state)
    assert torch.equal(a.keys, b.keys)
    for _ in range(3):
        assert torch.equal(a.sample(10)[2], b.sample(10)[2])


def test_state_dict_is_plain_tensors_loadable_with_weights_only(tmp_path):
    a = make_bank()
    torch.save(a.state_dict(), tmp_path / "bank.pth")
    state = torch.load(tmp_path / "bank.pth", weights_only=True)
    b = make_bank(seed=5)
    b.load_state_dict(state)
    assert torch.equal(a.sample(7)[2], b.sample(7)[2])


def test_sampling_is_roughly_uniform():
    bank = make_bank(size=20)
    counts = torch.zeros(20)
    for _ in range(2000):
        counts[bank.sample(5)[2]] += 1
    assert counts.min() > 400 and counts.max() < 600  # expected 500 each


def test_fill_sets_every_slot_normalised():
    from lwsupcrd.memory_bank import MomentumMemoryBank

    bank = MomentumMemoryBank(6, 3, torch.arange(6) % 2, seed=0)
    keys = torch.arange(18, dtype=torch.float32).view(6, 3) + 1
    bank.fill(keys)
    torch.testing.assert_close(bank.keys, torch.nn.functional.normalize(keys, dim=1))
    with pytest.raises(ValueError, match=r"keys must have shape \(6, 3\)"):
        bank.fill(keys[:5])

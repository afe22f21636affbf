"""Each loss against a slow loop written straight from its equation, in float64."""
import math

import pytest
import torch
import torch.nn.functional as F

from lwsupcrd.losses import crd_loss, kd_loss, lw_supcrd_loss, onehot_teacher_beta, student_objective, supcon_loss


def unit(n, d, gen):
    return F.normalize(torch.randn(n, d, generator=gen, dtype=torch.float64), dim=1)


def ref_supcon(z, labels, tau):
    n = len(z)
    s = ((z @ z.T) / tau).tolist()  # plain floats: the reference never touches a tensor again
    terms = []
    for i in range(n):
        pos = [p for p in range(n) if p != i and labels[p] == labels[i]]
        if not pos:
            continue
        lse = math.log(sum(math.exp(s[i][a]) for a in range(n) if a != i))
        terms.append(-sum(s[i][p] - lse for p in pos) / len(pos))
    return sum(terms) / len(terms) if terms else 0.0


def ref_crd(z, t, ids, tau, bank=None, bank_ids=None, labels=None, bank_labels=None):
    n = len(z)
    keys = t if bank is None else torch.cat([t, bank])
    key_ids = list(ids) + ([] if bank is None else list(bank_ids))
    key_labels = None if labels is None else list(labels) + ([] if bank is None else list(bank_labels))
    s = ((z @ keys.T) / tau).tolist()
    total = 0.0
    for i in range(n):
        pos = [p for p in range(n) if ids[p] == ids[i]]
        neg = [j for j in range(len(keys)) if key_ids[j] != ids[i]
               and (key_labels is None or key_labels[j] != labels[i])]  # class-aware: other classes only
        li = 0.0
        for p in pos:
            denom = math.exp(s[i][p]) + sum(math.exp(s[i][j]) for j in neg)
            li += -math.log(math.exp(s[i][p]) / denom)
        total += li / len(pos)
    return total / n


def ref_lw(z, t, labels, probs, alpha, beta, tau, adaptive, bank=None, bank_labels=None, alpha_mode="weight",
           weighting=True):
    n = len(z)
    keys = t if bank is None else torch.cat([t, bank])
    key_labels = list(labels) + ([] if bank is None else list(bank_labels))
    s = ((z @ keys.T) / tau).tolist()
    total = 0.0
    for i in range(n):
        q = max(float(probs[i, labels[i]]), 1e-8)
        w_pull = alpha * q if weighting else alpha
        b = beta / (q + 0.5) if adaptive else beta
        pos = [p for p in range(n) if labels[p] == labels[i]]
        neg = [j for j in range(len(keys)) if key_labels[j] != labels[i]]
        push = 0.0
        for j in neg:
            w_push = b * max(1 - float(probs[i, key_labels[j]]), 1e-8) if weighting else beta
            push += w_push * math.exp(s[i][j])
        li = 0.0
        for p in pos:
            num = w_pull * math.exp(s[i][p]) if alpha_mode == "weight" else math.exp(w_pull * s[i][p])
            li += -math.log(num / (num + push))
        total += li / len(pos)
    return total / n / alpha


CASES = {
    "mixed": (12, [0, 1, 2, 0, 1, 2, 3, 3, 0, 4, 1, 2]),
    "no_positive_for_some": (6, [0, 1, 2, 3, 0, 5]),
    "all_equal": (5, [2, 2, 2, 2, 2]),
    "single": (1, [3]),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("tau", [0.07, 0.5])
def test_supcon_matches_reference(case, tau):
    n, labels = CASES[case]
    gen = torch.Generator().manual_seed(0)
    z = unit(n, 8, gen)
    labels = torch.tensor(labels)
    got = supcon_loss(z, labels, tau)
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx(ref_supcon(z, labels.tolist(), tau), rel=1e-9, abs=1e-12)


def test_supcon_without_positives_is_zero_and_attached():
    z = unit(4, 8, torch.Generator().manual_seed(1)).requires_grad_()
    loss = supcon_loss(z, torch.arange(4))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(z.grad, torch.zeros_like(z))


@pytest.mark.parametrize("case", ["mixed", "all_equal", "single"])
@pytest.mark.parametrize("with_bank", [False, True])
def test_crd_matches_reference(case, with_bank):
    n, _ = CASES[case]
    gen = torch.Generator().manual_seed(2)
    z, t = unit(n, 8, gen), unit(n, 8, gen)
    ids = torch.tensor([i % max(1, n // 2) for i in range(n)])  # two views share an id
    bank = bank_ids = None
    if with_bank:
        bank = unit(7, 8, gen)
        bank_ids = torch.tensor([0, 1, 9, 10, 11, 0, 12])  # some slots are the anchors' own images
    got = crd_loss(z, t, ids, 0.1, bank, bank_ids)
    want = ref_crd(z, t, ids.tolist(), 0.1, bank, None if bank_ids is None else bank_ids.tolist())
    assert got.item() == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("with_bank", [False, True])
def test_class_aware_crd_matches_reference(with_bank):
    gen = torch.Generator().manual_seed(5)
    z, t = unit(8, 8, gen), unit(8, 8, gen)
    ids, labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3]), torch.tensor([0, 0, 1, 2, 0, 0, 1, 2])
    bank = bank_ids = bank_labels = None
    if with_bank:
        bank, bank_ids, bank_labels = unit(6, 8, gen), torch.tensor([0, 5, 6, 7, 8, 9]), torch.tensor([0, 0, 1, 3, 2, 3])
    got = crd_loss(z, t, ids, 0.1, bank, bank_ids, labels=labels, bank_labels=bank_labels)
    want = ref_crd(z, t, ids.tolist(), 0.1, bank, None if bank_ids is None else bank_ids.tolist(), labels.tolist(),
                   None if bank_labels is None else bank_labels.tolist())
    assert got.item() == pytest.approx(want, rel=1e-9)
    assert got.item() != pytest.approx(crd_loss(z, t, ids, 0.1, bank, bank_ids).item(), rel=1e-6)


def probs_with_extremes(n, c, labels, gen):
    probs = torch.softmax(torch.randn(n, c, generator=gen, dtype=torch.float64) * 3, dim=1)
    probs[0] = 0.0
    probs[0, labels[0]] = 1.0  # target probability exactly 1: every negative weight hits the 1e-8 floor
    if n > 1:
        probs[1] = 0.0
        probs[1, (labels[1] + 1) % c] = 1.0  # target exactly 0 and one negative class exactly 1
    return probs


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("adaptive", [True, False])
@pytest.mark.parametrize("with_bank", [False, True])
@pytest.mark.parametrize("alpha,beta,tau", [(1.0, 10.0, 0.07), (2.5, 1.0, 0.2), (1.0, 0.0, 0.1)])
@pytest.mark.parametrize("alpha_mode,weighting", [("weight", True), ("logit", True), ("weight", False)])
def test_lw_supcrd_matches_reference(case, adaptive, with_bank, alpha, beta, tau, alpha_mode, weighting):
    n, labels = CASES[case]
    c = 6
    gen = torch.Generator().manual_seed(3)
    z, t = unit(n, 8, gen), unit(n, 8, gen)
    labels = torch.tensor(labels)
    probs = probs_with_extremes(n, c, labels.tolist(), gen)
    bank = bank_labels = None
    if with_bank:
        bank = unit(9, 8, gen)
        bank_labels = torch.tensor([0, 1, 2, 3, 4, 5, 2, 2, 0])  # includes the anchors' own classes
    got = lw_supcrd_loss(z, t, labels, probs, alpha, beta, tau, adaptive, bank, bank_labels, alpha_mode=alpha_mode,
                         logit_weighting=weighting)
    want = ref_lw(z, t, labels.tolist(), probs, alpha, beta, tau, adaptive, bank,
                  None if bank_labels is None else bank_labels.tolist(), alpha_mode, weighting)
    assert torch.isfinite(got)
    assert got.item() == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_lw_supcrd_bank_keys_of_own_class_are_ignored():
    gen = torch.Generator().manual_seed(4)
    z, t = unit(4, 8, gen), unit(4, 8, gen)
    labels = torch.tensor([0, 0, 1, 1])
    probs = torch.softmax(torch.randn(4, 3, generator=gen, dtype=torch.float64), 1)
    bank = unit(3, 8, gen)
    base = lw_supcrd_loss(z, t, labels, probs, bank_keys=bank[:1], bank_labels=torch.tensor([2]))
    # add bank keys whose labels are 0 and 1 only: for each anchor one of them is its own class
    more = lw_supcrd_loss(z, t, labels, probs, bank_keys=bank, bank_labels=torch.tensor([2, 0, 0]))
    z01 = lw_supcrd_loss(z[:2], t[:2], labels[:2], probs[:2], bank_keys=bank, bank_labels=torch.tensor([2, 0, 0]))
    z01_base = lw_supcrd_loss(z[:2], t[:2], labels[:2], probs[:2], bank_keys=bank[:1], bank_labels=torch.tensor([2]))
    assert z01.item() == pytest.approx(z01_base.item(), rel=1e-12)
    assert more.item() > base.item()  # class-1 anchors do see the extra class-0 keys


@pytest.mark.parametrize("with_bank", [False, True])
def test_onehot_teacher_control_is_lw_supcrd_with_one_hot_probabilities(with_bank):
    """Unweighted SupCRD at (alpha, onehot_teacher_beta(beta)) is LW-SupCRD (adaptive beta) fed the
    one-hot labels as the teacher's probabilities; with the soft probabilities it is not."""
    gen = torch.Generator().manual_seed(12)
    z, t = unit(8, 4, gen), unit(8, 4, gen)
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    bank, bank_labels = (unit(5, 4, gen), torch.tensor([0, 1, 2, 3, 1])) if with_bank else (None, None)
    onehot = F.one_hot(labels, 4).double()
    soft = torch.softmax(torch.randn(8, 4, generator=gen, dtype=torch.float64), 1)
    control = lw_supcrd_loss(z, t, labels, soft, 1.0, onehot_teacher_beta(10.0), 0.07, False, bank, bank_labels,
                             logit_weighting=False)
    assert onehot_teacher_beta(10.0) == pytest.approx(10.0 / 1.5)
    fed_onehot = lw_supcrd_loss(z, t, labels, onehot, 1.0, 10.0, 0.07, True, bank, bank_labels)
    assert control.item() == pytest.approx(fed_onehot.item(), rel=1e-12)
    assert abs(lw_supcrd_loss(z, t, labels, soft, 1.0, 10.0, 0.07, True, bank, bank_labels).item()
               - control.item()) > 1e-3


def gradcheck_inputs(seed=5):
    gen = torch.Generator().manual_seed(seed)
    z = unit(6, 4, gen).requires_grad_()
    t = unit(6, 4, gen).requires_grad_()
    bank = unit(5, 4, gen).requires_grad_()
    return z, t, bank


def test_gradcheck_all_losses():
    z, t, bank = gradcheck_inputs()
    labels = torch.tensor([0, 1, 0, 1, 2, 2])
    ids = torch.tensor([0, 1, 2, 0, 1, 2])
    probs = torch.softmax(torch.randn(6, 3, dtype=torch.float64), 1)
    bank_labels = torch.tensor([0, 1, 2, 1, 0])
    assert torch.autograd.gradcheck(lambda z: supcon_loss(z, labels, 0.3), (z,))
    assert torch.autograd.gradcheck(lambda z, t, b: crd_loss(z, t, ids, 0.3, b, torch.arange(5)), (z, t, bank))
    for mode in ("weight", "logit"):
        assert torch.autograd.gradcheck(
            lambda z, t, b: lw_supcrd_loss(z, t, labels, probs, 1.5, 4.0, 0.3, True, b, bank_labels, alpha_mode=mode),
            (z, t, bank))


def test_alpha_in_the_weight_reading_is_a_margin_and_a_scale():
    """As written, alpha adds log(alpha) to each positive logit and divides the loss: Adam, which
    is invariant to the division, sees only the margin. The logit reading changes the logits' scale."""
    gen = torch.Generator().manual_seed(11)
    z, t = unit(8, 4, gen), unit(8, 4, gen)
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    probs = torch.softmax(torch.randn(8, 4, generator=gen, dtype=torch.float64), 1)
    one = lw_supcrd_loss(z, t, labels, probs, 1.0, 10.0, 0.1)
    two = lw_supcrd_loss(z, t, labels, probs, 2.0, 10.0, 0.1)
    shifted = lw_supcrd_loss(z, t, labels, probs, 1.0, 10.0 / 2.0, 0.1)  # log 2 off the positive == log 2 off every push
    assert two.item() * 2.0 == pytest.approx(shifted.item(), rel=1e-12)
    logit_two = lw_supcrd_loss(z, t, labels, probs, 2.0, 10.0, 0.1, alpha_mode="logit")
    assert abs(logit_two.item() - two.item()) > 1e-3 and one.item() != two.item()


def test_unknown_alpha_mode_is_named():
    gen = torch.Generator().manual_seed(12)
    z, t = unit(4, 4, gen), unit(4, 4, gen)
    with pytest.raises(ValueError, match="unknown alpha_mode 'exp'; choose from weight, logit"):
        lw_supcrd_loss(z, t, torch.tensor([0, 1, 0, 1]), torch.full((4, 2), 0.5, dtype=torch.float64),
                       alpha_mode="exp")


def test_gradients_reach_keys_but_not_teacher_probs():
    z, t, bank = gradcheck_inputs(6)
    probs = torch.softmax(torch.randn(6, 3, dtype=torch.float64), 1).requires_grad_()
    labels = torch.tensor([0, 1, 0, 1, 2, 2])
    lw_supcrd_loss(z, t, labels, probs, bank_keys=bank, bank_labels=torch.tensor([0, 1, 2, 1, 0])).backward()
    for x in (z, t, bank):
        assert x.grad is not None and x.grad.abs().sum() > 0
    assert probs.grad is None


def test_permutation_invariance():
    gen = torch.Generator().manual_seed(7)
    n = 10
    z, t = unit(n, 8, gen), unit(n, 8, gen)
    labels = torch.randint(0, 3, (n,), generator=gen)
    ids = torch.arange(n) % 5
    probs = torch.softmax(torch.randn(n, 3, generator=gen, dtype=torch.float64), 1)
    perm = torch.randperm(n, generator=gen)
    for f in (lambda z, t, l, i, p: supcon_loss(z, l),
              lambda z, t, l, i, p: crd_loss(z, t, i),
              lambda z, t, l, i, p: lw_supcrd_loss(z, t, l, p)):
        a = f(z, t, labels, ids, probs)
        b = f(z[perm], t[perm], labels[perm], ids[perm], probs[perm])
        assert a.item() == pytest.approx(b.item(), rel=1e-12)


def test_float32_under_bf16_autocast_and_finite_for_extreme_inputs():
    gen = torch.Generator().manual_seed(8)
    z = torch.randn(16, 8, generator=gen) * 1e4  # far from unit norm: huge logits
    t = torch.randn(16, 8, generator=gen) * 1e4
    labels = torch.randint(0, 4, (16,), generator=gen)
    probs = torch.softmax(torch.randn(16, 4, generator=gen), 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = [supcon_loss(z.bfloat16(), labels, 0.01), crd_loss(z.bfloat16(), t, labels, 0.01),
                  lw_supcrd_loss(z.bfloat16(), t, labels, probs, temperature=0.01)]
    for loss in losses:
        assert loss.dtype == torch.float32 and torch.isfinite(loss)


@pytest.mark.parametrize("call,match", [
    (lambda z, t, l, p: supcon_loss(z, l, temperature=0.0), "temperature"),
    (lambda z, t, l, p: crd_loss(z, t[:3], l), "t has"),
    (lambda z, t, l, p: lw_supcrd_loss(z, t, l, p, alpha=0), "alpha"),
    (lambda z, t, l, p: lw_supcrd_loss(z, t, l, p, beta=-1), "beta"),
    (lambda z, t, l, p: lw_supcrd_loss(z, t, l + 5, p), "labels must lie"),
    (lambda z, t, l, p: lw_supcrd_loss(z, t, l, p, bank_keys=t), "bank_labels"),
    (lambda z, t, l, p: crd_loss(z, t, l, bank_keys=t), "bank_ids"),
    (lambda z, t, l, p: supcon_loss(z * float("nan"), l), "non-finite"),
    (lambda z, t, l, p: lw_supcrd_loss(z, t, l, p[:, :2]), "labels must lie"),
    (lambda z, t, l, p: lw_supcrd_loss(z, t.to("meta"), l, p), "t is on"),
])
def test_invalid_arguments_raise(call, match):
    gen = torch.Generator().manual_seed(9)
    z, t = unit(6, 4, gen).float(), unit(6, 4, gen).float()
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    probs = torch.softmax(torch.randn(6, 3), 1)
    with pytest.raises(ValueError, match=match):
        call(z, t, labels, probs)


def ref_kd(s_logits, t_logits, T):
    total = 0.0
    for s_row, t_row in zip(s_logits.tolist(), t_logits.tolist()):
        zs = sum(math.exp(v / T) for v in s_row)
        zt = sum(math.exp(v / T) for v in t_row)
        for sv, tv in zip(s_row, t_row):
            pt, ps = math.exp(tv / T) / zt, math.exp(sv / T) / zs
            total += pt * math.log(pt / ps)
    return total / len(s_logits) * T * T


def ref_ce(logits, labels):
    total = 0.0
    for row, y in zip(logits.tolist(), labels.tolist()):
        total += -math.log(math.exp(row[y]) / sum(math.exp(v) for v in row))
    return total / len(logits)


@pytest.mark.parametrize("T", [1.0, 4.0])
@pytest.mark.parametrize("n,c", [(1, 3), (7, 10), (16, 100)])
def test_kd_matches_reference(n, c, T):
    gen = torch.Generator().manual_seed(n * c)
    s, t = (torch.randn(n, c, generator=gen, dtype=torch.float64) * 3 for _ in range(2))
    assert float(kd_loss(s, t, T)) == pytest.approx(ref_kd(s, t, T), rel=1e-10, abs=1e-12)
    assert float(kd_loss(t, t, T)) == pytest.approx(0.0, abs=1e-12)  # the teacher's own logits: no divergence


def test_kd_gradient_reaches_the_student_only():
    gen = torch.Generator().manual_seed(3)
    s = torch.randn(5, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    t = torch.randn(5, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: kd_loss(x, t, 4.0), (s,))
    kd_loss(s, t, 4.0).backward()
    assert t.grad is None and s.grad.abs().sum() > 0


@pytest.mark.parametrize("gamma,a,b", [(1.0, 0.0, 0.0), (0.1, 0.9, 0.0), (1.0, 0.0, 0.8), (1.0, 1.0, 0.8)])
def test_student_objective_matches_reference(gamma, a, b):
    """The CRD recipes: vanilla, KD, CRD, CRD+KD; the distillation term is the float64 CRD loop's."""
    gen = torch.Generator().manual_seed(11)
    n, c, d = 9, 6, 5
    logits, t_logits = (torch.randn(n, c, generator=gen, dtype=torch.float64) * 2 for _ in range(2))
    labels = torch.randint(0, c, (n,), generator=gen)
    z, t, ids = unit(n, d, gen), unit(n, d, gen), torch.arange(n)
    loss, parts = student_objective(logits, labels, t_logits, crd_loss(z, t, ids, 0.07), gamma, a, b, 4.0)
    expected = gamma * ref_ce(logits, labels) + a * ref_kd(logits, t_logits, 4.0) + b * ref_crd(z, t, ids, 0.07)
    assert float(loss) == pytest.approx(expected, rel=1e-10)
    assert set(parts) == {"ce"} | ({"kd"} if a else set()) | ({"distill"} if b else set())


def test_student_objective_needs_the_terms_it_weights():
    logits, labels = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    with pytest.raises(ValueError, match="needs teacher_logits"):
        student_objective(logits, labels, None, None, kd_weight=0.9)
    with pytest.raises(ValueError, match="needs the distillation term"):
        student_objective(logits, labels, logits, None, distill_weight=0.8)
    with pytest.raises(ValueError, match="teacher_logits has dimension 5"):
        kd_loss(logits, torch.randn(4, 5))

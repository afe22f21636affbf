"""The literature's terms against float64 loops of their equations, written from the papers."""
import math

import pytest
import torch
import torch.nn.functional as F

from lwsupcrd.distill_losses import (NCE_EPS, ab_loss, attention_loss, correlation_loss, dist_loss, dkd_loss,
                                     factor_loss, fsp_loss, hcl_loss, hint_loss,
                                     nce_loss, nce_normaliser, nce_scores, nst_loss, pkt_loss, rkd_loss, similarity_loss,
                                     standardize_logits, vid_loss)
from lwsupcrd.losses import kd_loss


def test_nce_matches_its_loop():
    g = torch.Generator().manual_seed(0)
    b, k, d, n, tau = 5, 7, 6, 50, 0.07
    anchors = F.normalize(torch.randn(b, d, generator=g, dtype=torch.float64), dim=1)
    keys = F.normalize(torch.randn(b, k + 1, d, generator=g, dtype=torch.float64), dim=2)
    scores = nce_scores(anchors, keys, tau)
    z = nce_normaliser(scores, n)
    total, mean_exp = 0.0, 0.0
    for i in range(b):
        for j in range(k + 1):
            mean_exp += math.exp(float(anchors[i] @ keys[i, j]) / tau) / (b * (k + 1))
    assert z == pytest.approx(mean_exp * n, rel=1e-12)
    noise = k / n
    for i in range(b):
        p0 = math.exp(float(anchors[i] @ keys[i, 0]) / tau) / z
        total += math.log(p0 / (p0 + noise + NCE_EPS))
        for j in range(1, k + 1):
            pj = math.exp(float(anchors[i] @ keys[i, j]) / tau) / z
            total += math.log(noise / (pj + noise + NCE_EPS))
    assert float(nce_loss(scores, z, n)) == pytest.approx(-total / b, rel=1e-12)


def kl(p, q):
    return sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q) if pi > 0)


def softmax(xs):
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    return [v / sum(e) for v in e]


@pytest.mark.parametrize("alpha,beta,temperature", [(1.0, 8.0, 4.0), (0.5, 2.0, 1.0)])
def test_dkd_matches_its_loop(alpha, beta, temperature):
    g = torch.Generator().manual_seed(1)
    s = torch.randn(6, 5, generator=g, dtype=torch.float64) * 3
    t = torch.randn(6, 5, generator=g, dtype=torch.float64) * 3
    labels = torch.tensor([0, 1, 4, 2, 2, 3])
    expected = 0.0
    for i in range(6):
        y = int(labels[i])
        p_s, p_t = softmax((s[i] / temperature).tolist()), softmax((t[i] / temperature).tolist())
        tckd = kl([p_t[y], 1 - p_t[y]], [p_s[y], 1 - p_s[y]])
        others = [c for c in range(5) if c != y]
        q_s = softmax([float(s[i, c]) / temperature for c in others])
        q_t = softmax([float(t[i, c]) / temperature for c in others])
        expected += temperature ** 2 * (alpha * tckd + beta * kl(q_t, q_s)) / 6
    assert float(dkd_loss(s, t, labels, alpha, beta, temperature)) == pytest.approx(expected, rel=1e-10)


def test_dkd_is_zero_when_the_student_is_the_teacher_and_the_teacher_gets_no_gradient():
    t = torch.randn(4, 10, requires_grad=True)
    s = t.detach().clone().requires_grad_(True)
    labels = torch.tensor([1, 2, 3, 4])
    loss = dkd_loss(s, t, labels)
    assert float(loss.detach()) == pytest.approx(0.0, abs=1e-6)
    dkd_loss(s * 2, t, labels).backward()
    assert t.grad is None and s.grad is not None


def test_hint_matches_its_loop():
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64), torch.randn(2, 3, 4, 4, generator=g,
                                                                                   dtype=torch.float64)
    expected = sum(float(x - y) ** 2 for x, y in zip(a.flatten(), b.flatten())) / a.numel()
    assert float(hint_loss(a, b)) == pytest.approx(expected, rel=1e-12)


def test_attention_matches_its_loop_with_pooling_to_the_smaller_map():
    g = torch.Generator().manual_seed(3)
    student = [torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64),
               torch.randn(2, 4, 4, 4, generator=g, dtype=torch.float64)]
    teacher = [torch.randn(2, 5, 4, 4, generator=g, dtype=torch.float64),  # smaller: the student's is pooled
               torch.randn(2, 6, 4, 4, generator=g, dtype=torch.float64)]
    expected = 0.0
    for f_s, f_t in zip(student, teacher):
        if f_s.shape[2] > f_t.shape[2]:  # 2x2 average pooling, by hand
            f_s = f_s.reshape(2, f_s.shape[1], 4, 2, 4, 2).mean((3, 5))
        maps = []
        for f in (f_s, f_t):
            rows = []
            for n in range(2):
                q = [sum(float(f[n, c, h, w]) ** 2 for c in range(f.shape[1])) / f.shape[1]
                     for h in range(4) for w in range(4)]
                norm = math.sqrt(sum(v * v for v in q))
                rows.append([v / norm for v in q])
            maps.append(rows)
        expected += sum((a - b) ** 2 for ra, rb in zip(*maps) for a, b in zip(ra, rb)) / (2 * 16)
    assert float(attention_loss(student, teacher)) == pytest.approx(expected, rel=1e-10)


CRD_FIXTURE = torch.load(__import__("pathlib").Path(__file__).parent / "fixtures" / "repdistiller_crd.pt",
                         weights_only=True)


def test_published_crd_matches_repdistillers_own_loss_over_two_steps():
    """Two steps of RepDistiller's CRDLoss (scripts/record_crd_fixture.py, their code run once outside
    the project): the loss, Z fixed on the first batch, both memories and the gradients agree."""
    from lwsupcrd.nce_memory import ContrastMemories

    f = CRD_FIXTURE
    tau = float(torch.tensor(f["temperature"], dtype=torch.float32))  # the reference keeps tau in a float32 buffer
    memories = ContrastMemories(f["labels"], f["memory_student"].shape[1], f["k"], tau, f["momentum"]).double()
    memories.student.copy_(f["memory_student"])
    memories.teacher.copy_(f["memory_teacher"])
    embed = {}
    for side in ("s", "t"):
        w = f[f"embed_{side}"]
        embed[side] = torch.nn.Linear(w["linear.weight"].shape[1], w["linear.weight"].shape[0]).double()
        embed[side].weight.data.copy_(w["linear.weight"])
        embed[side].bias.data.copy_(w["linear.bias"])
    for i, step in enumerate(f["steps"]):
        f_s, f_t = step["f_s"].clone().requires_grad_(True), step["f_t"].clone().requires_grad_(True)
        loss = memories.loss(F.normalize(embed["s"](f_s), dim=1), F.normalize(embed["t"](f_t), dim=1), step["indices"])
        torch.testing.assert_close(loss.detach(), step["loss"].reshape(()), rtol=1e-9, atol=0)
        torch.testing.assert_close(memories.z, step["z"], rtol=1e-9, atol=0)
        torch.testing.assert_close(memories.student, step["memory_student"], rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(memories.teacher, step["memory_teacher"], rtol=1e-9, atol=1e-12)
        loss.backward()
        torch.testing.assert_close(f_s.grad, step["grad_f_s"], rtol=1e-7, atol=1e-12)
        torch.testing.assert_close(f_t.grad, step["grad_f_t"], rtol=1e-7, atol=1e-12)
        for layer in embed.values():
            layer.zero_grad()


def test_negatives_are_other_classes_distinct_and_uniform():
    from lwsupcrd.nce_memory import ContrastMemories

    labels = torch.arange(60) % 3
    memories = ContrastMemories(labels, 4, k=30, seed=0)
    slots = torch.tensor([0, 1, 2, 3])
    idx = memories.sample(labels[slots], slots)
    assert torch.equal(idx[:, 0], slots)
    for row, y in zip(idx[:, 1:], labels[slots]):
        assert (labels[row] != y).all() and len(set(row.tolist())) == 30  # other classes, distinct
    counts = torch.zeros(60)
    for _ in range(300):
        sampled = memories.sample(labels[:1], slots[:1])[0, 1:]
        counts[sampled] += 1
    others = counts[labels != 0]
    assert (counts[labels == 0] == 0).all() and others.min() > 0.6 * others.mean()  # uniform over the pool
    small = ContrastMemories(labels, 4, k=50, seed=0)  # a pool of 40 < k: with replacement, still other classes
    idx = small.sample(labels[slots], slots)
    assert idx.shape == (4, 51) and all((labels[r] != y).all() for r, y in zip(idx[:, 1:], labels[slots]))


def test_similarity_matches_its_loop():
    g = torch.Generator().manual_seed(4)
    f_s, f_t = torch.randn(4, 3, 2, 2, generator=g, dtype=torch.float64), torch.randn(4, 5, 2, 2, generator=g,
                                                                                    dtype=torch.float64)
    grams = []
    for f in (f_s.flatten(1).tolist(), f_t.flatten(1).tolist()):
        gram = [[sum(a * b for a, b in zip(f[i], f[j])) for j in range(4)] for i in range(4)]
        grams.append([[v / math.sqrt(sum(w * w for w in row)) for v in row] for row in gram])
    expected = sum((grams[1][i][j] - grams[0][i][j]) ** 2 for i in range(4) for j in range(4)) / 16
    assert float(similarity_loss(f_s, f_t)) == pytest.approx(expected, rel=1e-12)


RELATION_FIXTURE = torch.load(__import__("pathlib").Path(__file__).parent / "fixtures" / "repdistiller_relation.pt",
                              weights_only=True)
RELATION = {"pkt": pkt_loss, "rkd": rkd_loss, "cc": correlation_loss, "nst": nst_loss, "ab": ab_loss,
            "ft": factor_loss, "fsp": fsp_loss}


@pytest.mark.parametrize("name", list(RELATION))
def test_relation_terms_match_repdistillers_own_losses(name):
    """PKT, RKD, CC, NST, and AB's, FT's and FSP's objectives, against RepDistiller's own
    `distiller_zoo` on the same float64 inputs
    (scripts/record_relation_fixture.py, their code run once outside the project): loss and the
    gradients of every input that has one (CC's teacher embedding trains, the others' teacher is fixed)."""
    f = RELATION_FIXTURE[name]

    def leaves(x):
        return [t.clone().requires_grad_(True) for t in x] if isinstance(x, list) else [x.clone().requires_grad_(True)]

    student, teacher = leaves(f["student"]), leaves(f["teacher"])
    loss = RELATION[name](*(x if isinstance(f["student"], list) else x[0] for x in (student, teacher)))
    torch.testing.assert_close(loss.detach(), f["loss"], rtol=1e-10, atol=0)
    grads = torch.autograd.grad(loss, student + teacher, allow_unused=True)
    mine = [g for g in grads if g is not None and bool(g.abs().sum())]  # a fixed teacher gets none
    recorded = [g for g in f["grads"] if g is not None]
    assert len(mine) == len(recorded) == len(student) + (name == "cc"), name  # CC's teacher embedding trains
    for ours, theirs in zip(mine, recorded):
        torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-14)


def test_pkt_matches_its_loop():
    g = torch.Generator().manual_seed(3)
    s, t = torch.randn(5, 4, generator=g, dtype=torch.float64), torch.randn(5, 6, generator=g, dtype=torch.float64)

    def conditional(x):
        unit = [[v / (math.sqrt(sum(u * u for u in row)) + 1e-7) for v in row] for row in x.tolist()]
        k = [[(sum(a * b for a, b in zip(ui, uj)) + 1) / 2 for uj in unit] for ui in unit]
        return [[v / sum(row) for v in row] for row in k]

    ps, pt = conditional(s), conditional(t)
    expected = sum(pt[i][j] * math.log((pt[i][j] + 1e-7) / (ps[i][j] + 1e-7)) for i in range(5) for j in range(5)) / 25
    assert float(pkt_loss(s, t)) == pytest.approx(expected, rel=1e-10)


def test_rkd_matches_its_loop():
    g = torch.Generator().manual_seed(4)
    s, t = torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(4, 5, generator=g, dtype=torch.float64)

    def huber(a, b):
        d = abs(a - b)
        return 0.5 * d * d if d < 1 else d - 0.5

    def potentials(x):
        x = x.tolist()
        n = len(x)
        dist = [[math.dist(x[i], x[j]) for j in range(n)] for i in range(n)]
        mean = sum(d for row in dist for d in row if d > 0) / sum(1 for row in dist for d in row if d > 0)

        def unit(i, j):
            v = [b - a for a, b in zip(x[i], x[j])]
            norm = max(math.sqrt(sum(u * u for u in v)), 1e-12)
            return [u / norm for u in v]

        angles = [sum(a * b for a, b in zip(unit(i, j), unit(i, k))) for i in range(n) for j in range(n) for k in range(n)]
        return [d / mean for row in dist for d in row], angles

    (ds, as_), (dt, at) = potentials(s), potentials(t)
    expected = (25 * sum(huber(a, b) for a, b in zip(ds, dt)) / len(ds)
                + 50 * sum(huber(a, b) for a, b in zip(as_, at)) / len(as_))
    assert float(rkd_loss(s, t)) == pytest.approx(expected, rel=1e-8)


def test_nst_and_cc_match_their_loops():
    g = torch.Generator().manual_seed(5)
    s, t = torch.randn(2, 3, 2, 2, generator=g, dtype=torch.float64), torch.randn(2, 4, 2, 2, generator=g, dtype=torch.float64)

    def channels(x):
        return [[[v / math.sqrt(sum(u * u for u in c)) for v in c] for c in image.flatten(1).tolist()] for image in x]

    def kernel_mean(a, b):
        values = [sum(p * q for p, q in zip(ca, cb)) ** 2 for ia, ib in zip(a, b) for ca in ia for cb in ib]
        return sum(values) / len(values)

    fs, ft = channels(s), channels(t)
    expected = kernel_mean(ft, ft) + kernel_mean(fs, fs) - 2 * kernel_mean(fs, ft)
    assert float(nst_loss([s], [t])) == pytest.approx(expected, rel=1e-10)
    es, et = torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(4, 3, generator=g, dtype=torch.float64)
    delta = (es - et).abs().tolist()
    expected = sum(sum(a * b for a, b in zip(delta[i], delta[i + 1])) for i in range(3)) / 3
    assert float(correlation_loss(es, et)) == pytest.approx(expected, rel=1e-12)


LOGIT_FIXTURE = torch.load(__import__("pathlib").Path(__file__).parent / "fixtures" / "logit_methods.pt",
                           weights_only=True)
LOGIT_METHODS = {
    "dist": lambda s, t, f: dist_loss(s, t, tau=4.0),
    "kd_ls": lambda s, t, f: kd_loss(standardize_logits(s), standardize_logits(t), 2.0),
    "dkd_ls": lambda s, t, f: dkd_loss(standardize_logits(s), standardize_logits(t), f["labels"], 9.0, 72.0, 2.0),
    "kd_plain": lambda s, t, f: kd_loss(s, t, 4.0),
}


@pytest.mark.parametrize("name", list(LOGIT_METHODS))
def test_logit_methods_match_their_authors_code(name):
    """DIST (hunto/image_classification_sota's `DIST`) and logit standardization's KD and DKD
    (sunshangquan/logit-standardization-KD's `kd_loss`, `dkd_loss` with logit_stand on) against their
    authors' functions on the same float64 logits (scripts/record_logit_fixture.py, run once outside
    the project), loss and gradient; KD without standardization too, as the same code computes it."""
    f = LOGIT_FIXTURE[name]
    student = f["student"].clone().requires_grad_(True)
    loss = LOGIT_METHODS[name](student, f["teacher"], f)
    torch.testing.assert_close(loss.detach(), f["loss"], rtol=1e-10, atol=0)
    (grad,) = torch.autograd.grad(loss, [student])
    torch.testing.assert_close(grad, f["grad"], rtol=1e-9, atol=1e-14)


def test_dist_matches_its_loop():
    g = torch.Generator().manual_seed(5)
    b, c, tau = 4, 3, 2.0
    zs, zt = torch.randn(b, c, generator=g, dtype=torch.float64), torch.randn(b, c, generator=g, dtype=torch.float64)
    ys = [[math.exp(zs[i, j] / tau) / sum(math.exp(zs[i, k] / tau) for k in range(c)) for j in range(c)] for i in range(b)]
    yt = [[math.exp(zt[i, j] / tau) / sum(math.exp(zt[i, k] / tau) for k in range(c)) for j in range(c)] for i in range(b)]

    def pearson(u, v):
        mu, mv = sum(u) / len(u), sum(v) / len(v)
        cov = sum((x - mu) * (y - mv) for x, y in zip(u, v))
        return cov / (math.sqrt(sum((x - mu) ** 2 for x in u)) * math.sqrt(sum((y - mv) ** 2 for y in v)) + 1e-8)

    inter = 1 - sum(pearson(ys[i], yt[i]) for i in range(b)) / b
    intra = 1 - sum(pearson([ys[i][j] for i in range(b)], [yt[i][j] for i in range(b)]) for j in range(c)) / c
    expected = tau ** 2 * (0.5 * inter + 3.0 * intra)
    assert float(dist_loss(zs, zt, tau, beta=0.5, gamma=3.0)) == pytest.approx(expected, rel=1e-12)


def test_standardized_logits_match_their_loop():
    g = torch.Generator().manual_seed(6)
    z = 5 * torch.randn(3, 7, generator=g, dtype=torch.float64)
    for i in range(3):
        row = [float(v) for v in z[i]]
        mean = sum(row) / 7
        std = math.sqrt(sum((v - mean) ** 2 for v in row) / 6)  # Bessel's correction
        expected = [(v - mean) / (1e-7 + std) for v in row]
        assert standardize_logits(z)[i].tolist() == pytest.approx(expected, rel=1e-12)
    assert standardize_logits((z * 100 + 3).float()).dtype == torch.float32  # invariant to scale and shift
    torch.testing.assert_close(standardize_logits(z * 100 + 3), standardize_logits(z), rtol=1e-6, atol=1e-6)


def test_vid_matches_repdistillers_own_loss():
    """VID against RepDistiller's VIDLoss, one per stage and summed as its train_student.py does, on the
    same float64 maps and the regressors it initialised (recorded by scripts/record_relation_fixture.py):
    loss, the gradients of the student's maps and of every regressor parameter, variance scale included."""
    from lwsupcrd.connectors import VIDRegressor

    f = RELATION_FIXTURE["vid"]
    regressors = []
    for s, t, state in zip(f["student"], f["teacher"], f["state"]):
        r = VIDRegressor(s.shape[1], t.shape[1], t.shape[1]).double()
        r.load_state_dict(state)
        regressors.append(r)
    student = [x.clone().requires_grad_(True) for x in f["student"]]
    loss = vid_loss(student, f["teacher"], regressors, [r.log_scale for r in regressors])
    torch.testing.assert_close(loss.detach(), f["loss"], rtol=1e-10, atol=0)
    params = [p for r in regressors for p in r.parameters()]
    grads = torch.autograd.grad(loss, student + params)
    for ours, theirs in zip(grads, f["grads"] + f["param_grads"], strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-14)


def test_vid_matches_its_loop_and_starts_at_variance_five():
    from lwsupcrd.connectors import VIDRegressor

    g = torch.Generator().manual_seed(8)
    f_s, f_t = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64), torch.randn(2, 2, 2, 2, generator=g, dtype=torch.float64)
    scale = torch.randn(2, generator=g, dtype=torch.float64)
    weight = torch.randn(2, 3, generator=g, dtype=torch.float64)
    mu = lambda x: torch.einsum("oc,bchw->bohw", weight, x)  # noqa: E731 - a linear regressor, for the loop
    pooled = [[[sum(float(f_s[b, c, 2 * h + i, 2 * w + j]) for i in range(2) for j in range(2)) / 4 for w in range(2)]
               for h in range(2)] for c in range(3) for b in [0, 1]]
    total, count = 0.0, 0
    for b in range(2):
        for o in range(2):
            var = math.log(1 + math.exp(float(scale[o]))) + 1e-5
            for h in range(2):
                for w in range(2):
                    mean = sum(float(weight[o, c]) * pooled[c * 2 + b][h][w] for c in range(3))
                    total += 0.5 * ((mean - float(f_t[b, o, h, w])) ** 2 / var + math.log(var))
                    count += 1
    assert float(vid_loss([f_s], [f_t], [mu], [scale])) == pytest.approx(total / count, rel=1e-12)
    r = VIDRegressor(3, 4, 4)
    assert torch.allclose(torch.log(1 + torch.exp(r.log_scale)) + 1e-5, torch.full((4,), 5.0))


def test_two_stage_objectives_match_their_loops():
    """AB's hinge, FT's factor distance and FSP's matrices against loops over every element."""
    g = torch.Generator().manual_seed(9)
    s = [torch.randn(2, 2, 2, 2, generator=g, dtype=torch.float64) * 2 for _ in range(2)]
    t = [torch.randn(2, 2, 2, 2, generator=g, dtype=torch.float64) for _ in range(2)]
    total = 0.0
    for stage in range(2):
        for v, w in zip(s[stage].flatten().tolist(), t[stage].flatten().tolist()):
            hinge = (v + 1) ** 2 * (v > -1 and w <= 0) + (v - 1) ** 2 * (v <= 1 and w > 0)
            total += 2.0 ** (stage - 1) * hinge / 2 / 1000 * 3
    assert float(ab_loss(s, t)) == pytest.approx(total, rel=1e-12)

    def factor(x):  # (C, H, W) -> the normalised mean of squares over channels
        q = [sum(float(x[c, h, w]) ** 2 for c in range(x.shape[0])) / x.shape[0]
             for h in range(x.shape[1]) for w in range(x.shape[2])]
        norm = math.sqrt(sum(v * v for v in q))
        return [v / norm for v in q]

    f_s, f_t = torch.randn(2, 3, 2, 2, generator=g, dtype=torch.float64), torch.randn(2, 3, 2, 2, generator=g, dtype=torch.float64)
    expected = sum(abs(a - b) for i in range(2) for a, b in zip(factor(f_s[i]), factor(f_t[i]))) / 8
    assert float(factor_loss(f_s, f_t)) == pytest.approx(expected, rel=1e-12)

    def fsp(bottom, top):  # (C1, H, W), (C2, H, W) -> [[mean_hw top_j bottom_i for i] for j]
        n = bottom.shape[1] * bottom.shape[2]
        return [[sum(float(top[j].flatten()[k]) * float(bottom[i].flatten()[k]) for k in range(n)) / n
                 for i in range(bottom.shape[0])] for j in range(top.shape[0])]

    stages = [[torch.randn(2, c, 2, 2, generator=g, dtype=torch.float64) for c in (2, 3)] for _ in range(2)]
    expected = 0.0
    for i in range(2):
        g_s, g_t = fsp(stages[0][0][i], stages[0][1][i]), fsp(stages[1][0][i], stages[1][1][i])
        expected += sum((a - b) ** 2 for ra, rb in zip(g_s, g_t) for a, b in zip(ra, rb)) / (2 * 3 * 2)
    assert float(fsp_loss(stages[0], stages[1])) == pytest.approx(expected, rel=1e-12)


def test_hcl_matches_its_loop():
    """ReviewKD's hierarchical context loss against an element loop: per level the full-size MSE and
    the 4x4, 2x2, 1x1 poolings smaller than the map, weighted 1/2, 1/4, 1/8, normalised by the sum."""
    g = torch.Generator().manual_seed(3)
    s = [torch.randn(2, 3, h, h, generator=g, dtype=torch.float64) for h in (8, 4, 1)]
    t = [torch.randn(2, 3, h, h, generator=g, dtype=torch.float64) for h in (8, 4, 1)]

    def mse(a, b):
        return sum((x - y) ** 2 for x, y in zip(a.flatten().tolist(), b.flatten().tolist())) / a.numel()

    def pool(x, size):  # an average over equal blocks (the sizes divide)
        k = x.shape[2] // size
        return torch.tensor([[[[x[n, c, i * k:(i + 1) * k, j * k:(j + 1) * k].mean() for j in range(size)]
                               for i in range(size)] for c in range(x.shape[1])] for n in range(x.shape[0])])

    expected = 0.0
    for f_s, f_t in zip(s, t):
        terms, weights = [(1.0, mse(f_s, f_t))], [1.0]
        for k, size in enumerate(l for l in (4, 2, 1) if l < f_s.shape[2]):
            terms.append((0.5 ** (k + 1), mse(pool(f_s, size), pool(f_t, size))))
        expected += sum(w * v for w, v in terms) / sum(w for w, _ in terms)
    assert float(hcl_loss(s, t)) == pytest.approx(expected, rel=1e-12)


def test_reviewkd_matches_mdistillers_own_code():
    """mdistiller's ReviewKD `forward_train` on a fixture (scripts/record_reviewkd_fixture.py): its
    ABFs' state loads into `ReviewFusion` key for key; the loss at epoch 5 (inside the 20-epoch
    warm-up) and 25, and the gradients of the student's features and of every ABF parameter, agree."""
    from helpers import ROOT
    from lwsupcrd.checkpoint import safe_load
    from lwsupcrd.connectors import ReviewFusion

    fx = safe_load(ROOT / "tests" / "fixtures" / "reviewkd.pt")
    c = fx["config"]
    assert fx["commit"] == "a08d46f" and c["STU_PREACT"] is False and c["MAX_MID_CHANNEL"] == 512
    fusion = ReviewFusion(c["IN_CHANNELS"], c["OUT_CHANNELS"], c["SHAPES"], c["OUT_SHAPES"]).double().train()
    fusion.load_state_dict({"abfs." + k: v for k, v in fx["state"].items()}, strict=True)  # mdistiller's `abfs`
    student = [x.clone().requires_grad_() for x in fx["student"] + [fx["student_pooled"]]]
    teacher = fx["teacher"] + [fx["teacher_pooled"][:, :, None, None]]

    def loss(epoch):  # the term as `terms._review` weights it: b x min(epoch / warm-up, 1), epochs from 1
        maps = student[:-1] + [student[-1][:, :, None, None]]
        return c["REVIEWKD_WEIGHT"] * min(epoch / c["WARMUP_EPOCHS"], 1.0) * hcl_loss(fusion(maps), teacher)

    torch.testing.assert_close(loss(5), fx["loss_epoch5"], rtol=1e-10, atol=0)
    late = loss(25)
    torch.testing.assert_close(late, fx["loss_epoch25"], rtol=1e-10, atol=0)
    names = [n for n, _ in fusion.named_parameters()]
    grads = torch.autograd.grad(late, student + [p for _, p in fusion.named_parameters()])
    for ours, theirs in zip(grads[:len(student)], fx["grads"], strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-12)
    theirs = {"abfs." + k: v for k, v in fx["param_grads"].items()}
    assert set(names) == set(theirs)
    for name, ours in zip(names, grads[len(student):]):
        torch.testing.assert_close(ours, theirs[name], rtol=1e-9, atol=1e-12, msg=name)

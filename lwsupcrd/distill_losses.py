"""The distillation literature's own terms, as pure functions of tensors: CRD's NCE objective
(Tian et al., ICLR 2020), DKD (Zhao et al., CVPR 2022), FitNet's hint (Romero et al., ICLR 2015),
attention transfer (Zagoruyko & Komodakis, ICLR 2017), similarity preservation (Tung & Mori, ICCV
2019), the relation terms the CRD benchmark runs (PKT, RKD, NST, CC and VID), the objectives of its
two-stage methods (AB, FT, FSP), DIST (Huang et al., NeurIPS 2022) and logit standardization (Sun et
al., CVPR 2024). Each is written from its paper's equations, in the form the benchmark's code
computes it; the tests check each against a float64 loop of the same equations, and against its
reference's own code on a recorded fixture: RepDistiller's for CRD, PKT, RKD, NST, CC, VID, AB, FT
and FSP; DIST's and logit standardization's authors' for theirs.

Like `losses.py`, each computes in float32 (float64 stays float64) with autocast off, and the
teacher's side carries no gradient (except CC's trained teacher embedding).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

NCE_EPS = 1e-7  # CRD's constant in the NCE denominators


def _dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def nce_scores(anchors: torch.Tensor, keys: torch.Tensor, temperature: float) -> torch.Tensor:
    r"""exp(<a_i, k_ij> / tau) for anchors (B, D) and their keys (B, K+1, D): (B, K+1)."""
    with torch.autocast(anchors.device.type, enabled=False):
        dtype = _dtype(anchors)
        s = torch.bmm(keys.to(dtype), anchors.to(dtype)[:, :, None]).squeeze(2)  # (B, K+1)
        return torch.exp(s / temperature)


def nce_normaliser(scores: torch.Tensor, n_data: int) -> float:
    r"""CRD's Z, estimated once on the first batch and then fixed: Z = N * mean_ij exp(s_ij / tau),
    so that exp(s / tau) / Z is near the uniform noise probability 1/N at the start."""
    return float(scores.detach().mean()) * n_data


def nce_loss(scores: torch.Tensor, z: float | torch.Tensor, n_data: int) -> torch.Tensor:
    r"""CRD's NCE objective (Tian et al., 2020, eq. 18) for one direction. With the positive in
    column 0 and K negatives after it, P_ij = exp(s_ij / tau) / Z, m = K and noise P_n = 1/N:

        L = -(1/B) sum_i [ log(P_i0 / (P_i0 + m P_n + eps))
                           + sum_{j=1..K} log(m P_n / (P_ij + m P_n + eps)) ]

    the binary classification of the positive against K noise samples, eps = NCE_EPS.
    """
    with torch.autocast(scores.device.type, enabled=False):
        p = scores.to(_dtype(scores)) / z
        m = p.shape[1] - 1
        noise = m / n_data
        log_d1 = torch.log(p[:, 0] / (p[:, 0] + noise + NCE_EPS))
        log_d0 = torch.log(noise / (p[:, 1:] + noise + NCE_EPS))
        return -(log_d1.sum() + log_d0.sum()) / p.shape[0]


def dkd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
             alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0) -> torch.Tensor:
    r"""Decoupled knowledge distillation (Zhao et al., 2022). With p = softmax(logits / T), the
    binary split b = (p_y, 1 - p_y) of the target class against the rest, and the distribution
    p_hat over the non-target classes alone (softmax of the other logits / T):

        TCKD = KL(b^T || b^S),   NCKD = KL(p_hat^T || p_hat^S)
        L_DKD = T^2 (alpha TCKD + beta NCKD), averaged over the images.
    """
    with torch.autocast(student_logits.device.type, enabled=False):
        dtype = _dtype(student_logits)
        s, t = student_logits.to(dtype) / temperature, teacher_logits.detach().to(dtype) / temperature
        target = F.one_hot(labels, s.shape[1]).bool()
        p_s, p_t = F.softmax(s, 1), F.softmax(t, 1)
        b_s = torch.stack([p_s[target], (p_s * ~target).sum(1)], 1)
        b_t = torch.stack([p_t[target], (p_t * ~target).sum(1)], 1)
        tckd = (b_t * (torch.log(b_t) - torch.log(b_s))).sum(1)
        very_negative = torch.finfo(dtype).min
        log_q_s = F.log_softmax(s.masked_fill(target, very_negative), 1)
        log_q_t = F.log_softmax(t.masked_fill(target, very_negative), 1)
        nckd = torch.where(target, 0.0, log_q_t.exp() * (log_q_t - log_q_s)).sum(1)
        return (alpha * tckd + beta * nckd).mean() * temperature ** 2


def hint_loss(student_hint: torch.Tensor, teacher_hint: torch.Tensor) -> torch.Tensor:
    r"""FitNet's hint (Romero et al., 2015): the mean squared error between the regressed student
    feature map r(F^S) (already regressed to the teacher's shape) and the teacher's F^T,

        L_hint = mean over images, channels and positions of (r(F^S) - F^T)^2.
    """
    with torch.autocast(student_hint.device.type, enabled=False):
        dtype = _dtype(student_hint)
        return F.mse_loss(student_hint.to(dtype), teacher_hint.detach().to(dtype))


def _same_size(student_stages: list[torch.Tensor], teacher_stages: list[torch.Tensor]):
    """Each pair of stage outputs in the computing dtype, the larger map average-pooled to the smaller's size."""
    dtype = _dtype(student_stages[0])
    for f_s, f_t in zip(student_stages, teacher_stages, strict=True):
        f_s, f_t = f_s.to(dtype), f_t.detach().to(dtype)
        size = min(f_s.shape[2], f_t.shape[2])
        yield F.adaptive_avg_pool2d(f_s, size), F.adaptive_avg_pool2d(f_t, size)


def attention_map(feature: torch.Tensor, p: int = 2) -> torch.Tensor:
    r"""Q = vec(mean_c |F_c|^p) / ||vec(mean_c |F_c|^p)||_2 for a feature map (B, C, H, W): (B, H W)."""
    return F.normalize(feature.pow(p).mean(1).flatten(1), dim=1)


def attention_loss(student_stages: list[torch.Tensor], teacher_stages: list[torch.Tensor],
                   p: int = 2) -> torch.Tensor:
    r"""Attention transfer (Zagoruyko & Komodakis, 2017), as the CRD benchmark runs it: for each
    pair of stage outputs, the larger map average-pooled to the smaller's size,

        L_AT = sum_stages mean over images and positions of (Q^S - Q^T)^2.
    """
    with torch.autocast(student_stages[0].device.type, enabled=False):
        return sum((attention_map(f_s, p) - attention_map(f_t, p)).pow(2).mean()
                   for f_s, f_t in _same_size(student_stages, teacher_stages))


def similarity_loss(student_map: torch.Tensor, teacher_map: torch.Tensor) -> torch.Tensor:
    r"""Similarity-preserving distillation (Tung & Mori, ICCV 2019). With F (B, C H W) a stage's
    output flattened per image and G = row_normalise(F F^T) (each row of the B x B similarity
    matrix scaled to unit L2 norm),

        L_SP = (1 / B^2) || G^T - G^S ||_F^2.
    """
    with torch.autocast(student_map.device.type, enabled=False):
        dtype = _dtype(student_map)
        f_s, f_t = student_map.to(dtype).flatten(1), teacher_map.detach().to(dtype).flatten(1)
        g_s, g_t = F.normalize(f_s @ f_s.T, dim=1), F.normalize(f_t @ f_t.T, dim=1)
        return (g_t - g_s).pow(2).sum() / f_s.shape[0] ** 2


def _unit_rows(x: torch.Tensor, eps: float) -> torch.Tensor:
    x = x / (x.pow(2).sum(1, keepdim=True).sqrt() + eps)
    return torch.where(torch.isnan(x), torch.zeros_like(x), x)


def pkt_loss(student_features: torch.Tensor, teacher_features: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    r"""Probabilistic knowledge transfer (Passalis & Tefas, ECCV 2018), as its authors' code computes
    it: with x' = x / (||x||_2 + eps) per image, the kernel K_ij = (x'_i . x'_j + 1) / 2 over the batch
    turned into conditional distributions P_ij = K_ij / sum_k K_ik, for the student's (S) and the
    teacher's (T) pooled features,

        L_PKT = mean over i, j of P^T_ij log((P^T_ij + eps) / (P^S_ij + eps)).
    """
    with torch.autocast(student_features.device.type, enabled=False):
        dtype = _dtype(student_features)
        p = []
        for f in (student_features.to(dtype).flatten(1), teacher_features.detach().to(dtype).flatten(1)):
            f = _unit_rows(f, eps)
            k = (f @ f.T + 1.0) / 2.0
            p.append(k / k.sum(1, keepdim=True))
        p_s, p_t = p
        return (p_t * torch.log((p_t + eps) / (p_s + eps))).mean()


def _distances(e: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """||e_i - e_j||_2 from the expanded square (clamped at eps), with a zero diagonal."""
    squares = e.pow(2).sum(1)
    d = (squares[:, None] + squares[None, :] - 2 * e @ e.T).clamp(min=eps).sqrt()
    return d * (1 - torch.eye(len(e), dtype=d.dtype, device=d.device))


def _angles(e: torch.Tensor) -> torch.Tensor:
    """cos of the angle at e_i between e_j and e_k, for every (i, j, k), flattened."""
    diff = F.normalize(e[None, :, :] - e[:, None, :], p=2, dim=2)
    return torch.bmm(diff, diff.transpose(1, 2)).flatten()


def rkd_loss(student_features: torch.Tensor, teacher_features: torch.Tensor, distance_weight: float = 25.0,
             angle_weight: float = 50.0) -> torch.Tensor:
    r"""Relational knowledge distillation (Park et al., CVPR 2019), distance and angle terms as the CRD
    benchmark's code runs them: with d_ij = ||f_i - f_j|| / mean of the non-zero distances, and the
    angle potential a_ijk = <(f_j - f_i)/||f_j - f_i||, (f_k - f_i)/||f_k - f_i||>,

        L_RKD = w_d mean_ij huber(d^S_ij, d^T_ij) + w_a mean_ijk huber(a^S_ijk, a^T_ijk),

    with huber the smooth L1 (threshold 1) on the pooled features.
    """
    with torch.autocast(student_features.device.type, enabled=False):
        dtype = _dtype(student_features)
        s, t = student_features.to(dtype).flatten(1), teacher_features.detach().to(dtype).flatten(1)
        d_t, d_s = _distances(t), _distances(s)
        d_t, d_s = d_t / d_t[d_t > 0].mean(), d_s / d_s[d_s > 0].mean()
        return (distance_weight * F.smooth_l1_loss(d_s, d_t)
                + angle_weight * F.smooth_l1_loss(_angles(s), _angles(t)))


def nst_loss(student_stages: list[torch.Tensor], teacher_stages: list[torch.Tensor]) -> torch.Tensor:
    r"""Neuron selectivity transfer (Huang & Wang, 2017) with the squared polynomial kernel, as the
    CRD benchmark runs it: for each pair of stage outputs, the larger map average-pooled to the
    smaller's size, each channel's map flattened and L2-normalised (f_c), k(a, b) = (a . b)^2 and

        L_NST = sum_stages mean k(f^T, f^T) + mean k(f^S, f^S) - 2 mean k(f^S, f^T),

    each mean over images and channel pairs (the teacher-only term carries no gradient).
    """
    def kernel_mean(a, b):
        return (a @ b.transpose(1, 2)).pow(2).mean()

    with torch.autocast(student_stages[0].device.type, enabled=False):
        total = 0
        for f_s, f_t in _same_size(student_stages, teacher_stages):
            f_s, f_t = F.normalize(f_s.flatten(2), dim=2), F.normalize(f_t.flatten(2), dim=2)
            total = total + kernel_mean(f_t, f_t) + kernel_mean(f_s, f_s) - 2 * kernel_mean(f_t, f_s)
        return total


def correlation_loss(student_embedding: torch.Tensor, teacher_embedding: torch.Tensor) -> torch.Tensor:
    r"""Correlation congruence (Peng et al., ICCV 2019) in the form its authors' code gives the CRD
    benchmark: with delta_i = |e^S_i - e^T_i| the absolute difference of the two linear embeddings of
    image i (both trained, so the teacher's embedding gets a gradient too),

        L_CC = mean over consecutive images i of sum_d delta_{i,d} delta_{i+1,d}.
    """
    with torch.autocast(student_embedding.device.type, enabled=False):
        dtype = _dtype(student_embedding)
        delta = (student_embedding.to(dtype) - teacher_embedding.to(dtype)).abs()
        return (delta[:-1] * delta[1:]).sum(1).mean()


def standardize_logits(logits: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    r"""Logit standardization (Sun et al., CVPR 2024), the Z-score of each image's logits over the
    classes before the softmax of a logit-based distillation:

        Z(z) = (z - mean(z)) / (eps + std(z)),   std with Bessel's correction (over C - 1), eps = 1e-7.
    """
    with torch.autocast(logits.device.type, enabled=False):
        z = logits.to(_dtype(logits))
        return (z - z.mean(dim=1, keepdim=True)) / (eps + z.std(dim=1, keepdim=True))


def _pearson_rows(a: torch.Tensor, b: torch.Tensor, eps: float) -> torch.Tensor:
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def dist_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, tau: float = 4.0, beta: float = 1.0,
              gamma: float = 1.0, eps: float = 1e-8) -> torch.Tensor:
    r"""DIST (Huang et al., NeurIPS 2022): with Y = softmax(Z / tau) for both networks (B images x C
    classes) and rho(u, v) = <u - mean u, v - mean v> / (|u - mean u| |v - mean v| + eps) the
    Pearson correlation,

        L_inter = 1 - (1/B) sum_i rho(Y^S_i., Y^T_i.)     (each image's class distribution)
        L_intra = 1 - (1/C) sum_c rho(Y^S_.c, Y^T_.c)     (each class's scores across the batch)
        L_DIST = tau^2 (beta L_inter + gamma L_intra),   eps = 1e-8.
    """
    with torch.autocast(student_logits.device.type, enabled=False):
        dtype = _dtype(student_logits)
        y_s = F.softmax(student_logits.to(dtype) / tau, 1)
        y_t = F.softmax(teacher_logits.detach().to(dtype) / tau, 1)
        inter = 1 - _pearson_rows(y_s, y_t, eps).mean()
        intra = 1 - _pearson_rows(y_s.T, y_t.T, eps).mean()
        return tau ** 2 * (beta * inter + gamma * intra)


def vid_loss(student_stages: list[torch.Tensor], teacher_stages: list[torch.Tensor], regressors: list,
             log_scales: list[torch.Tensor], eps: float = 1e-5) -> torch.Tensor:
    r"""Variational information distillation (Ahn et al., CVPR 2019) on the stages between the stem and
    the pooling, as RepDistiller computes it: for each stage l, the larger map average-pooled to the
    smaller's size, a regressor mu_l of the student's map (`connectors.VIDRegressor`) is the mean of a
    Gaussian over the teacher's map with a variance per channel c, sigma_lc^2 = log(1 + exp(s_lc)) + eps:

        L_VID = sum_l mean over images, channels, positions of
                0.5 ((mu_l(F^S_l) - F^T_l)^2 / sigma_l^2 + log sigma_l^2),   eps = 1e-5.
    """
    with torch.autocast(student_stages[0].device.type, enabled=False):
        total = 0.0
        for (f_s, f_t), mu, s in zip(_same_size(student_stages, teacher_stages), regressors, log_scales, strict=True):
            var = (torch.log(1.0 + torch.exp(s.to(f_s.dtype))) + eps).view(1, -1, 1, 1)
            total = total + (0.5 * ((mu(f_s) - f_t) ** 2 / var + torch.log(var))).mean()
        return total


def factor_loss(student_factor: torch.Tensor, teacher_factor: torch.Tensor) -> torch.Tensor:
    r"""Factor transfer (Kim et al., NeurIPS 2018), as RepDistiller computes it between the student's
    translated map and the teacher's paraphrased factor, the larger map average-pooled to the
    smaller's size: with Q(F) = vec(mean_c F_c^2) / ||vec(mean_c F_c^2)||_2 (the attention map, p = 2),

        L_FT = mean over images and positions of |Q(F^S) - Q(F^T)|.
    """
    with torch.autocast(student_factor.device.type, enabled=False):
        (f_s, f_t), = _same_size([student_factor], [teacher_factor])
        return (attention_map(f_s, 2) - attention_map(f_t, 2)).abs().mean()


def fsp_matrices(stages: list[torch.Tensor]) -> list[torch.Tensor]:
    r"""The flow of solution procedure between consecutive feature maps (Yim et al., CVPR 2017): for
    F_l (B, C_l, H, W) and F_{l+1} (B, C_{l+1}, H, W), the larger map average-pooled to the smaller's
    size, G_l[b, j, i] = mean over positions of F_l[b, i] F_{l+1}[b, j], shape (B, C_{l+1}, C_l)."""
    out = []
    for bottom, top in zip(stages[:-1], stages[1:]):
        size = min(bottom.shape[2], top.shape[2])
        bottom, top = F.adaptive_avg_pool2d(bottom, size), F.adaptive_avg_pool2d(top, size)
        out.append(torch.einsum("bihw,bjhw->bji", bottom, top) / (size * size))
    return out


def fsp_loss(student_stages: list[torch.Tensor], teacher_stages: list[torch.Tensor]) -> torch.Tensor:
    r"""FSP's initialisation objective, as RepDistiller sums it over the feature maps before the
    pooling (equal channels in both networks): L_FSP = sum_l mean of (G^S_l - G^T_l)^2 (`fsp_matrices`)."""
    with torch.autocast(student_stages[0].device.type, enabled=False):
        dtype = _dtype(student_stages[0])
        s = fsp_matrices([f.to(dtype) for f in student_stages])
        t = fsp_matrices([f.detach().to(dtype) for f in teacher_stages])
        return sum((g_s - g_t).pow(2).mean() for g_s, g_t in zip(s, t, strict=True))


def ab_loss(student_preacts: list[torch.Tensor], teacher_preacts: list[torch.Tensor],
            margin: float = 1.0) -> torch.Tensor:
    r"""Activation-boundary transfer (Heo et al., AAAI 2019), RepDistiller's initialisation objective
    for AB: with s the student's pre-activation through its connector, t the teacher's, stage l of n
    weighted w_l = 2^(l - n + 1) (l from 0), B images and m = 1,

        L_AB = sum_l w_l (3 / 1000) / B * sum over elements of
               (s + m)^2 [s > -m and t <= 0] + (s - m)^2 [s <= m and t > 0].
    """
    with torch.autocast(student_preacts[0].device.type, enabled=False):
        n, total = len(student_preacts), 0.0
        for l, (s, t) in enumerate(zip(student_preacts, teacher_preacts, strict=True)):
            s, t = s.to(_dtype(s)), t.detach()
            hinge = (s + margin) ** 2 * ((s > -margin) & (t <= 0)) + (s - margin) ** 2 * ((s <= margin) & (t > 0))
            total = total + 2.0 ** (l - n + 1) * hinge.sum() / s.shape[0] / 1000 * 3
        return total


def hcl_loss(student_maps: list[torch.Tensor], teacher_maps: list[torch.Tensor]) -> torch.Tensor:
    r"""ReviewKD's hierarchical context loss (Chen et al., CVPR 2021, as mdistiller computes it)
    between the review path's outputs and the teacher's maps of the same shapes: per level, the mean
    squared error at full size and, for each l in (4, 2, 1) smaller than the map's height H, at the
    l x l average pooling, weighted 1/2, 1/4, ... in that order, and normalised by the weights' sum:

        L_HCL = sum_levels (MSE(F^S, F^T) + sum_k 2^-k MSE(P_k F^S, P_k F^T)) / (1 + sum_k 2^-k).
    """
    with torch.autocast(student_maps[0].device.type, enabled=False):
        total = 0.0
        for f_s, f_t in zip(student_maps, teacher_maps, strict=True):
            f_s, f_t = f_s.to(_dtype(f_s)), f_t.detach().to(_dtype(f_s))
            loss, weight, weights = F.mse_loss(f_s, f_t), 1.0, 1.0
            for size in (l for l in (4, 2, 1) if l < f_s.shape[2]):
                weight /= 2.0
                loss = loss + weight * F.mse_loss(F.adaptive_avg_pool2d(f_s, size), F.adaptive_avg_pool2d(f_t, size))
                weights += weight
            total = total + loss / weights
        return total

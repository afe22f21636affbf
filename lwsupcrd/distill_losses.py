"""The distillation literature's own terms, as pure functions of tensors: CRD's NCE objective
(Tian et al., ICLR 2020), DKD (Zhao et al., CVPR 2022), FitNet's hint (Romero et al., ICLR 2015),
attention transfer (Zagoruyko & Komodakis, ICLR 2017) and similarity preservation (Tung & Mori,
ICCV 2019). Each is written from its paper's
equations; the tests check each against a float64 loop of the same equations, and CRD's against
one step of RepDistiller's own `CRDLoss` (a recorded fixture).

Like `losses.py`, each computes in float32 (float64 stays float64) with autocast off, and the
teacher's side carries no gradient.
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
        dtype = _dtype(student_stages[0])
        total = 0
        for f_s, f_t in zip(student_stages, teacher_stages, strict=True):
            f_s, f_t = f_s.to(dtype), f_t.detach().to(dtype)
            size = min(f_s.shape[2], f_t.shape[2])
            f_s, f_t = F.adaptive_avg_pool2d(f_s, size), F.adaptive_avg_pool2d(f_t, size)
            total = total + (attention_map(f_s, p) - attention_map(f_t, p)).pow(2).mean()
        return total


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

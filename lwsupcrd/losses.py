"""The contrastive losses, and the standard protocol's KD term and student objective, as pure
functions of tensors.

Notation (docs/method.md uses the same symbols): anchors are student projections `z` (N, D),
keys are teacher projections `t` (N, D), optionally followed by K bank keys (K, D);
`s_ij = <z_i, k_j> / tau`. Every loss

* returns a scalar tensor and has no Python loop over samples;
* computes in float32 (float64 stays float64) with autocast switched off, so bf16/fp16
  training does not change its value beyond the precision of its inputs;
* builds each denominator as a log-sum-exp over a mask. Masked-out entries are set to the
  most negative finite float instead of -inf, so an empty sum gives a finite (huge negative)
  log that contributes exactly 0 to the loss and 0 to the gradient, never NaN.

`validate=False` skips the value checks that need a host synchronisation (finite inputs,
label ranges); the training loop uses it on CUDA, where it checks the loss itself per epoch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _masked_logsumexp(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log sum_j exp(x_ij) over the j where mask_ij, per row; an empty row gives ~finfo.min."""
    very_negative = torch.finfo(x.dtype).min
    return torch.logsumexp(torch.where(mask, x, very_negative), dim=1)


def _check_embeddings(name: str, x: torch.Tensor, n: int | None = None, d: int | None = None,
                      device: torch.device | None = None) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        raise ValueError(f"{name} must be a 2-D tensor (rows, dim), got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {x.dtype}")
    if n is not None and x.shape[0] != n:
        raise ValueError(f"{name} has {x.shape[0]} rows, expected {n}")
    if d is not None and x.shape[1] != d:
        raise ValueError(f"{name} has dimension {x.shape[1]}, expected {d}")
    if device is not None and x.device != device:
        raise ValueError(f"{name} is on {x.device}, expected {device}")


def _check_vector(name: str, v: torch.Tensor, n: int, device: torch.device) -> None:
    if not isinstance(v, torch.Tensor) or v.dim() != 1 or v.shape[0] != n:
        raise ValueError(f"{name} must be a 1-D tensor of length {n}, got "
                         f"{tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__}")
    if v.is_floating_point():
        raise ValueError(f"{name} must hold integers, got {v.dtype}")
    if v.device != device:
        raise ValueError(f"{name} is on {v.device}, expected {device}")


def _check_finite(**tensors: torch.Tensor | None) -> None:
    for name, x in tensors.items():
        if x is not None and not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} contains non-finite values")


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def supcon_loss(z: torch.Tensor, labels: torch.Tensor, temperature: float = 0.07,
                validate: bool = True) -> torch.Tensor:
    r"""Supervised contrastive loss (Khosla et al., NeurIPS 2020), contrast mode "all".

    `z` (N, D) holds every view of every image (N = views x batch), `labels` (N,) their classes.
    With s = z z^T / tau, P(i) = {p != i : y_p = y_i} and A(i) = {a != i}:

        L_i = -(1/|P(i)|) sum_{p in P(i)} [ s_ip - log sum_{a in A(i)} exp(s_ia) ]

    The loss is the mean of L_i over the anchors with |P(i)| >= 1, and 0 (still attached to
    the graph, so backward() works) when no anchor has a positive.
    """
    _check_embeddings("z", z)
    n = z.shape[0]
    _check_vector("labels", labels, n, z.device)
    _check_temperature(temperature)
    if validate:
        _check_finite(z=z)
    with torch.autocast(z.device.type, enabled=False):
        z = z.to(_compute_dtype(z))
        s = z @ z.T / temperature  # (N, N)
        not_self = ~torch.eye(n, dtype=torch.bool, device=z.device)
        positives = (labels[:, None] == labels[None, :]) & not_self
        log_prob = s - _masked_logsumexp(s, not_self)[:, None]
        num_pos = positives.sum(1)
        per_anchor = -torch.where(positives, log_prob, 0.0).sum(1) / num_pos.clamp_min(1)
        has_pos = num_pos > 0
        return (per_anchor * has_pos).sum() / has_pos.sum().clamp_min(1)


def crd_loss(z: torch.Tensor, t: torch.Tensor, instance_ids: torch.Tensor, temperature: float = 0.07,
             bank_keys: torch.Tensor | None = None, bank_ids: torch.Tensor | None = None,
             validate: bool = True, labels: torch.Tensor | None = None,
             bank_labels: torch.Tensor | None = None) -> torch.Tensor:
    r"""Our InfoNCE form of contrastive representation distillation (after Tian et al., ICLR 2020,
    whose published NCE objective is `distill_losses.nce_loss`): in-batch instance matching of
    student anchors `z` (N, D) against teacher keys `t` (N, D), plus optional bank keys.

    P(i) = batch keys j with instance_ids[j] == instance_ids[i] (j = i included: the teacher key
    of the same view, and of the image's other view). N(i) = batch keys of other instances plus
    the bank keys whose `bank_ids` differ from instance_ids[i].

        L_i = -(1/|P(i)|) sum_{p in P(i)} log( exp(s_ip) / (exp(s_ip) + sum_{n in N(i)} exp(s_in)) )

    computed as softplus(logsumexp_{n in N(i)} s_in - s_ip). Loss = mean over all i. With `labels`
    (and `bank_labels` beside a bank), the class-aware variant: keys of the anchor's class are left
    out of N(i), as the published CRD's sampler leaves them out of its negatives.
    """
    _check_embeddings("z", z)
    n, d = z.shape
    _check_embeddings("t", t, n, d, z.device)
    _check_vector("instance_ids", instance_ids, n, z.device)
    _check_temperature(temperature)
    if (bank_keys is None) != (bank_ids is None):
        raise ValueError("bank_keys and bank_ids must be given together")
    if bank_keys is not None:
        _check_embeddings("bank_keys", bank_keys, d=d, device=z.device)
        _check_vector("bank_ids", bank_ids, bank_keys.shape[0], z.device)
    if labels is not None:
        _check_vector("labels", labels, n, z.device)
        if bank_keys is not None:
            _check_vector("bank_labels", bank_labels, bank_keys.shape[0], z.device)
    if validate:
        _check_finite(z=z, t=t, bank_keys=bank_keys)
    with torch.autocast(z.device.type, enabled=False):
        dtype = _compute_dtype(z)
        z, t = z.to(dtype), t.to(dtype)
        s_batch = z @ t.T / temperature  # (N, N)
        same = instance_ids[:, None] == instance_ids[None, :]
        s_all, neg_mask = s_batch, ~same
        if labels is not None:
            neg_mask = neg_mask & (labels[:, None] != labels[None, :])
        if bank_keys is not None:
            s_all = torch.cat([s_batch, z @ bank_keys.to(dtype).T / temperature], dim=1)  # (N, N+K)
            bank_neg = instance_ids[:, None] != bank_ids[None, :]
            if labels is not None:
                bank_neg = bank_neg & (labels[:, None] != bank_labels[None, :])
            neg_mask = torch.cat([neg_mask, bank_neg], dim=1)
        neg_lse = _masked_logsumexp(s_all, neg_mask)  # (N,)
        l_ip = F.softplus(neg_lse[:, None] - s_batch)  # (N, N): -log of the positive's share
        per_anchor = torch.where(same, l_ip, 0.0).sum(1) / same.sum(1)
        return per_anchor.mean()


def _check_lw_inputs(z, t, labels, teacher_probs, temperature, alpha) -> tuple[int, int]:
    _check_embeddings("z", z)
    n, d = z.shape
    _check_embeddings("t", t, n, d, z.device)
    _check_vector("labels", labels, n, z.device)
    _check_embeddings("teacher_probs", teacher_probs, n, device=z.device)
    _check_temperature(temperature)
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    return n, d


ALPHA_MODES = ("weight", "logit")


ADAPTIVE_BETA_OFFSET = 0.5


def onehot_teacher_beta(beta: float) -> float:
    r"""The push weight LW-SupCRD (adaptive beta) gives every negative when the teacher's probabilities
    are the one-hot labels: q_i = 1 and p_i[y_n] = 0, so w_pull_i = alpha and

        w_push_in = beta / (1 + 0.5)

    for every anchor and negative. Unweighted SupCRD at (alpha, this beta) is LW-SupCRD with the
    teacher's soft probabilities taken out and the strength of its pull and push kept.
    """
    return beta / (1 + ADAPTIVE_BETA_OFFSET)


def lw_weights(teacher_probs: torch.Tensor, labels: torch.Tensor, key_labels: torch.Tensor, alpha: float,
               beta: float, adaptive_beta: bool = True, logit_weighting: bool = True):
    r"""The pull and push weights of LW-SupCRD, as a pure function of the teacher's probabilities.

    `teacher_probs` (N, C) for the anchors' images, `labels` (N,), `key_labels` (M,) the classes of
    the keys (batch keys, then bank keys). With logit weighting:

        q_i       = max(p_i[y_i], 1e-8)
        w_pull_i  = alpha * q_i
        beta_i    = beta / (q_i + 0.5)        if adaptive_beta, else beta   (0.5: ADAPTIVE_BETA_OFFSET)
        w_push_ij = beta_i * max(1 - p_i[y_j], 1e-8)

    Without it (unweighted SupCRD) w_pull_i = alpha and w_push_ij = beta_i = beta: the teacher's
    probabilities play no part. Returns `(q (N,), w_pull (N,), beta_i (N,), log_push (N, M))`;
    `log_push` is -inf where beta = 0.
    """
    probs = teacher_probs.detach()
    q = probs.gather(1, labels[:, None]).squeeze(1).clamp_min(1e-8)
    if not logit_weighting:
        w_pull = torch.full_like(q, alpha)
        beta_i = torch.full_like(q, beta)
        log_push = torch.log(beta_i)[:, None].expand(-1, key_labels.shape[0])
        return q, w_pull, beta_i, log_push
    w_pull = alpha * q
    beta_i = beta / (q + ADAPTIVE_BETA_OFFSET) if adaptive_beta else torch.full_like(q, beta)
    log_push = torch.log(beta_i)[:, None] + torch.log((1 - probs.index_select(1, key_labels)).clamp_min(1e-8))
    return q, w_pull, beta_i, log_push


def lw_supcrd_loss(z: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, teacher_probs: torch.Tensor,
                   alpha: float = 1.0, beta: float = 10.0, temperature: float = 0.07,
                   adaptive_beta: bool = True, bank_keys: torch.Tensor | None = None,
                   bank_labels: torch.Tensor | None = None, validate: bool = True, alpha_mode: str = "weight",
                   logit_weighting: bool = True) -> torch.Tensor:
    r"""Logit-weighted supervised contrastive representation distillation (LW-SupCRD).

    Student anchors `z` (N, D) against teacher keys `t` (N, D) and optional bank keys (K, D).
    `teacher_probs` (N, C) is the teacher's softmax for each anchor's image; it is a constant
    (detached). P(i) = batch keys of the anchor's class (j = i included); N(i) = batch keys of
    other classes plus bank keys of other classes (bank keys of the anchor's class are left out).
    The weights w_pull_i, w_push_in are those of `lw_weights`. Two readings of where alpha acts:

        alpha_mode "weight" (the default; the pull weight multiplies the positive's exponential):
            l_ip = -log( w_pull_i e^{s_ip} / (w_pull_i e^{s_ip} + sum_{n in N(i)} w_push_in e^{s_in}) )
        alpha_mode "logit" (the pull weight scales the positive's logit):
            l_ip = -log( e^{w_pull_i s_ip} / (e^{w_pull_i s_ip} + sum_{n in N(i)} w_push_in e^{s_in}) )

        L = (1/alpha) * mean_i (1/|P(i)|) sum_{p in P(i)} l_ip

    In the "weight" reading alpha only adds log(alpha) to every positive logit and divides the loss,
    so Adam (invariant to the division) sees it as a margin; in the "logit" reading it sharpens the
    positives, which is where the 1/alpha matters. Both are computed as l_ip = softplus(LSE_n(log
    w_push_in + s_in) - pos_ip), with pos_ip = log w_pull_i + s_ip or w_pull_i s_ip. A confident
    teacher (large q_i) pulls harder and, with adaptive beta, pushes less; negatives of classes the
    teacher confuses with y_i (large p_i[y_n]) are pushed less. With beta = 0 there are no push
    forces and the loss is 0. `logit_weighting=False` gives unweighted SupCRD (see `lw_weights`).
    """
    n, d = _check_lw_inputs(z, t, labels, teacher_probs, temperature, alpha)
    if not beta >= 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    if alpha_mode not in ALPHA_MODES:
        raise ValueError(f"unknown alpha_mode {alpha_mode!r}; choose from {', '.join(ALPHA_MODES)}")
    if (bank_keys is None) != (bank_labels is None):
        raise ValueError("bank_keys and bank_labels must be given together")
    if bank_keys is not None:
        _check_embeddings("bank_keys", bank_keys, d=d, device=z.device)
        _check_vector("bank_labels", bank_labels, bank_keys.shape[0], z.device)
    num_classes = teacher_probs.shape[1]
    if validate:
        _check_finite(z=z, t=t, teacher_probs=teacher_probs, bank_keys=bank_keys)
        for name, lab in (("labels", labels), ("bank_labels", bank_labels)):
            if lab is not None and lab.numel() and (int(lab.min()) < 0 or int(lab.max()) >= num_classes):
                raise ValueError(f"{name} must lie in [0, {num_classes}) (the columns of teacher_probs), "
                                 f"got range [{int(lab.min())}, {int(lab.max())}]")
    with torch.autocast(z.device.type, enabled=False):
        dtype = _compute_dtype(z)
        z, t = z.to(dtype), t.to(dtype)
        s_batch = z @ t.T / temperature  # (N, N)
        key_labels, s_all = labels, s_batch
        if bank_keys is not None:
            key_labels = torch.cat([labels, bank_labels])
            s_all = torch.cat([s_batch, z @ bank_keys.to(dtype).T / temperature], dim=1)  # (N, N+K)
        same_class = labels[:, None] == labels[None, :]  # (N, N)
        neg_mask = labels[:, None] != key_labels[None, :]  # (N, N+K)
        _, w_pull, _, log_push = lw_weights(teacher_probs.to(dtype), labels, key_labels, alpha, beta,
                                            adaptive_beta, logit_weighting)
        if beta == 0:  # no push forces: every negative is masked out (and log 0 never enters a sum)
            neg_mask = torch.zeros_like(neg_mask)
            log_push = torch.zeros_like(log_push)
        neg_lse = _masked_logsumexp(s_all + log_push, neg_mask)  # (N,)
        pos = torch.log(w_pull)[:, None] + s_batch if alpha_mode == "weight" else w_pull[:, None] * s_batch
        l_ip = F.softplus(neg_lse[:, None] - pos)  # (N, N)
        per_anchor = torch.where(same_class, l_ip, 0.0).sum(1) / same_class.sum(1)
        return per_anchor.mean() / alpha


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 4.0,
            validate: bool = True) -> torch.Tensor:
    r"""Knowledge distillation (Hinton et al., 2015) as CRD's benchmark uses it: with
    p^T_i = softmax(teacher_logits_i / T) and p^S_i = softmax(student_logits_i / T),

        L_KD = (T^2 / N) sum_i sum_c p^T_ic (log p^T_ic - log p^S_ic)

    the KL divergence from the teacher's softened distribution, scaled by T^2 so that its gradient
    keeps the size of the cross-entropy's as T grows, averaged over the N images. The teacher's
    logits carry no gradient.
    """
    _check_embeddings("student_logits", student_logits)
    _check_embeddings("teacher_logits", teacher_logits, *student_logits.shape, student_logits.device)
    _check_temperature(temperature)
    if validate:
        _check_finite(student_logits=student_logits, teacher_logits=teacher_logits)
    with torch.autocast(student_logits.device.type, enabled=False):
        dtype = _compute_dtype(student_logits)
        log_p_s = F.log_softmax(student_logits.to(dtype) / temperature, dim=1)
        log_p_t = F.log_softmax(teacher_logits.detach().to(dtype) / temperature, dim=1)
        kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(1)
        return kl.mean() * temperature ** 2


def student_objective(logits: torch.Tensor, labels: torch.Tensor, teacher_logits: torch.Tensor | None,
                      distill: torch.Tensor | None, gamma: float = 1.0, kd_weight: float = 0.0,
                      distill_weight: float = 0.0, kd_temperature: float = 4.0,
                      validate: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    r"""The standard protocol's student loss (CRD's benchmark):

        L = gamma * CE(logits, y) + a * L_KD(logits, teacher_logits; T) + b * L_distill

    with a = `kd_weight`, b = `distill_weight`, L_KD of `kd_loss` and L_distill any of the
    contrastive losses (already computed: `distill`). A term whose weight is 0 is left out, so it
    needs no teacher. Returns the loss and its named, unweighted parts.
    """
    if kd_weight and teacher_logits is None:
        raise ValueError("kd_weight > 0 needs teacher_logits")
    if distill_weight and distill is None:
        raise ValueError("distill_weight > 0 needs the distillation term")
    with torch.autocast(logits.device.type, enabled=False):
        ce = F.cross_entropy(logits.to(_compute_dtype(logits)), labels)
    parts = {"ce": ce}
    loss = gamma * ce
    if kd_weight:
        parts["kd"] = kd_loss(logits, teacher_logits, kd_temperature, validate)
        loss = loss + kd_weight * parts["kd"]
    if distill_weight:
        parts["distill"] = distill
        loss = loss + distill_weight * distill
    return loss, parts

"""The original work's losses as its code computes them (reducereX/ATML_Proj, the 2025-12-22
notebook, and the bank of its later mdistiller port), as pure functions of tensors: LW-SupCRD with
one term per anchor, its baseline CRD, and the cosine-prototype loss its teacher's head is
pre-trained with. Each matches a fixture recorded once from that code (`tests/test_original.py`).

Unlike `losses.py`, they keep the original's numerics: the similarities shifted by each row's
largest (detached) and eps = 1e-8 inside the log, the projections normalised inside.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .losses import (ADAPTIVE_BETA_OFFSET, _check_embeddings, _check_finite, _check_lw_inputs, _check_temperature,
                     _check_vector, _compute_dtype)


def lw_supcrd_anchor_loss(z: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, teacher_probs: torch.Tensor,
                          alpha: float = 1.0, beta: float = 10.0, temperature: float = 0.07,
                          adaptive_beta: bool = True, own_key: bool = True, bank_keys: torch.Tensor | None = None,
                          bank_labels: torch.Tensor | None = None, bank_probs: torch.Tensor | None = None,
                          eps: float = 1e-8, validate: bool = True) -> torch.Tensor:
    r"""LW-SupCRD as the original code computes it: one term per anchor, all its positives together.

    Student anchors `z` (N, D) and teacher keys `t` (N, D) are normalised here; bank keys (K, D) are
    used as given (the bank stores unit keys). With s_ij = <z_i, k_j> / tau over the batch and bank
    keys and m_i = max_j s_ij (a detached shift, as the original's):

        A_i = w_pull_i * sum_{p in P(i)} exp(s_ip - m_i)
        B_i = sum_{n in N(i)} w_push_in * exp(s_in - m_i)
        L   = (1/alpha) * mean_i -log( (A_i + eps) / (A_i + B_i + eps) )

    P(i) = batch keys of the anchor's class, its own key (j = i) included when `own_key` (the
    original notebook of 2025-12-22) and left out otherwise (the later mdistiller port). N(i) =
    batch and bank keys of other classes. q_i = p_i[y_i], w_pull_i = alpha * q_i, beta_i = beta /
    (q_i + 0.5) with `adaptive_beta` (else beta), and w_push_in = beta_i * (1 - p_i[y_n]) for a batch
    key; for a bank key k, beta_i * (1 - pbar_k[y_i]) with pbar_k = `bank_probs[k]`, the teacher's
    probabilities stored with that key (the port), or beta_i * (1 - p_i[y_k]) without `bank_probs`.
    `teacher_probs` (N, C) and `bank_probs` (K, C) are constants. The port also clamps s - m at
    [-50, 50], which unit vectors never reach for tau >= 0.04. It differs from `lw_supcrd_loss`
    (one term per positive, the other positives outside its denominator) unless every anchor has
    exactly one positive.
    """
    n, d = _check_lw_inputs(z, t, labels, teacher_probs, temperature, alpha)
    if (bank_keys is None) != (bank_labels is None) or (bank_probs is not None and bank_keys is None):
        raise ValueError("bank_keys and bank_labels must be given together (bank_probs only with them)")
    if bank_keys is not None:
        _check_embeddings("bank_keys", bank_keys, d=d, device=z.device)
        _check_vector("bank_labels", bank_labels, bank_keys.shape[0], z.device)
        if bank_probs is not None:
            _check_embeddings("bank_probs", bank_probs, bank_keys.shape[0], teacher_probs.shape[1], z.device)
    if validate:
        _check_finite(z=z, t=t, teacher_probs=teacher_probs, bank_keys=bank_keys, bank_probs=bank_probs)
    with torch.autocast(z.device.type, enabled=False):
        dtype = _compute_dtype(z)
        z, t = F.normalize(z.to(dtype), dim=1), F.normalize(t.to(dtype), dim=1)
        probs = teacher_probs.detach().to(dtype)
        s = z @ t.T / temperature  # (N, N)
        if bank_keys is not None:
            s = torch.cat([s, z @ bank_keys.to(dtype).T / temperature], dim=1)  # (N, N+K)
        e = torch.exp(s - s.max(dim=1, keepdim=True).values.detach())
        same = labels[:, None] == labels[None, :]
        positives = same if own_key else same & ~torch.eye(n, dtype=torch.bool, device=z.device)
        q = probs.gather(1, labels[:, None]).squeeze(1)
        beta_i = beta / (q + ADAPTIVE_BETA_OFFSET) if adaptive_beta else torch.full_like(q, beta)
        pull = alpha * q * torch.where(positives, e[:, :n], 0.0).sum(1)
        push_w = beta_i[:, None] * (1 - probs.index_select(1, labels))  # (N, N): p_i[y_j]
        push = torch.where(same, 0.0, e[:, :n] * push_w).sum(1)
        if bank_keys is not None:
            p_key = bank_probs.detach().to(dtype).index_select(1, labels).T if bank_probs is not None \
                else probs.index_select(1, bank_labels)  # (N, K)
            bank_neg = labels[:, None] != bank_labels[None, :]
            push = push + torch.where(bank_neg, e[:, n:] * beta_i[:, None] * (1 - p_key), 0.0).sum(1)
        return (-torch.log((pull + eps) / (pull + push + eps)) / alpha).mean()


def instance_crd_loss(z: torch.Tensor, t: torch.Tensor, temperature: float = 0.07, eps: float = 1e-8,
                      validate: bool = True, bank_keys: torch.Tensor | None = None,
                      instance_ids: torch.Tensor | None = None, bank_ids: torch.Tensor | None = None) -> torch.Tensor:
    r"""The original work's baseline CRD: in-batch instance matching of student anchors `z` (N, D)
    against teacher keys `t` (N, D), both normalised here. The key of the same view is the only
    positive; every key is in the denominator, the other view of the same image included. With
    s_ij = <z_i, t_j> / tau and the detached shift m_i = max_j s_ij:

        L = mean_i -log( exp(s_ii - m_i) / (sum_j exp(s_ij - m_i) + eps) )

    With bank keys (K, D, unit norm) the sum also runs over the bank keys whose `bank_ids` differ
    from the anchor's `instance_ids` (ours: the original's CRD bank code could not be read).
    """
    _check_embeddings("z", z)
    n, d = z.shape
    _check_embeddings("t", t, n, d, z.device)
    _check_temperature(temperature)
    if bank_keys is not None:
        _check_embeddings("bank_keys", bank_keys, d=d, device=z.device)
        _check_vector("instance_ids", instance_ids, n, z.device)
        _check_vector("bank_ids", bank_ids, bank_keys.shape[0], z.device)
    if validate:
        _check_finite(z=z, t=t, bank_keys=bank_keys)
    with torch.autocast(z.device.type, enabled=False):
        dtype = _compute_dtype(z)
        z = F.normalize(z.to(dtype), dim=1)
        s = z @ F.normalize(t.to(dtype), dim=1).T / temperature  # (N, N)
        keep = torch.ones_like(s, dtype=torch.bool)
        if bank_keys is not None:
            s = torch.cat([s, z @ bank_keys.to(dtype).T / temperature], dim=1)  # (N, N+K)
            keep = torch.cat([keep, instance_ids[:, None] != bank_ids[None, :]], dim=1)
        e = torch.exp(s - s.max(dim=1, keepdim=True).values.detach())
        return (-torch.log(e.diagonal() / (torch.where(keep, e, 0.0).sum(1) + eps))).mean()


def cosine_prototype_loss(h: torch.Tensor, prototypes: torch.Tensor, labels: torch.Tensor,
                          temperature: float = 0.07) -> torch.Tensor:
    r"""The original's pre-training of the teacher's projection head: a cosine-prototype classifier.
    Projections `h` (N, D) and bias-free class prototypes `prototypes` (C, D), both normalised:

        L = CE( <h_i / |h_i|, w_c / |w_c|> / tau , y_i )
    """
    _check_embeddings("h", h)
    _check_embeddings("prototypes", prototypes, d=h.shape[1], device=h.device)
    _check_vector("labels", labels, h.shape[0], h.device)
    _check_temperature(temperature)
    with torch.autocast(h.device.type, enabled=False):
        dtype = _compute_dtype(h)
        logits = F.linear(F.normalize(h.to(dtype), dim=1), F.normalize(prototypes.to(dtype), dim=1)) / temperature
        return F.cross_entropy(logits, labels)

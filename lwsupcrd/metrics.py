"""Geometry of L2-normalised embeddings (Wang & Isola, ICML 2020) and class separation.

Every metric is exact; the pairwise ones walk the rows in chunks of `CHUNK` so that
10,000 x 512 inputs need a few tens of MB, never an N x N matrix.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

CHUNK = 1024


@dataclass
class Embeddings:
    """Unit-norm embeddings of the test split, clean and under two augmented views."""

    space: str  # "features" or "projection"
    clean: torch.Tensor  # (N, D)
    view1: torch.Tensor  # (N, D)
    view2: torch.Tensor  # (N, D)
    labels: torch.Tensor  # (N,)


def _check(x: torch.Tensor, labels: torch.Tensor | None = None) -> None:
    if x.dim() != 2 or x.shape[0] < 2:
        raise ValueError(f"need at least 2 embeddings as an (N, D) tensor, got shape {tuple(x.shape)}")
    if labels is not None and labels.shape != (x.shape[0],):
        raise ValueError(f"labels must have shape ({x.shape[0]},), got {tuple(labels.shape)}")


def alignment(x: torch.Tensor, y: torch.Tensor, alpha: float = 2) -> float:
    """mean_i ||x_i - y_i||^alpha over positive pairs (x_i, y_i)."""
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    _check(x)
    return float((x - y).double().norm(dim=1).pow(alpha).mean())


def uniformity(x: torch.Tensor, t: float = 2) -> float:
    """log mean_{i<j} exp(-t ||x_i - x_j||^2), accumulated as a log-sum-exp over row chunks."""
    _check(x)
    x = x.double()
    n = x.shape[0]
    sq = (x * x).sum(1)
    parts = []
    for start in range(0, n, CHUNK):
        rows = x[start:start + CHUNK]
        d2 = (sq[start:start + CHUNK, None] + sq[None, :] - 2 * rows @ x.T).clamp_min(0)
        upper = torch.arange(start, start + rows.shape[0], device=x.device)[:, None] < torch.arange(n, device=x.device)
        parts.append(torch.logsumexp((-t * d2)[upper], dim=0))
    return float(torch.logsumexp(torch.stack(parts), dim=0) - math.log(n * (n - 1) / 2))


def class_alignment(x: torch.Tensor, labels: torch.Tensor) -> float:
    """mean ||x_i - x_j||^2 over same-class pairs i < j, pooled over classes.

    Per class, sum_{i<j} ||x_i - x_j||^2 = n sum_i ||x_i||^2 - ||sum_i x_i||^2, so this is O(N D).
    """
    _check(x, labels)
    x = x.double()
    classes, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    sums = torch.zeros(len(classes), x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, inverse, x)
    sq = torch.zeros(len(classes), dtype=x.dtype, device=x.device).index_add_(0, inverse, (x * x).sum(1))
    pair_sums = counts * sq - (sums * sums).sum(1)
    num_pairs = (counts * (counts - 1) // 2).sum()
    if num_pairs == 0:
        raise ValueError("class_alignment needs at least one class with 2 or more embeddings")
    return float(pair_sums.sum().clamp_min(0) / num_pairs)


def class_distances(x: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Intra-class: mean Euclidean distance of each embedding to its class centroid.
    Inter-class: mean Euclidean distance between the centroids of distinct classes.
    Separation ratio: inter / intra (inf when every class collapses to a point)."""
    _check(x, labels)
    x = x.double()
    classes, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    centroids = torch.zeros(len(classes), x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, inverse, x)
    centroids /= counts[:, None]
    intra = float((x - centroids[inverse]).norm(dim=1).mean())
    if len(classes) < 2:
        inter = float("nan")
    else:
        d = torch.cdist(centroids, centroids)
        iu = torch.triu_indices(len(classes), len(classes), 1, device=x.device)
        inter = float(d[iu[0], iu[1]].mean())
    ratio = inter / intra if intra > 0 else float("inf")
    return {"intra_class_distance": intra, "inter_class_distance": inter, "separation_ratio": ratio}

import math

import pytest
import torch
import torch.nn.functional as F

from lwsupcrd import metrics
from lwsupcrd.metrics import alignment, class_alignment, class_distances, uniformity


def test_alignment_known_values():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([[1.0, 0.0], [0.0, -1.0]])
    assert alignment(x, y) == pytest.approx((0 + 4) / 2)
    assert alignment(x, y, alpha=1) == pytest.approx(1.0)
    assert alignment(x, x) == 0.0


def test_uniformity_two_antipodal_points_and_collapsed_points():
    assert uniformity(torch.tensor([[1.0, 0.0], [-1.0, 0.0]])) == pytest.approx(-8.0)  # ||.||^2 = 4, t = 2
    assert uniformity(torch.ones(5, 3) / math.sqrt(3)) == pytest.approx(0.0, abs=1e-12)


def test_uniformity_regular_simplex():
    # n points of a regular simplex on the unit sphere: ||x_i - x_j||^2 = 2 + 2/(n-1) for all pairs
    n = 6
    x = F.normalize(torch.eye(n, dtype=torch.float64) - 1.0 / n, dim=1)
    assert uniformity(x) == pytest.approx(-2 * (2 + 2 / (n - 1)), rel=1e-9)


def test_uniformity_chunked_equals_dense(monkeypatch):
    x = F.normalize(torch.randn(300, 16, generator=torch.Generator().manual_seed(0)), dim=1)
    dense = torch.pdist(x.double()).pow(2).mul(-2).exp().mean().log().item()
    monkeypatch.setattr(metrics, "CHUNK", 37)
    assert uniformity(x) == pytest.approx(dense, rel=1e-9)


def test_class_alignment_collapsed_and_two_point_classes():
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert class_alignment(x, torch.tensor([0, 0, 1, 1])) == 0.0
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, -1.0]])
    # class 0: one pair at distance^2 4; class 1: pairs (0,4,4) -> mean of [4, 0, 4, 4] = 3
    assert class_alignment(x, torch.tensor([0, 0, 1, 1, 1])) == pytest.approx(3.0)


def test_class_alignment_matches_pairwise_loop():
    gen = torch.Generator().manual_seed(1)
    x = F.normalize(torch.randn(40, 5, generator=gen, dtype=torch.float64), dim=1)
    labels = torch.randint(0, 4, (40,), generator=gen)
    pairs = [((x[i] - x[j]) ** 2).sum().item() for i in range(40) for j in range(i + 1, 40) if labels[i] == labels[j]]
    assert class_alignment(x, labels) == pytest.approx(sum(pairs) / len(pairs), rel=1e-9)


def test_class_distances_two_collapsed_classes():
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [-1.0, 0.0]])
    d = class_distances(x, torch.tensor([0, 0, 1, 1]))
    assert d["intra_class_distance"] == 0.0
    assert d["inter_class_distance"] == pytest.approx(2.0)
    assert d["separation_ratio"] == math.inf


def test_class_distances_spread_classes():
    x = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    d = class_distances(x, torch.tensor([0, 0, 1, 1]))  # centroids (1,0) and (-1,0)
    assert d["intra_class_distance"] == pytest.approx(1.0)
    assert d["inter_class_distance"] == pytest.approx(2.0)
    assert d["separation_ratio"] == pytest.approx(2.0)


@pytest.mark.parametrize("fn", [lambda x: uniformity(x), lambda x: alignment(x, x),
                                lambda x: class_alignment(x, torch.tensor([0])),
                                lambda x: class_distances(x, torch.tensor([0]))])
def test_fewer_than_two_points_raise(fn):
    with pytest.raises(ValueError, match="at least 2"):
        fn(torch.ones(1, 3))


def test_large_input_is_fast_and_bounded():
    x = F.normalize(torch.randn(10_000, 512, generator=torch.Generator().manual_seed(2)), dim=1)
    labels = torch.arange(10_000) % 100
    u = uniformity(x)
    assert -4.0 < u < -3.9  # random high-dimensional unit vectors: ||x_i - x_j||^2 ~ 2, so ~ -4
    assert class_alignment(x, labels) == pytest.approx(2.0, abs=0.01)

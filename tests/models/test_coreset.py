"""Greedy k-center coreset: farthest-point behaviour, exactness, sizes, determinism, speed."""

from __future__ import annotations


import pytest
import torch

from wood_anomaly.models.coreset import _greedy_dense, greedy_coreset, random_projection


def _clusters(n_clusters: int = 10, per: int = 300, dim: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_clusters, dim, generator=g) * 20.0
    labels = torch.arange(n_clusters).repeat_interleave(per)
    x = centres[labels] + torch.randn(n_clusters * per, dim, generator=g) * 0.5
    return x, labels


def _coverage_radius(x: torch.Tensor, idx: torch.Tensor) -> float:
    return float(torch.cdist(x, x[idx]).min(1).values.max())


def test_one_pick_per_cluster_first() -> None:
    x, labels = _clusters()
    idx = greedy_coreset(x, n=10, projection_dim=128, seed=3)
    assert sorted(labels[idx].tolist()) == list(range(10))


def test_coverage_much_better_than_random() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5000, 16, generator=g) ** 3  # heavy-tailed: random picks miss the outliers
    idx = greedy_coreset(x, ratio=0.02, projection_dim=128)
    rnd = torch.randperm(5000, generator=g)[: len(idx)]
    assert _coverage_radius(x, idx) < 0.5 * _coverage_radius(x, rnd)


def test_exact_greedy_same_as_textbook_loop() -> None:
    """The batched rounds return exactly the farthest-point sequence of the one-update-per-pick loop."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(20000, 8, generator=g, dtype=torch.float64)  # float64: no rounding ties
    fast = greedy_coreset(x, n=1500, projection_dim=128, seed=7)
    start = int(fast[0])
    slow = _greedy_dense(x, 1500, start, progress=False)
    assert torch.equal(fast, slow.cpu())


def test_sizes_uniqueness_and_determinism() -> None:
    x = torch.randn(3000, 24)
    a = greedy_coreset(x, ratio=0.1, projection_dim=8, seed=0)
    assert a.dtype == torch.long and len(a) == 300 and a.unique().numel() == 300
    assert int(a.min()) >= 0 and int(a.max()) < 3000
    assert torch.equal(a, greedy_coreset(x, ratio=0.1, projection_dim=8, seed=0))
    assert not torch.equal(a, greedy_coreset(x, ratio=0.1, projection_dim=8, seed=1))
    assert len(greedy_coreset(x, n=17)) == 17
    assert len(greedy_coreset(x, n=5000)) == 3000  # capped at N
    dup = torch.zeros(50, 4)  # all identical: still distinct indices
    assert greedy_coreset(dup, n=20).unique().numel() == 20
    with pytest.raises(ValueError):
        greedy_coreset(x, ratio=0.1, n=10)
    with pytest.raises(ValueError):
        greedy_coreset(x)
    with pytest.raises(ValueError):
        greedy_coreset(x, ratio=1.5)


def test_projection_shape_and_identity() -> None:
    x = torch.randn(100, 64)
    assert random_projection(x, 16, seed=0).shape == (100, 16)
    assert torch.equal(random_projection(x, 16, seed=0), random_projection(x, 16, seed=0))
    assert torch.equal(random_projection(x, 128, seed=0), x)  # no projection up to more dims

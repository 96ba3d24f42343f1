"""PatchCore's scoring path: exact torch k-NN == FAISS, torch search == FAISS search end to end, the HNSW
graph (deterministic, close to exact), blur == torchvision."""

from __future__ import annotations

import math

import faiss
import numpy as np
import pytest
import torch
from torchvision.transforms.v2.functional import gaussian_blur

from wood_anomaly.models.maps import gaussian_blur_maps
from wood_anomaly.models.patchcore import PatchCore
from wood_anomaly.models.patchcore.search import TorchKnn, hnsw_over, is_flat_l2


def _faiss_knn(bank: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    index = faiss.IndexFlatL2(bank.shape[1])
    index.add(bank)
    d2, idx = index.search(queries, k)
    return np.sqrt(np.maximum(d2, 0.0)), idx


@pytest.mark.parametrize(
    ("n", "d", "m", "k", "group", "chunk"),
    [
        (1000, 64, 700, 5, 64, 256),  # two-stage top-k, several chunks, a ragged last group
        (1000, 16, 300, 1, 32, 1000),  # nearest only
        (50, 8, 40, 5, 64, 7),  # one group only: plain top-k
        (9, 4, 11, 9, 2, 4),  # k = bank size, k > number of groups
        (300, 64, 100, 5, 1, 64),  # groups of one row
    ],
)
def test_torch_knn_matches_faiss_exact_search(n: int, d: int, m: int, k: int, group: int, chunk: int) -> None:
    rng = np.random.default_rng(n + d + k)
    bank = (rng.standard_normal((n, d)) * rng.uniform(0.5, 3.0, d)).astype(np.float32)
    queries = (rng.standard_normal((m, d)) * 1.5).astype(np.float32)
    ref_d, ref_i = _faiss_knn(bank, queries, k)
    index = faiss.IndexFlatL2(d)
    index.add(bank)
    dist, idx = TorchKnn.from_faiss(index, group=group, chunk=chunk).search(torch.from_numpy(queries), k)
    assert dist.shape == (m, k) and idx.shape == (m, k)
    np.testing.assert_allclose(dist.numpy(), ref_d, rtol=1e-5, atol=1e-5)
    assert np.all(np.diff(dist.numpy(), axis=1) >= 0)  # nearest first
    # indices: the same as FAISS's (random data has no ties) and consistent with the distances
    assert (idx.numpy() == ref_i).mean() > 0.999
    recomputed = np.linalg.norm(queries[:, None, :] - bank[idx.numpy()], axis=2)
    np.testing.assert_allclose(recomputed, dist.numpy(), rtol=1e-4, atol=1e-4)


def test_torch_knn_distances_exact_with_duplicates_and_ties() -> None:
    rng = np.random.default_rng(1)
    base = rng.integers(0, 3, (40, 6)).astype(np.float32)  # many duplicate rows = tied distances
    bank = np.concatenate([base, base, base])
    queries = rng.integers(0, 3, (60, 6)).astype(np.float32)
    ref_d, _ = _faiss_knn(bank, queries, 5)
    dist, _ = TorchKnn(bank, group=8, chunk=16).search(torch.from_numpy(queries), 5)
    np.testing.assert_allclose(dist.numpy(), ref_d, atol=1e-5)


def test_torch_knn_rejects_bad_input() -> None:
    knn = TorchKnn(np.zeros((5, 3), np.float32))
    with pytest.raises(ValueError, match="k must be"):
        knn.search(torch.zeros(2, 3), 6)
    with pytest.raises(ValueError, match=r"queries must be \[m, 3\]"):
        knn.search(torch.zeros(2, 4), 1)
    hnsw = faiss.IndexHNSWFlat(3, 8)
    assert not is_flat_l2(hnsw) and is_flat_l2(faiss.IndexFlatL2(3))
    with pytest.raises(TypeError, match="IndexFlat"):
        TorchKnn.from_faiss(hnsw)


def _wood(n: int, seed: int, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    out = []
    for _ in range(n):
        grain = 0.5 + 0.25 * np.sin(yy * 0.6 + 0.15 * np.sin(xx * 0.1) + rng.uniform(0, 6.3))
        img = grain[..., None] * np.array([200, 150, 100], np.float32) + rng.normal(0, 6, (size, size, 3))
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return np.stack(out)


@pytest.mark.parametrize("extra", [{}, {"num_neighbors": 3, "score_aggregation": "max"}])
def test_patchcore_torch_search_scores_like_faiss_search(extra: dict) -> None:
    train, test = _wood(6, 0), _wood(4, 1)
    test[1, 20:30, 20:30] = (40, 25, 15)  # a knot
    ref = PatchCore(coreset_ratio=0.3, search="faiss", **extra).fit(train, seed=0, device="cpu", progress=False)
    assert ref._knn is None
    art = ref.to_artifacts()
    state = {**art["state"], "config": {**art["state"]["config"], "search": "torch"}}
    fast = PatchCore.from_artifacts(memory_bank=art["memory_bank"], state=state, device="cpu")
    assert fast._knn is not None
    s_ref, m_ref = ref.score(test, batch_size=3)
    s_new, m_new = fast.score(test, batch_size=3)
    np.testing.assert_allclose(s_new, s_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m_new, m_ref, rtol=1e-4, atol=1e-5)
    assert s_new[1] > np.delete(s_new, 1).max()  # still finds the knot
    one, _ = fast.score(test[1:2], batch_size=1)  # batch size 1 (serving) = the batched score
    np.testing.assert_allclose(one, s_new[1:2], rtol=1e-5)
    assert set(fast.score_timing) == {"features_s", "search_s", "rest_s"}


def test_patchcore_search_config() -> None:
    with pytest.raises(ValueError, match="search must be"):
        PatchCore(search="annoy")
    model = PatchCore(coreset_ratio=0.5).fit(_wood(3, 0), seed=0, device="cpu", progress=False)
    art = model.to_artifacts()
    old_state = {**art["state"], "config": {k: v for k, v in art["state"]["config"].items() if k != "search"}}
    loaded = PatchCore.from_artifacts(memory_bank=art["memory_bank"], state=old_state, device="cpu")  # saved before the key
    assert loaded.config["search"] == "auto" and loaded._knn is None  # auto = the FAISS HNSW graph on a CPU
    assert isinstance(loaded._search_index, faiss.IndexHNSWFlat) and is_flat_l2(loaded.memory_bank)
    assert loaded._search_index.hnsw.efSearch == 18 and loaded._search_index.ntotal == loaded.memory_bank.ntotal
    exact = {**old_state, "config": {**old_state["config"], "search": "faiss"}}
    assert PatchCore.from_artifacts(memory_bank=art["memory_bank"], state=exact, device="cpu")._search_index is art["memory_bank"]
    with pytest.raises(ValueError, match="hnsw_m"):
        PatchCore(hnsw_m=1)
    as_torch = {**old_state, "config": {**old_state["config"], "search": "torch"}}
    assert PatchCore.from_artifacts(memory_bank=art["memory_bank"], state=as_torch, device="cpu")._knn is not None
    hnsw = faiss.IndexHNSWFlat(art["memory_bank"].d, 8)  # not exact L2: searched by FAISS itself
    hnsw.add(art["memory_bank"].reconstruct_n(0, art["memory_bank"].ntotal))
    via_faiss = PatchCore.from_artifacts(memory_bank=hnsw, state=as_torch, device="cpu")
    assert via_faiss._knn is None
    assert np.isfinite(via_faiss.score(_wood(1, 5))[0]).all()


def _torchvision_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = min(int(math.ceil(4.0 * sigma)), min(maps.shape[-2:]) - 1)
    return gaussian_blur(maps.unsqueeze(1), kernel_size=[2 * radius + 1] * 2, sigma=[float(sigma)] * 2).squeeze(1)


@pytest.mark.parametrize(("shape", "sigma"), [((3, 256, 256), 4.0), ((2, 64, 64), 2.0), ((2, 40, 24), 1.5), ((1, 5, 7), 4.0)])
def test_gaussian_blur_maps_equals_torchvision_2d_kernel(shape: tuple[int, ...], sigma: float) -> None:
    maps = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    maps[0, shape[1] // 2, shape[2] // 3] += 5.0  # a spike, so a wrong kernel or padding shows
    out = gaussian_blur_maps(maps, sigma)
    assert out.shape == maps.shape and out.dtype == maps.dtype
    torch.testing.assert_close(out, _torchvision_blur(maps, sigma), rtol=1e-5, atol=1e-5)
    assert gaussian_blur_maps(maps, 0.0) is maps


@pytest.mark.parametrize(("n", "d", "k", "candidates"), [(1000, 64, 5, 16), (300, 24, 1, 4), (12, 8, 5, 30)])
def test_torch_knn_bfloat16_ranking_then_exact_rerank(n: int, d: int, k: int, candidates: int) -> None:
    """candidates > k: ranked in bfloat16, re-ranked in float32: the exact distances of the true neighbours."""
    rng = np.random.default_rng(n + k)
    bank = (rng.standard_normal((n, d)) * rng.uniform(0.5, 3.0, d) + 5.0).astype(np.float32)  # off-centre bank
    queries = (bank[rng.integers(0, n, 400)] + rng.normal(0, 0.2, (400, d))).astype(np.float32)
    ref_d, _ = _faiss_knn(bank, queries, k)
    dist, idx = TorchKnn(bank, group=16, chunk=128, candidates=candidates).search(torch.from_numpy(queries), k)
    assert dist.shape == (400, k) and np.all(np.diff(dist.numpy(), axis=1) >= 0)
    np.testing.assert_allclose(dist.numpy(), ref_d, rtol=1e-5, atol=1e-5)
    recomputed = np.linalg.norm(queries[:, None, :] - bank[idx.numpy()], axis=2)
    np.testing.assert_allclose(recomputed, dist.numpy(), rtol=1e-4, atol=1e-4)


def test_hnsw_graph_is_deterministic_and_close_to_exact() -> None:
    """Same bank -> the same graph and answers (built on one thread); recall high; distances are true distances."""
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((40, 32)) * 4
    bank = (centres[rng.integers(0, 40, 3000)] + rng.standard_normal((3000, 32))).astype(np.float32)
    queries = (centres[rng.integers(0, 40, 500)] + rng.standard_normal((500, 32))).astype(np.float32)
    flat = faiss.IndexFlatL2(32)
    flat.add(bank)
    ref_d, ref_i = flat.search(queries, 5)
    faiss.omp_set_num_threads(2)
    a, b = hnsw_over(flat, 16, 24), hnsw_over(flat, 16, 24)
    d_a, i_a = a.search(queries, 5)
    d_b, i_b = b.search(queries, 5)
    np.testing.assert_array_equal(i_a, i_b)
    np.testing.assert_array_equal(d_a, d_b)
    recall = np.mean([len(set(x) & set(y)) / 5 for x, y in zip(i_a, ref_i)])
    assert recall > 0.95
    assert np.all(d_a >= ref_d - 1e-3)  # never nearer than the true neighbours ...
    np.testing.assert_allclose(d_a, ((queries[:, None] - bank[i_a]) ** 2).sum(-1), rtol=1e-4, atol=1e-3)  # ... and exact for what it found
    low = hnsw_over(flat, 16, 1)
    assert np.mean([len(set(x) & set(y)) / 5 for x, y in zip(low.search(queries, 5)[1], ref_i)]) < recall  # efSearch matters
    with pytest.raises(TypeError, match="IndexFlat"):
        hnsw_over(a)


def test_patchcore_hnsw_scores_close_to_exact_and_tiny_banks_work() -> None:
    train, test = _wood(6, 0), _wood(4, 1)
    test[1, 20:30, 20:30] = (40, 25, 15)  # a knot
    ref = PatchCore(coreset_ratio=0.3, search="faiss").fit(train, seed=0, device="cpu", progress=False)
    art = ref.to_artifacts()
    state = {**art["state"], "config": {**art["state"]["config"], "search": "hnsw"}}
    approx = PatchCore.from_artifacts(memory_bank=art["memory_bank"], state=state, device="cpu")
    s_ref, _ = ref.score(test, batch_size=2)
    s_new, _ = approx.score(test, batch_size=2)
    np.testing.assert_allclose(s_new, s_ref, rtol=0.02)
    assert np.all(s_new >= s_ref * (1 - 1e-5))  # an approximate neighbour is never nearer
    assert s_new[1] > np.delete(s_new, 1).max()  # still finds the knot
    tiny = PatchCore(coreset_ratio=0.5, coreset_max=3, patch_neighbors=5, search="hnsw").fit(train[:1], seed=0, device="cpu", progress=False)
    assert tiny.memory_bank.ntotal == 3  # fewer bank rows than patch_neighbors: k is clipped, no -1 neighbours
    assert np.isfinite(tiny.score(test[:2])[0]).all()

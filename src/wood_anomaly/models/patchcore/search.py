"""Exact k-nearest-neighbour search over PatchCore's memory bank in PyTorch.

The bank is saved as a FAISS ``IndexFlatL2`` (the ``.faiss`` artifact); for scoring, its vectors are
reconstructed once (``index.reconstruct_n``) into a tensor on the model's device and every query
batch is searched with one matrix product per chunk, ``||q||^2 - 2 q.b + ||b||^2`` (the formula
FAISS itself uses for large batches), followed by an exact two-stage top-k, and the k winners' distances recomputed as ``||q - b||``:

1. the bank is cut into groups of ``group`` rows; the minimum squared distance per group is a
   cheap vectorised reduction;
2. the k smallest distances of a row lie in the k groups with the smallest minima (each of
   those groups holds at least one distance <= any distance outside them), so ``torch.topk`` runs
   over k * group candidates instead of the whole bank.

Same k nearest distances as ``faiss.IndexFlatL2.search`` up to float32 rounding (tests check it on
random data); on ties the indices may differ, never the distances. Running in PyTorch keeps
feature extraction and search on one thread pool (FAISS brings its own OpenMP runtime and
OpenBLAS) and on the GPU when the model is there.

``candidates=c`` (> k) makes step 1-2 cheaper on CPUs with bfloat16 arithmetic (AVX512-BF16, AMX) and on
GPUs: the distances that *rank* the bank are computed in bfloat16 (bank and queries centred on the bank
mean first, which keeps the products small) and the ``c`` best-ranked rows are then re-ranked with exact
float32 distances. Only a true neighbour ranked below ``c`` by the rounding can be missed; on the wood
bank c = 16 for k = 5 returned the exact 5 nearest for every one of 86,016 test patches (c = 8: all but
16). Off by default: on the 2-core CPU here (AVX512-BF16) it was not faster than FAISS end to end.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def is_flat_l2(index: Any) -> bool:
    """True for an exact L2 FAISS index whose vectors can be read back (IndexFlatL2 / IndexFlat L2)."""
    import faiss

    return isinstance(index, faiss.IndexFlat) and int(index.metric_type) == int(faiss.METRIC_L2)


def hnsw_over(index: Any, m: int = 16, ef_search: int = 16, ef_construction: int = 40) -> Any:
    """A FAISS HNSW graph (``IndexHNSWFlat``) over the vectors of an exact L2 index, for approximate k-NN.

    Built on one thread: FAISS inserts in parallel otherwise, and the graph (hence every score) would
    depend on thread timing. 0.15 s for the 6,882 x 64 wood bank. Distances it returns are exact for
    the neighbours it finds; a true neighbour it misses is replaced by the next one it did find.
    """
    import faiss

    if not is_flat_l2(index):
        raise TypeError(f"hnsw_over needs an exact L2 IndexFlat, got {type(index).__name__}")
    graph = faiss.IndexHNSWFlat(int(index.d), int(m))
    graph.hnsw.efConstruction = int(ef_construction)
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        graph.add(index.reconstruct_n(0, index.ntotal))
    finally:
        faiss.omp_set_num_threads(threads)
    graph.hnsw.efSearch = int(ef_search)
    return graph


def fast_cpu_bfloat16() -> bool:
    """True when this CPU does bfloat16 matrix products natively (oneDNN with AVX512-BF16 or AMX)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover - torch builds without oneDNN
        return False


class TorchKnn:
    """Exact L2 k-NN over fixed bank vectors (see module docstring)."""

    def __init__(self, bank: torch.Tensor | np.ndarray, *, device: str | torch.device = "cpu",
                 group: int = 64, chunk: int = 256, candidates: int = 0) -> None:
        bank_t = torch.as_tensor(np.asarray(bank, dtype=np.float32) if isinstance(bank, np.ndarray) else bank)
        if bank_t.ndim != 2 or bank_t.shape[0] < 1:
            raise ValueError(f"TorchKnn: bank must be [n >= 1, d], got {tuple(bank_t.shape)}")
        self.device = torch.device(device)
        self.n, self.dim = int(bank_t.shape[0]), int(bank_t.shape[1])
        self.group = max(1, int(group))
        self.chunk = max(1, int(chunk))
        n_groups = -(-self.n // self.group)
        padded = torch.zeros(n_groups * self.group, self.dim, dtype=torch.float32)
        padded[: self.n] = bank_t.float().cpu()
        self.bank_rows = padded[: self.n].to(self.device)  # [n, d] for the final exact distances
        self.n_groups = n_groups
        self.candidates = max(0, int(candidates))
        if self.device.type == "cpu" and not fast_cpu_bfloat16():
            self.candidates = 0  # emulated bfloat16 would be slower than plain float32
        # one plain GEMM gives ||b||^2 - 2 q.b: queries [-2q, 1] times bank columns [b, ||b||^2] (addmm's
        # broadcast bias would cost a full extra pass over the [chunk, n] product)
        self.centre = padded[: self.n].double().mean(0).float() if self.candidates else torch.zeros(self.dim)
        centred = padded - self.centre  # bfloat16 ranking: centred on the bank mean (small products)
        sq = (centred.double() ** 2).sum(1).float()
        sq[self.n :] = 1e30  # padding rows are never among the nearest
        self.dtype = torch.bfloat16 if self.candidates else torch.float32
        self.bank_aug = torch.cat([centred, sq[:, None]], 1).T.contiguous().to(self.device, self.dtype)  # [d + 1, n_pad]
        self.centre = self.centre.to(self.device)

    @classmethod
    def from_faiss(cls, index: Any, **kwargs: Any) -> TorchKnn:
        """Bank vectors read back from a FAISS IndexFlatL2 (once, at load time)."""
        if not is_flat_l2(index):
            raise TypeError(f"TorchKnn.from_faiss needs an exact L2 IndexFlat, got {type(index).__name__}")
        return cls(index.reconstruct_n(0, index.ntotal), **kwargs)

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(distances [m, k] (L2, not squared), bank indices [m, k]) sorted nearest first."""
        k = int(k)
        if not 1 <= k <= self.n:
            raise ValueError(f"TorchKnn.search: k must be in [1, {self.n}], got {k}")
        q_all = queries.to(self.device, torch.float32)
        if q_all.ndim != 2 or q_all.shape[1] != self.dim:
            raise ValueError(f"TorchKnn.search: queries must be [m, {self.dim}], got {tuple(q_all.shape)}")
        m = q_all.shape[0]
        dist = torch.empty(m, k, device=self.device)
        index = torch.empty(m, k, dtype=torch.long, device=self.device)
        g, s = self.n_groups, self.group
        rank_k = min(self.n, max(k, self.candidates)) if self.candidates else k  # rows ranked, then re-ranked
        two_stage = g > rank_k
        for a in range(0, m, self.chunk):
            q = q_all[a : a + self.chunk]
            q_aug = torch.cat([(q - self.centre) * -2.0, torch.ones_like(q[:, :1])], 1).to(self.dtype)
            d2 = (q_aug @ self.bank_aug).float()  # ||b||^2 - 2 q.b (= squared distance - ||q||^2), [c, n_pad]
            if two_stage:
                blocks = d2.view(-1, g, s)
                best_groups = blocks.amin(2).topk(rank_k, dim=1, largest=False).indices  # [c, rank_k]
                cand = blocks.gather(1, best_groups[:, :, None].expand(-1, -1, s)).view(-1, rank_k * s)
                pos = cand.topk(rank_k, dim=1, largest=False).indices
                idx = best_groups.gather(1, torch.div(pos, s, rounding_mode="floor")) * s + pos % s
            else:
                _, idx = d2.topk(rank_k, dim=1, largest=False)
            # the winners' distances recomputed directly, ||q - b||: the expanded formula loses
            # ~1e-7 * ||q||^2 to cancellation (a patch's distance to itself came out 0.015, not 0)
            exact = (q[:, None, :] - self.bank_rows[idx]).norm(dim=2)
            exact, order = exact.topk(k, dim=1, largest=False) if rank_k > k else exact.sort(dim=1)
            dist[a : a + q.shape[0]] = exact
            index[a : a + q.shape[0]] = idx.gather(1, order)
        return dist, index

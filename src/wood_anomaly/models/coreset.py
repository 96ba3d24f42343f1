"""Greedy k-center (farthest point) coreset on a random projection, as in PatchCore.

The textbook loop (anomalib's) makes one memory-bound pass over all N points per pick: a few
points per second... a few hundred per second here at best. :func:`greedy_coreset` returns the
*same* picks (exact greedy; only float rounding can break near-ties differently) with far fewer
passes: each round takes the ``pool_size`` points with the largest current min-distance, makes
greedy picks inside that pool while its best value is >= the largest min-distance outside it
(so no outside point could have been picked instead), then updates all N distances with the
round's picks in one matrix product. With the default pool (4096) ~1,000 picks come out per
round, so the cost is one compute-bound N x k x d product (d = projection dim) instead of k
memory-bound passes. The same code runs on CUDA.
"""

from __future__ import annotations

import logging
import math
from contextlib import contextmanager
from collections.abc import Iterator

import torch

logger = logging.getLogger(__name__)

_POOL_SIZE = 4096  # candidates per round of the exact batched greedy


def random_projection(
    features: torch.Tensor, projection_dim: int | None, seed: int = 0
) -> torch.Tensor:
    """Gaussian random projection [N, D] -> [N, projection_dim] (float32, or float64 for float64 input); identity when dim >= D or None."""
    x = features if features.dtype == torch.float64 else features.float()
    d_in = x.shape[1]
    if not projection_dim or projection_dim >= d_in:
        return x.contiguous()
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    w = torch.randn(d_in, int(projection_dim), generator=gen, dtype=x.dtype) / math.sqrt(projection_dim)
    return (x @ w.to(x.device)).contiguous()


def _n_to_pick(n_points: int, ratio: float | None, n: int | None) -> int:
    if (ratio is None) == (n is None):
        raise ValueError("greedy_coreset: give exactly one of ratio= or n=")
    if ratio is not None:
        if not 0.0 < float(ratio) <= 1.0:
            raise ValueError(f"greedy_coreset: ratio must be in (0, 1], got {ratio}")
        k = int(math.ceil(float(ratio) * n_points))
    else:
        k = int(n)  # type: ignore[arg-type]
        if k < 1:
            raise ValueError(f"greedy_coreset: n must be >= 1, got {n}")
    return max(1, min(k, n_points))


@contextmanager
def _single_thread_on_cpu(enabled: bool) -> Iterator[None]:
    """The loop is thousands of tiny ops: OpenMP fork/join costs more than it saves (and collapses on a busy box)."""
    if not enabled:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _progress(total: int, enabled: bool):  # type: ignore[no-untyped-def]
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="coreset", unit="pt", mininterval=1.0)


def _greedy_dense(z: torch.Tensor, k: int, start: int, progress: bool) -> torch.Tensor:
    """Plain farthest-point loop: one full min-distance update per pick (used on CUDA / small inputs)."""
    n = z.shape[0]
    sq = (z * z).sum(1)
    min_d = torch.full((n,), float("inf"), dtype=z.dtype, device=z.device)
    buf = torch.empty(n, dtype=z.dtype, device=z.device)
    picked = torch.empty(k, dtype=torch.long, device=z.device)
    cur = torch.tensor(start, device=z.device)
    bar = _progress(k, progress)
    for i in range(k):
        picked[i] = cur
        c = z[cur]
        torch.addmv(sq, z, c, alpha=-2.0, out=buf)  # |x|^2 - 2 x.c
        buf.add_(sq[cur])
        torch.minimum(min_d, buf, out=min_d)
        cur = torch.argmax(min_d)  # stays on device: no sync per pick on CUDA
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return picked


def _min_update(z: torch.Tensor, sq: torch.Tensor, min_d: torch.Tensor, centres: torch.Tensor, chunk: int) -> None:
    """min_d <- min(min_d, squared distance of every z to its nearest row of ``centres``), in row chunks."""
    c_sq = (centres * centres).sum(1)
    for s in range(0, z.shape[0], chunk):
        e = min(s + chunk, z.shape[0])
        d = torch.addmm(c_sq.unsqueeze(0), z[s:e], centres.T, alpha=-2.0)  # [rows, b]
        d.add_(sq[s:e].unsqueeze(1))
        torch.minimum(min_d[s:e], d.amin(1), out=min_d[s:e])


def _greedy_in_pool(zp: torch.Tensor, sqp: torch.Tensor, vals: torch.Tensor, tau: float, limit: int) -> list[int]:
    """Greedy picks inside the pool while they are provably the global greedy picks (best value >= tau)."""
    new: list[int] = []
    best_vals = vals.clone()
    # thousands of tiny ops: OpenMP fork/join would cost more than it saves (and collapses on a busy CPU)
    with _single_thread_on_cpu(zp.device.type == "cpu"):
        while len(new) < limit:
            j = int(torch.argmax(best_vals))
            if new and not float(best_vals[j]) >= tau:
                break
            new.append(j)
            dj = torch.addmv(sqp, zp, zp[j], alpha=-2.0).add_(sqp[j])
            torch.minimum(best_vals, dj, out=best_vals)
            best_vals[j] = float("-inf")  # never pick the same point twice (duplicates in the data)
    return new


def _greedy_batched(z: torch.Tensor, k: int, start: int, progress: bool, pool_size: int = _POOL_SIZE) -> torch.Tensor:
    """Exact farthest-point sampling, several picks per pass over the data.

    After a full min-distance update, take the ``pool_size`` points with the largest min-distance;
    ``tau`` = the largest min-distance outside that pool. Greedy picks are then made inside the
    pool alone (updating only the pool's distances) for as long as the best pool value is >= tau:
    no point outside the pool can beat it, so each such pick is exactly the greedy pick. The
    accepted picks update all N distances in one matrix product (compute-bound, not one
    memory-bound pass per pick), and the next round starts.
    """
    n, dim = z.shape
    sq = (z * z).sum(1)
    min_d = torch.full((n,), float("inf"), dtype=z.dtype, device=z.device)
    chunk = max(1024, (1 << 22) // max(1, pool_size))
    picked: list[torch.Tensor] = [torch.tensor([start], device=z.device)]
    _min_update(z, sq, min_d, z[start : start + 1], chunk)
    min_d[start] = float("-inf")
    count = 1
    bar = _progress(k, progress)
    if bar is not None:
        bar.update(1)
    rounds = 0
    while count < k:
        rounds += 1
        t = min(pool_size, n)
        if t < n:
            vals, pool = torch.topk(min_d, t + 1, sorted=False)
            tau_pos = int(torch.argmin(vals))
            tau = vals[tau_pos]
            keep = torch.ones(t + 1, dtype=torch.bool, device=z.device)
            keep[tau_pos] = False
            vals, pool = vals[keep], pool[keep]
        else:
            vals, pool = min_d.clone(), torch.arange(n, device=z.device)
            tau = torch.tensor(float("-inf"), device=z.device)
        new = _greedy_in_pool(z[pool], sq[pool], vals, float(tau), k - count)
        sel = pool[torch.tensor(new, device=z.device)]
        picked.append(sel)
        count += len(new)
        _min_update(z, sq, min_d, z[sel], chunk)
        min_d[sel] = float("-inf")
        if bar is not None:
            bar.update(len(new))
    if bar is not None:
        bar.close()
    logger.debug("coreset: %d picks in %d rounds", k, rounds)
    return torch.cat(picked)[:k]


def greedy_coreset(
    features: torch.Tensor,
    ratio: float | None = None,
    n: int | None = None,
    projection_dim: int = 128,
    seed: int = 0,
    progress: bool = False,
) -> torch.LongTensor:
    """Indices of a greedy k-center coreset of ``features`` [N, D] (first pick: a seeded random point).

    Exactly one of ``ratio`` (fraction of N) or ``n`` (count). Distances are computed on a
    Gaussian random projection to ``projection_dim`` dims (skipped when that is >= D). The same
    seed gives the same indices. Runs on the device ``features`` lives on; returns CPU indices.
    """
    if features.ndim != 2 or features.shape[0] == 0:
        raise ValueError(f"greedy_coreset: expected features [N, D] with N > 0, got {tuple(features.shape)}")
    n_points = features.shape[0]
    k = _n_to_pick(n_points, ratio, n)
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    start = int(torch.randint(n_points, (1,), generator=gen))
    if k == n_points:
        return torch.arange(n_points)
    with torch.no_grad():
        z = random_projection(features, projection_dim, seed=seed)
        if not torch.isfinite(z).all():
            raise ValueError("greedy_coreset: features contain NaN or inf")
        # the many small in-pool steps run on one thread (_greedy_in_pool: 2.1 s vs 27.7 s with 2 OpenMP
        # threads on a busy 2-core box); the big N x picks distance updates use every thread torch has
        # (set_cpu_threads / runtime.num_threads: 1 on a shared, busy CPU)
        picked = _greedy_batched(z, k, start, progress)
    return picked.cpu()

"""PatchCore (Roth et al., CVPR 2022), Kedro-free, with a FAISS memory bank.

fit:   pretrained features of the good training images (optionally also of their flips) ->
       3x3 average pooling per layer (locally aware patch features) -> deeper layers upsampled
       to the finest grid and concatenated -> greedy k-center coreset (models/coreset.py) ->
       ``faiss.IndexFlatL2`` memory bank.
score: every test patch's mean distance to its ``patch_neighbors`` nearest bank entries (1 = the
       paper's nearest neighbour; 5 by default, which denoises the map) = patch anomaly grid ->
       image score: max (or mean of the top-k) of the grid, optionally re-weighted with the
       paper's neighbourhood softmax (num_neighbors > 1); anomaly map: grid upsampled to the
       input size and Gaussian-blurred (map_sigma pixels).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from wood_anomaly.models.base import check_images, merge_config, resolve_device, seed_everything
from wood_anomaly.models.coreset import greedy_coreset
from wood_anomaly.models.features import FeatureExtractor
from wood_anomaly.models.invariance import check_flips, check_photometric, n_training_copies, training_copies
from wood_anomaly.models.maps import gaussian_blur_maps
from wood_anomaly.models.patchcore.search import TorchKnn, hnsw_over, is_flat_l2

logger = logging.getLogger(__name__)

# Defaults measured on the real wood set (benchmarks/patchcore_model.py; see the PatchCore report):
# 3x3 pooling, flips and neighbour re-weighting did not help there; smoothing the patch grid
# before the image score, a top-k mean (k ~ the median defect area, 2.5% of the patches) and
# balancing the two layers' scales did. Bank size beyond ~5k did not change the AUROC.
DEFAULTS: dict[str, Any] = {
    "backbone": "tf_efficientnet_lite0",
    "layers": ["blocks.1", "blocks.2"],  # stride 4 + 8; the stride-8 map is upsampled to the stride-4 grid
    "weights": "auto",
    "image_size": None,  # resize inputs to this square size first; None = use the input size as is
    "pool_size": 1,  # local neighbourhood averaging of each layer's features (PatchCore paper: 3)
    # patch grid: None = the finest layer's grid; s = every layer resized to input / s (finer layers
    # area-averaged, coarser ones bilinearly upsampled): s = 8 has 4x fewer patches to store and search than 4
    "feature_stride": None,
    "train_flips": ["none"],  # also use flipped training images: "h", "v", "hv"
    "train_photometric": [],  # extra copies of the training images: [brightness, contrast] factor pairs
    "coreset_ratio": 0.02,  # fraction of the training patches kept in the memory bank (1.0 = all)
    "coreset_max": 10000,  # upper bound on the bank size (scoring cost grows with it); 0 = none
    "projection_dim": 32,  # random projection used by the coreset distance computations
    "num_neighbors": 1,  # PatchCore re-weighting of the image score over this many bank neighbours (1 = off)
    "patch_neighbors": 5,  # patch score = mean distance to this many nearest bank patches (1 = nearest only)
    "layer_balance": True,  # scale each layer by 1 / its mean channel std on the training patches
    "score_aggregation": "topk_mean",  # "max" or "topk_mean" over the (smoothed) patch grid
    "score_topk": 0.025,  # "topk_mean": a count of patches (>= 1) or a fraction of the grid (< 1)
    "score_sigma": 2.0,  # Gaussian blur (in patches) of the grid before the image score; 0 = off
    "map_sigma": 4.0,  # Gaussian blur of the upsampled anomaly map, in pixels of the input
    # nearest-neighbour search at scoring: "torch" (exact: matmul + top-k, models/patchcore/search.py),
    # "faiss" (exact IndexFlatL2.search), "hnsw" (approximate FAISS HNSW graph over the same bank vectors,
    # built at load time) or "auto" = torch on a GPU, hnsw on a CPU (see docs/speed.md for the recall check)
    "search": "auto",
    "hnsw_m": 16,  # search="hnsw": graph degree (FAISS IndexHNSWFlat M)
    "hnsw_ef_search": 18,  # search="hnsw": candidate list per query (higher = closer to exact, slower; docs/speed.md)
    # torch search only: rank the bank in bfloat16, re-rank this many rows exactly (0 = float32; see search.py)
    "search_candidates": 0,
    "batch_size": 16,
}


def _gpu_faiss_available() -> bool:
    import faiss

    return hasattr(faiss, "StandardGpuResources") and getattr(faiss, "get_num_gpus", lambda: 0)() > 0


class PatchCore:
    """PatchCore anomaly model (see module docstring); follows the AnomalyModel contract."""

    name = "patchcore"
    concurrent_scoring = True  # score() may run in several threads at once (serving/coalesce.py)

    def __init__(self, **config: Any) -> None:
        self.config: dict[str, Any] = merge_config("PatchCore", DEFAULTS, config)
        self.config["layers"] = [str(x) for x in self.config["layers"]]
        self.config["train_flips"] = check_flips("PatchCore", "train_flips", self.config["train_flips"])
        self.config["train_photometric"] = check_photometric("PatchCore", "train_photometric", self.config["train_photometric"])
        if self.config["search"] not in ("auto", "torch", "faiss", "hnsw"):
            raise ValueError(f"PatchCore: search must be 'auto', 'torch', 'faiss' or 'hnsw', got {self.config['search']!r}")
        if int(self.config["hnsw_m"]) < 2 or int(self.config["hnsw_ef_search"]) < 1:
            raise ValueError(
                f"PatchCore: hnsw_m must be >= 2 and hnsw_ef_search >= 1, got {self.config['hnsw_m']!r} / {self.config['hnsw_ef_search']!r}"
            )
        if self.config["score_aggregation"] not in ("max", "topk_mean"):
            raise ValueError(f"PatchCore: score_aggregation must be 'max' or 'topk_mean', got {self.config['score_aggregation']!r}")
        self.history: dict[str, list[float]] = {}
        self.device = "cpu"
        self.memory_bank = None  # faiss.Index (CPU copy, what gets saved)
        self._search_index = None  # the index used for search (GPU copy when available)
        self._knn: TorchKnn | None = None  # search="torch": the bank's vectors as a tensor on the device
        self._extractor: FeatureExtractor | None = None
        self.fit_info: dict[str, Any] = {}
        self.layer_scales: list[float] = []  # per-layer feature scale factors (set by fit)
        self.score_timing: dict[str, float] = {}  # seconds spent in the last score() call, per stage

    # ------------------------------------------------------------------ features
    @property
    def extractor(self) -> FeatureExtractor:
        if self._extractor is None or str(self._extractor.device) != str(torch.device(self.device)):
            self._extractor = FeatureExtractor(
                self.config["backbone"], self.config["layers"], weights=self.config["weights"], device=self.device
            )
        return self._extractor

    def _resize(self, images: np.ndarray) -> torch.Tensor:
        x = self.extractor.preprocess(images)
        size = self.config["image_size"]
        if size and tuple(x.shape[-2:]) != (int(size), int(size)):
            x = F.interpolate(x, size=(int(size), int(size)), mode="bilinear", align_corners=False, antialias=True)
        return x

    def embed(self, images: np.ndarray) -> torch.Tensor:
        """Patch features [N, C, h, w] (on the model's device) of uint8 images [N, H, W, 3]."""
        x = self._resize(images)
        feats = self.extractor(x)
        pool = int(self.config["pool_size"])
        if pool > 1:
            feats = [F.avg_pool2d(f, pool, stride=1, padding=pool // 2, count_include_pad=False) for f in feats]
        stride = self.config["feature_stride"]
        if stride:
            grid = (max(1, x.shape[-2] // int(stride)), max(1, x.shape[-1] // int(stride)))
        else:
            grid = tuple(max((f.shape[-2:] for f in feats), key=lambda s: s[0] * s[1]))
        feats = [
            f if tuple(f.shape[-2:]) == grid
            else F.adaptive_avg_pool2d(f, grid) if f.shape[-2] >= grid[0] and f.shape[-1] >= grid[1]
            else F.interpolate(f, size=grid, mode="bilinear", align_corners=False)
            for f in feats
        ]
        if self.layer_scales:
            feats = [f * scale for f, scale in zip(feats, self.layer_scales)]
        return torch.cat(feats, 1)

    def training_embeddings(self, images: np.ndarray, *, device: str = "auto", progress: bool = False) -> torch.Tensor:
        """Patch features of every training copy of each image, [N, n_copies * h * w, C] (before the layer
        balance), on the model's device: one copy per flip and per photometric pair (models/invariance.py).

        ``fit(images[rows], precomputed=emb[rows])`` equals ``fit(images[rows])`` without running the
        backbone again: k-fold threshold fits (evaluation/thresholds.py) extract each board once.
        """
        images = check_images(images, "train_images")
        self.device = resolve_device(device)
        flips, photometric = self.config["train_flips"] or ["none"], self.config["train_photometric"]
        bs = int(self.config["batch_size"])
        starts = range(0, len(images), bs)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="patchcore features", unit="batch")
        per_batch = []
        with torch.no_grad():
            for s in starts:
                copies = []
                for b in training_copies(images[s : s + bs], flips, photometric or []):
                    f = self.embed(b)
                    copies.append(f.permute(0, 2, 3, 1).reshape(f.shape[0], -1, f.shape[1]))
                per_batch.append(torch.cat(copies, 1))
        return torch.cat(per_batch)

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        train_images: np.ndarray,
        val_images: np.ndarray | None = None,
        *,
        seed: int = 0,
        device: str = "auto",
        progress: bool = True,
        precomputed: torch.Tensor | None = None,
    ) -> PatchCore:
        """Build the memory bank from good images (val_images are not needed by PatchCore).

        ``precomputed``: :meth:`training_embeddings` of exactly these images (rows in the same order), to
        skip the backbone; the caller's tensor is not modified.
        """
        import faiss

        train_images = check_images(train_images, "train_images")
        seed_everything(seed)
        self.device = resolve_device(device)
        t0 = time.perf_counter()
        self.layer_scales = []
        flips, photometric = self.config["train_flips"] or ["none"], self.config["train_photometric"]
        if precomputed is None:
            per_image = self.training_embeddings(train_images, device=self.device, progress=progress)
        else:
            per_image = torch.as_tensor(precomputed).to(self.device)
            if per_image.ndim != 3 or per_image.shape[0] != len(train_images):
                raise ValueError(
                    f"PatchCore.fit: precomputed embeddings {tuple(per_image.shape)} do not match "
                    f"{len(train_images)} training images (expected [N, copies * h * w, C])"
                )
        # rows in batch order (batch, copy, image, patch): the order fit() has always used, so the seeded
        # coreset picks the same bank; the reordering copies, so the layer balance below never scales the caller's tensor
        n_copies, bs = n_training_copies(flips, photometric), int(self.config["batch_size"])
        feats = torch.cat([
            chunk.reshape(chunk.shape[0], n_copies, -1, chunk.shape[-1]).transpose(0, 1).reshape(-1, chunk.shape[-1])
            for chunk in per_image.split(bs)
        ])
        if self.config["layer_balance"]:
            # equalise the layers' scales so that neither dominates the L2 distance
            bounds = np.cumsum([0, *self.extractor.out_channels])
            self.layer_scales = [
                float(1.0 / feats[:, a:b].std(0).mean().clamp_min(1e-6)) for a, b in zip(bounds[:-1], bounds[1:])
            ]
            for (a, b), scale in zip(zip(bounds[:-1], bounds[1:]), self.layer_scales):
                feats[:, a:b] *= scale
        t1 = time.perf_counter()
        n_all = feats.shape[0]
        k = int(math.ceil(float(self.config["coreset_ratio"]) * n_all))
        if int(self.config["coreset_max"] or 0) > 0:
            k = min(k, int(self.config["coreset_max"]))
        k = max(1, min(k, n_all))
        if k < n_all:
            idx = greedy_coreset(feats, n=k, projection_dim=int(self.config["projection_dim"]), seed=seed, progress=progress)
            bank = feats[idx.to(feats.device)]
        else:
            bank = feats
        t2 = time.perf_counter()
        bank_np = np.ascontiguousarray(bank.float().cpu().numpy())
        index = faiss.IndexFlatL2(bank_np.shape[1])
        index.add(bank_np)
        self._set_index(index)
        t3 = time.perf_counter()
        self.fit_info = {
            "n_train_images": int(len(train_images)),
            "n_train_copies": int(n_training_copies(flips, photometric)),
            "n_patches": int(n_all),
            "bank_size": int(index.ntotal),
            "feature_dim": int(bank_np.shape[1]),
            "features_s": t1 - t0,
            "coreset_s": t2 - t1,
            "index_s": t3 - t2,
            "device": self.device,
        }
        logger.info(
            "patchcore: %d patches -> bank %d x %d (features %.1fs, coreset %.1fs)",
            n_all, index.ntotal, bank_np.shape[1], t1 - t0, t2 - t1,
        )
        return self

    def _set_index(self, index: Any) -> None:
        import faiss

        self.memory_bank = index
        self._search_index = index
        self._knn = None
        search = self.config["search"]
        if search == "auto":  # 2 CPU cores, 4,096-patch image, ~6,900-row bank: FAISS flat 32-37 ms, HNSW (ef 18) 17-18.5 ms, torch 40-46
            search = "torch" if self.device.startswith("cuda") else "hnsw"
        if search == "hnsw" and is_flat_l2(index):
            self._search_index = hnsw_over(index, int(self.config["hnsw_m"]), int(self.config["hnsw_ef_search"]))
            return
        if search == "torch" and is_flat_l2(index):
            candidates = int(self.config["search_candidates"] or 0)
            self._knn = TorchKnn.from_faiss(index, device=self.device, candidates=candidates)  # vectors read once
            return
        if self.device.startswith("cuda") and _gpu_faiss_available():
            self._gpu_res = faiss.StandardGpuResources()
            self._search_index = faiss.index_cpu_to_gpu(self._gpu_res, torch.device(self.device).index or 0, index)

    # ------------------------------------------------------------------ score
    def _search(self, queries: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(L2 distances [m, k], bank indices [m, k]) of the k nearest bank patches, nearest first."""
        if self._knn is not None:
            dist, idx = self._knn.search(queries, k)
            return dist.cpu().numpy(), idx.cpu().numpy()
        q = np.ascontiguousarray(queries.float().cpu().numpy())
        d2, idx = self._search_index.search(q, k)
        if (idx < 0).any():  # an approximate graph found fewer than k neighbours for some patch (tiny banks)
            d2, idx = self.memory_bank.search(q, k)
        return np.sqrt(np.maximum(d2, 0.0)), idx

    def _reweight(self, patch: np.ndarray, nn_index: int) -> float:
        """PatchCore eq. 7: 1 - softmax weight of the nearest bank entry among its bank neighbourhood."""
        m = int(self.config["num_neighbors"])
        if m <= 1:
            return 1.0
        nn_vec = self.memory_bank.reconstruct(int(nn_index))[None]
        _, support = self.memory_bank.search(nn_vec, min(m, self.memory_bank.ntotal))
        support = support[0][support[0] >= 0]
        vecs = np.stack([self.memory_bank.reconstruct(int(i)) for i in support])
        dists = torch.from_numpy(np.linalg.norm(vecs - patch[None], axis=1))
        return float(1.0 - torch.softmax(dists, 0)[0])

    def score(self, images: np.ndarray, *, batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
        """(scores [N], anomaly maps [N, H, W] at the input resolution), float32."""
        if self.memory_bank is None:
            raise RuntimeError("PatchCore.score: call fit() or from_artifacts() first")
        images = check_images(images)
        h_in, w_in = images.shape[1:3]
        scores = np.empty(len(images), np.float32)
        maps = np.empty((len(images), h_in, w_in), np.float32)
        agg = self.config["score_aggregation"]
        topk = float(self.config["score_topk"])
        timing = {"features_s": 0.0, "search_s": 0.0, "rest_s": 0.0}
        t_start = time.perf_counter()
        with torch.no_grad():
            for s in range(0, len(images), batch_size):
                t0 = time.perf_counter()
                f = self.embed(images[s : s + batch_size])
                n, c, h, w = f.shape
                q = f.permute(0, 2, 3, 1).reshape(-1, c)
                t1 = time.perf_counter()
                k_nn = max(1, min(int(self.config["patch_neighbors"]), self.memory_bank.ntotal))
                dist, nn = self._search(q, k_nn)
                t2 = time.perf_counter()
                timing["features_s"] += t1 - t0
                timing["search_s"] += t2 - t1
                grid = torch.from_numpy(dist.mean(1).astype(np.float32)).view(n, h, w)
                sgrid = gaussian_blur_maps(grid, float(self.config["score_sigma"]))
                flat = sgrid.reshape(n, -1)
                if agg == "max":
                    img = flat.max(1).values
                else:
                    k_top = int(round(topk * flat.shape[1])) if topk < 1 else int(topk)
                    img = flat.topk(max(1, min(k_top, flat.shape[1])), dim=1).values.mean(1)
                if int(self.config["num_neighbors"]) > 1:
                    arg = grid.reshape(n, -1).argmax(1)
                    qn = q.float().cpu().numpy().reshape(n, h * w, c)
                    nn_img = nn[:, 0].reshape(n, h * w)
                    weights = [self._reweight(qn[i, int(arg[i])], int(nn_img[i, int(arg[i])])) for i in range(n)]
                    img = img * torch.tensor(weights, dtype=img.dtype)
                up = F.interpolate(grid.unsqueeze(1), size=(h_in, w_in), mode="bilinear", align_corners=False).squeeze(1)
                up = gaussian_blur_maps(up, float(self.config["map_sigma"]))
                scores[s : s + n] = img.numpy()
                maps[s : s + n] = up.numpy()
        timing["rest_s"] = time.perf_counter() - t_start - timing["features_s"] - timing["search_s"]
        self.score_timing = timing
        return scores, maps

    # ------------------------------------------------------------------ artifacts
    def to_artifacts(self) -> dict[str, Any]:
        """{"memory_bank": faiss.Index (CPU), "state": plain dict with every config value}."""
        if self.memory_bank is None:
            raise RuntimeError("PatchCore.to_artifacts: the model is not fitted")
        state: dict[str, Any] = {
            "name": self.name,
            "config": dict(self.config),
            "bank_size": int(self.memory_bank.ntotal),
            "feature_dim": int(self.memory_bank.d),
            "layer_scales": [float(x) for x in self.layer_scales],
            "fit_info": dict(self.fit_info),
        }
        return {"memory_bank": self.memory_bank, "state": state}

    @classmethod
    def from_artifacts(cls, memory_bank: Any = None, state: dict[str, Any] | None = None, device: str = "auto") -> PatchCore:
        """Exact inverse of :meth:`to_artifacts` (the backbone weights are reloaded from their local source)."""
        if memory_bank is None or state is None:
            raise ValueError("PatchCore.from_artifacts needs memory_bank= (faiss.Index) and state= (dict)")
        if state.get("name", "patchcore") != cls.name:
            raise ValueError(f"PatchCore.from_artifacts: state is for model {state.get('name')!r}")
        if int(memory_bank.d) != int(state["feature_dim"]) or int(memory_bank.ntotal) != int(state["bank_size"]):
            raise ValueError(
                f"PatchCore.from_artifacts: memory bank is {memory_bank.ntotal} x {memory_bank.d} but the state "
                f"says {state['bank_size']} x {state['feature_dim']} (index and state from different runs?)"
            )
        model = cls(**state["config"])
        model.device = resolve_device(device)
        model.fit_info = dict(state.get("fit_info", {}))
        model.layer_scales = [float(x) for x in state.get("layer_scales", [])]
        model._set_index(memory_bank)
        return model

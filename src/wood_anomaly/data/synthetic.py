"""Procedural wood-surface images with exact defect masks, written in the MVTec AD layout.

Used as the default data set when no real images are present, and by the tests. Every image is
drawn from its own random stream ``default_rng((seed, group, index))``, so the same seed gives
byte-identical PNG files and one image does not depend on how many others are generated.

Defects (each with an exact binary mask of the pixels it changes):

- ``crack``: thin dark jagged polyline running roughly along the grain,
- ``knot``: dead knot / hole, a dark ellipse with a ring,
- ``stain``: blurred blotch of another tint (blue stain or resin),
- ``scratch``: thin bright line across the grain.

Board-scale defects, modelled on what the VSB-TUO wood set documents (knots dominate, then cracks and
resin; its boards of about 2700 x 920 px are squashed to a square, so a round knot becomes a flat
ellipse across the grain; the shipped subset's defects cover 0.4-12 % of an image):

- ``live_knot``: a flat brown ellipse darker than the board, with growth rings and a soft edge,
- ``dead_knot``: a darker, nearly black-brown ellipse with a dark rim,
- ``resin``: a soft amber-brown streak along the grain,
- ``grain_crack``: a 2-4 px dark split along the grain.

``DEFECT_TYPES`` (the four small ones) stays the generator's default; ``BOARD_DEFECT_TYPES`` are the
board-scale ones, and ``VALIDATION_DEFECT_TYPES`` is what the label-free validation sets paste by default.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from wood_anomaly.data.layout import DatasetError

logger = logging.getLogger(__name__)

README_NAME = "README.txt"
README_MARKER = "wood_anomaly synthetic wood data set"
DEFECT_TYPES: tuple[str, ...] = ("crack", "knot", "stain", "scratch")
BOARD_DEFECT_TYPES: tuple[str, ...] = ("live_knot", "dead_knot", "resin", "grain_crack")
# board-scale kinds first (three of them knot-like or resin, as on VSB boards), then the small ones
VALIDATION_DEFECT_TYPES: tuple[str, ...] = BOARD_DEFECT_TYPES + DEFECT_TYPES
_GENERATED = ("train", "test", "ground_truth", README_NAME)
_GROUP_IDS = {"train": 0, "test_good": 1, "test_defect": 2}


class NotASyntheticSetError(DatasetError):
    """The target folder holds files that were not written by this generator; nothing is overwritten."""


# ------------------------------------------------------------------------------------------ texture
def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Zero-mean, unit-ish smooth noise [size, size]: a cells x cells grid upsampled bicubically."""
    low = rng.standard_normal((cells + 3, cells + 3)).astype(np.float32)
    big = Image.fromarray(low, mode="F").resize((size + 3 * size // cells, size + 3 * size // cells),
                                                Image.Resampling.BICUBIC)
    off = int(rng.integers(0, max(1, 3 * size // cells)))
    return np.asarray(big, dtype=np.float32)[off : off + size, off : off + size]


def wood_texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """One defect-free wood board image, float32 [size, size, 3] in 0..255."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / np.float32(size)
    # slight rotation of the grain direction
    theta = math.radians(float(rng.uniform(-4.0, 4.0)))
    c, s = math.cos(theta), math.sin(theta)
    u = c * (xx - 0.5) - s * (yy - 0.5)
    v = s * (xx - 0.5) + c * (yy - 0.5)
    # growth rings seen on a flat-sawn board: near-vertical lines, warped by slow sinusoids + noise
    warp = (
        float(rng.uniform(0.01, 0.03))
        * np.sin(2 * np.pi * (v * float(rng.uniform(0.2, 0.7)) + float(rng.uniform(0, 1))))
        + float(rng.uniform(0.004, 0.012)) * _smooth_noise(rng, size, 4)
        + float(rng.uniform(0.02, 0.06)) * (v**2) * float(rng.choice([-1.0, 1.0]))
    )
    freq = float(rng.uniform(6.0, 12.0))
    # uneven ring spacing: a slow noise added to the ring phase
    t = (u + warp) * freq + 0.25 * _smooth_noise(rng, size, 3) + float(rng.uniform(0.0, 1.0))
    late = (0.5 + 0.5 * np.sin(2 * np.pi * t)) ** float(rng.uniform(4.0, 9.0))  # sharp dark late-wood lines
    fine_t = (u + warp) * freq * float(rng.uniform(3.0, 5.0)) + 0.5 * _smooth_noise(rng, size, 6)
    fine = 0.5 + 0.5 * np.sin(2 * np.pi * fine_t)  # faint fine grain between the rings
    late = np.clip(late * float(rng.uniform(0.7, 1.0)) + 0.08 * fine, 0.0, 1.0)
    # fibres: noise stretched along the grain
    fib = rng.standard_normal((size, size)).astype(np.float32)
    fib = ndimage.gaussian_filter(fib, sigma=(size / 10.0, 0.6), mode="wrap")
    fib /= float(fib.std()) + 1e-6
    # per-image palette variation around a light pine colour
    base = np.array([204.0, 180.0, 128.0]) * float(rng.uniform(0.92, 1.05))
    base += rng.uniform(-8.0, 8.0, size=3)
    dark = base * np.array([0.78, 0.72, 0.62]) * float(rng.uniform(0.95, 1.05))
    light = _smooth_noise(rng, size, 3) * float(rng.uniform(0.02, 0.05))  # uneven illumination
    img = (
        base[None, None, :] * (1.0 - late[..., None]) + dark[None, None, :] * late[..., None]
    ) * (1.0 + light[..., None])
    img = img * (1.0 + 0.025 * fib[..., None]) + rng.normal(0.0, 2.0, size=(size, size, 1))
    return img.astype(np.float32)


# ------------------------------------------------------------------------------------------ defects
def _centre(rng: np.random.Generator, size: int, margin: float) -> tuple[float, float]:
    m = margin * size
    return float(rng.uniform(m, size - m)), float(rng.uniform(m, size - m))


def _polyline_mask(size: int, points: list[tuple[float, float]], width: int) -> np.ndarray:
    canvas = Image.new("L", (size, size), 0)
    ImageDraw.Draw(canvas).line(points, fill=255, width=width, joint="curve")
    return np.asarray(canvas) > 127


def _crack(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    size = img.shape[0]
    x, y = _centre(rng, size, 0.2)
    length = float(rng.uniform(0.15, 0.4)) * size
    angle = math.radians(90.0 + float(rng.uniform(-25.0, 25.0)))  # roughly along the grain
    n_seg = int(rng.integers(5, 10))
    step = length / n_seg
    pts = [(x, y)]
    for _ in range(n_seg):
        a = angle + float(rng.normal(0.0, 0.35))
        x, y = x + step * math.cos(a), y + step * math.sin(a)
        pts.append((x, y))
    arr = np.asarray(pts)
    lo, hi = arr.min(axis=0), arr.max(axis=0)
    arr += np.maximum(0.0, 2.0 - lo) - np.maximum(0.0, hi - (size - 3.0))  # keep it inside the image
    pts = [(float(px), float(py)) for px, py in arr]
    mask = _polyline_mask(size, pts, max(1, round(size / 80)))
    img[mask] *= float(rng.uniform(0.6, 0.8))
    return mask


def _knot(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    size = img.shape[0]
    cx, cy = _centre(rng, size, 0.15)
    a = float(rng.uniform(0.03, 0.07)) * size
    b = a * float(rng.uniform(0.55, 1.0))
    phi = float(rng.uniform(0.0, math.pi))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    xr = (xx - cx) * math.cos(phi) + (yy - cy) * math.sin(phi)
    yr = -(xx - cx) * math.sin(phi) + (yy - cy) * math.cos(phi)
    d = np.sqrt((xr / a) ** 2 + (yr / b) ** 2)
    mask = d <= 1.0
    core = d <= float(rng.uniform(0.45, 0.65))
    core_col = np.array([95.0, 62.0, 35.0]) * float(rng.uniform(0.8, 1.2))
    ring_col = np.array([150.0, 105.0, 60.0]) * float(rng.uniform(0.9, 1.1))
    rings = 0.5 + 0.5 * np.sin(d * float(rng.uniform(12.0, 20.0)))
    ring_alpha = (float(rng.uniform(0.25, 0.4)) + 0.2 * rings)[..., None]
    ring_zone = (mask & ~core)[..., None]
    img[:] = np.where(ring_zone, img * (1 - ring_alpha) + ring_col * ring_alpha, img)
    core_alpha = float(rng.uniform(0.5, 0.8))
    img[core] = img[core] * (1 - core_alpha) + core_col * core_alpha
    return mask


def _stain(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    size = img.shape[0]
    cx, cy = _centre(rng, size, 0.18)
    radius = float(rng.uniform(0.06, 0.12)) * size
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    r = np.sqrt(((xx - cx) / (radius * float(rng.uniform(0.7, 1.3)))) ** 2 + ((yy - cy) / radius) ** 2)
    field = np.exp(-(r**2)) * (1.0 + 0.3 * _smooth_noise(rng, size, 8))
    blob = (field > 0.45).astype(np.float32)
    alpha = ndimage.gaussian_filter(blob, sigma=max(1.0, size / 90))
    mask = alpha > 0.3
    # the soft edge may reach at most 2 px beyond the mask; nothing changes further away
    alpha = np.where(ndimage.binary_dilation(mask, iterations=2), alpha, 0.0)
    tints = (np.array([105.0, 112.0, 118.0]), np.array([165.0, 95.0, 40.0]))  # blue stain, resin
    tint = tints[int(rng.integers(0, 2))]
    strength = float(rng.uniform(0.25, 0.45))
    a = (alpha * strength)[..., None]
    img[:] = img * (1 - a) + tint * a
    return mask


def _scratch(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    size = img.shape[0]
    cx, cy = _centre(rng, size, 0.25)
    length = float(rng.uniform(0.2, 0.5)) * size
    angle = float(rng.uniform(0.0, math.pi))
    bend = float(rng.uniform(-0.08, 0.08)) * length
    pts = []
    for k in np.linspace(-0.5, 0.5, 9):
        off = bend * (1 - 4 * k * k)
        pts.append((cx + k * length * math.cos(angle) - off * math.sin(angle),
                    cy + k * length * math.sin(angle) + off * math.cos(angle)))
    mask = _polyline_mask(size, pts, max(1, round(size / 128)))
    gain = float(rng.uniform(0.2, 0.4))
    img[mask] += (255.0 - img[mask]) * gain
    return mask


def _board_area(rng: np.random.Generator, size: int) -> float:
    """Defect area in pixels: log-uniform over 0.4-6 % of the image (the shipped set documents 0.4-12 %)."""
    return float(np.exp(rng.uniform(math.log(0.004), math.log(0.06)))) * size * size


def _local_colour(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean colour of the board around (and under) ``mask``: defects are tinted relative to their own wood."""
    around = ndimage.binary_dilation(mask, iterations=4)
    return img[around].mean(axis=0)


def _flat_knot(rng: np.random.Generator, img: np.ndarray, dead: bool) -> np.ndarray:
    size = img.shape[0]
    area = _board_area(rng, size)
    aspect = float(rng.uniform(1.2, 3.0))  # wider than tall: the board was squashed along its length
    a = math.sqrt(area * aspect / math.pi)  # horizontal semi-axis
    b = a / aspect
    cx = float(rng.uniform(min(a + 2, size / 2), max(size - a - 2, size / 2)))
    cy = float(rng.uniform(min(b + 2, size / 2), max(size - b - 2, size / 2)))
    phi = math.radians(float(rng.uniform(-15.0, 15.0)))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    xr = (xx - cx) * math.cos(phi) + (yy - cy) * math.sin(phi)
    yr = -(xx - cx) * math.sin(phi) + (yy - cy) * math.cos(phi)
    d = np.sqrt((xr / a) ** 2 + (yr / b) ** 2)
    mask = d < 1.0
    wood = _local_colour(img, mask)
    if dead:
        tone = wood * np.array([0.30, 0.26, 0.22]) * float(rng.uniform(0.8, 1.2))
        rim = np.clip((d - 0.75) / 0.15, 0.0, 1.0) * np.clip((1.0 - d) / 0.1, 0.0, 1.0)
        colour = tone[None, None] * (1.0 - 0.5 * rim[..., None])
        strength = float(rng.uniform(0.75, 0.95))
    else:
        tone = wood * np.array([0.68, 0.55, 0.42]) * float(rng.uniform(0.85, 1.1))
        rings = 0.5 + 0.5 * np.sin(d * float(rng.uniform(10.0, 18.0)) + float(rng.uniform(0, math.pi)))
        colour = tone[None, None] * (0.85 + 0.25 * rings[..., None])
        strength = float(rng.uniform(0.55, 0.85))
    alpha = (strength * np.clip((1.0 - d) / 0.3, 0.0, 1.0))[..., None]  # soft edge, zero outside the mask
    img[:] = img * (1 - alpha) + colour * alpha
    return mask


def _live_knot(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    return _flat_knot(rng, img, dead=False)


def _dead_knot(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    return _flat_knot(rng, img, dead=True)


def _resin(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    size = img.shape[0]
    width = max(1.5, float(rng.uniform(3.0, 10.0)) * size / 256)  # 3-10 px on a 256 px board
    height = min(max(_board_area(rng, size) / width, 3.0 * width), 0.8 * size)
    cx = float(rng.uniform(min(width + 2, size / 2), max(size - width - 2, size / 2)))
    cy = float(rng.uniform(min(height / 2 + 2, size / 2), max(size - height / 2 - 2, size / 2)))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    d = np.sqrt(((xx - cx) / (width / 2)) ** 2 + ((yy - cy) / (height / 2)) ** 2)
    mask = d < 1.0
    tone = _local_colour(img, mask) * np.array([0.75, 0.58, 0.35]) * float(rng.uniform(0.85, 1.1))
    alpha = (float(rng.uniform(0.5, 0.8)) * np.clip((1.0 - d) / 0.4, 0.0, 1.0))[..., None]
    img[:] = img * (1 - alpha) + tone * alpha
    return mask


def _grain_crack(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    size = img.shape[0]
    length = float(rng.uniform(0.12, 0.45)) * size
    x = float(rng.uniform(0.1, 0.9)) * size
    y0 = float(rng.uniform(0.05 * size, size - length - 0.05 * size))
    n_seg = 8
    pts = [(x + float(rng.normal(0.0, 1.0)), y0 + k * length / n_seg) for k in range(n_seg + 1)]
    mask = _polyline_mask(size, pts, int(rng.integers(2, 5)))
    img[mask] *= float(rng.uniform(0.35, 0.6))
    return mask


DEFECT_PAINTERS: dict[str, Callable[[np.random.Generator, np.ndarray], np.ndarray]] = {
    "crack": _crack,
    "knot": _knot,
    "stain": _stain,
    "scratch": _scratch,
    "live_knot": _live_knot,
    "dead_knot": _dead_knot,
    "resin": _resin,
    "grain_crack": _grain_crack,
}


def render_defect(rng: np.random.Generator, img: np.ndarray, defect_type: str) -> np.ndarray:
    """Paint one defect into ``img`` (float32 [S,S,3], in place); return its bool mask [S,S]."""
    if defect_type not in DEFECT_PAINTERS:
        raise ValueError(f"unknown defect type {defect_type!r}; known: {sorted(DEFECT_PAINTERS)}")
    min_pixels = max(4, img.shape[0] // 8)
    for _ in range(20):  # redraw (rarely needed) until the defect is visible in the image
        trial = img.copy()
        mask = DEFECT_PAINTERS[defect_type](rng, trial)
        if int(mask.sum()) >= min_pixels:
            img[:] = trial
            return mask
    raise RuntimeError(f"could not draw a visible {defect_type!r} defect at {img.shape[0]} px")


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def paste_defect(image: np.ndarray, rng: np.random.Generator, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Paint one procedural defect of ``kind`` onto a copy of a real or synthetic board.

    ``image``: uint8 [S, S, 3] (square, as the prepared data set is). Returns the defective
    board (uint8, same shape; ``image`` is not modified) and the exact bool mask [S, S] of the
    pixels the defect changes. The same ``rng`` state gives the same defect.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"paste_defect expects a uint8 [S, S, 3] image, got {image.dtype} {image.shape}")
    if image.shape[0] != image.shape[1]:
        raise ValueError(f"paste_defect expects a square image, got {image.shape[0]} x {image.shape[1]}")
    if image.shape[0] < 16:
        raise ValueError(f"paste_defect needs an image of at least 16 px, got {image.shape[0]}")
    canvas = image.astype(np.float32)
    mask = render_defect(rng, canvas, kind)
    return _to_uint8(canvas), mask


# ------------------------------------------------------------------------------------------ writer
def _check_target(root: Path) -> None:
    """Refuse a non-empty folder unless it is a previous synthetic set (hidden files don't count)."""
    if not root.exists():
        return
    if not root.is_dir():
        raise NotASyntheticSetError(f"cannot write the synthetic set: {root} exists and is not a directory")
    entries = [p for p in root.iterdir() if not p.name.startswith(".")]
    if not entries:
        return
    readme = root / README_NAME
    try:
        ours = readme.is_file() and README_MARKER in readme.read_text(encoding="utf-8", errors="replace")
    except OSError:
        ours = False
    if not ours:
        raise NotASyntheticSetError(
            f"refusing to write the synthetic set into {root}: the folder is not empty and is not a previous "
            f"synthetic set (no {README_NAME} with the marker {README_MARKER!r}); choose an empty folder"
        )
    unknown = sorted(p.name for p in entries if p.name not in _GENERATED)
    if unknown:
        raise NotASyntheticSetError(
            f"refusing to overwrite {root}: besides a previous synthetic set it holds {unknown}"
        )


def generate_synthetic_wood(
    root: str | Path,
    n_train: int = 40,
    n_test_good: int = 12,
    n_test_defect: int = 16,
    image_size: int = 128,
    seed: int = 0,
    defect_types: Sequence[str] = DEFECT_TYPES,
) -> Path:
    """Write a synthetic wood data set in the MVTec AD layout and return its root.

    ``root/train/good/NNN.png`` (n_train), ``root/test/good/NNN.png`` (n_test_good),
    ``root/test/<type>/NNN.png`` and ``root/ground_truth/<type>/NNN_mask.png`` (0/255) with the
    ``n_test_defect`` defect images spread round-robin over ``defect_types``, plus a README.txt.
    A previous synthetic set in ``root`` is replaced; any other non-empty folder is refused
    (:class:`NotASyntheticSetError`). Same arguments -> byte-identical files.
    """
    root = Path(root).expanduser()
    defect_types = tuple(defect_types)
    if n_train < 2 or n_test_good < 0 or n_test_defect < 0 or n_test_good + n_test_defect < 1:
        raise ValueError(
            f"need n_train >= 2 and at least one test image, got n_train={n_train}, "
            f"n_test_good={n_test_good}, n_test_defect={n_test_defect}"
        )
    if image_size < 16:
        raise ValueError(f"image_size must be at least 16, got {image_size}")
    unknown = [t for t in defect_types if t not in DEFECT_PAINTERS]
    if unknown or (n_test_defect and not defect_types) or len(set(defect_types)) != len(defect_types):
        raise ValueError(f"bad defect_types {defect_types!r}; choose distinct names from {sorted(DEFECT_PAINTERS)}")
    _check_target(root)
    for name in _GENERATED:
        target = root / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()

    width = max(3, len(str(max(n_train, n_test_good, n_test_defect, 1) - 1)))

    def save(img: np.ndarray, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(path, format="PNG", optimize=False)

    for i in range(n_train):
        rng = np.random.default_rng((seed, _GROUP_IDS["train"], i))
        save(_to_uint8(wood_texture(rng, image_size)), root / "train" / "good" / f"{i:0{width}d}.png")
    for i in range(n_test_good):
        rng = np.random.default_rng((seed, _GROUP_IDS["test_good"], i))
        save(_to_uint8(wood_texture(rng, image_size)), root / "test" / "good" / f"{i:0{width}d}.png")
    counts = dict.fromkeys(defect_types, 0)
    for i in range(n_test_defect):
        dtype_ = defect_types[i % len(defect_types)]
        k = counts[dtype_]
        counts[dtype_] += 1
        rng = np.random.default_rng((seed, _GROUP_IDS["test_defect"], i))
        img = wood_texture(rng, image_size)
        mask = render_defect(rng, img, dtype_)
        save(_to_uint8(img), root / "test" / dtype_ / f"{k:0{width}d}.png")
        save(mask.astype(np.uint8) * 255, root / "ground_truth" / dtype_ / f"{k:0{width}d}_mask.png")

    params = {
        "n_train": n_train,
        "n_test_good": n_test_good,
        "n_test_defect": n_test_defect,
        "image_size": image_size,
        "seed": seed,
        "defect_types": list(defect_types),
    }
    (root / README_NAME).write_text(
        f"{README_MARKER}\n\n"
        "SYNTHETIC DATA: procedurally generated wood-grain images, not photographs of real wood.\n"
        "Written by wood_anomaly.data.synthetic.generate_synthetic_wood; rerunning it with the same\n"
        "parameters rewrites byte-identical files (this folder may be replaced by the generator).\n\n"
        "Layout (MVTec AD): train/good, test/good, test/<defect_type>, ground_truth/<defect_type>/<stem>_mask.png\n"
        "Defects: crack (dark jagged line), knot (dark ellipse with ring), stain (blurred tinted blotch),\n"
        "scratch (thin bright line). Masks are exact (0 = good, 255 = defect pixel).\n\n"
        f"Parameters: {json.dumps(params, sort_keys=True)}\n",
        encoding="utf-8",
    )
    logger.info("wrote synthetic wood set to %s (%s)", root, params)
    return root

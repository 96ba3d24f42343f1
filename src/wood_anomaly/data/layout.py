"""Scan, validate and load an MVTec-AD-layout image folder (no Kedro in here).

Expected layout::

    root/train/good/*.png|jpg|...          good training images
    root/test/good/*                        good test images
    root/test/<defect_type>/*               defective test images
    root/ground_truth/<defect_type>/<stem>_mask.png   (or <stem>.png; optional)

Everything the models see comes out of :func:`load_prepared_arrays` as plain NumPy arrays
(see docs/design.md, "prepared_dataset").
"""

from __future__ import annotations

import io
import logging
import re
import warnings
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageFile, UnidentifiedImageError
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
GOOD = "good"
MANIFEST_COLUMNS: tuple[str, ...] = ("path", "label", "defect_type", "mask_path", "has_mask", "source_split")
SPLITS: tuple[str, ...] = ("train", "val", "test")
PREPARED_KEYS: tuple[str, ...] = ("images", "masks", "has_mask", "split", "label", "defect_type", "path")


# --------------------------------------------------------------------------------------------- errors
class DatasetError(ValueError):
    """Base class of every problem with an input data set; the message names the path."""


class DatasetNotFoundError(DatasetError):
    """The data set root is missing or is not a directory."""


class LayoutError(DatasetError):
    """The folder does not follow the MVTec AD layout (missing train/good, missing test, ...)."""


class EmptyDatasetError(DatasetError):
    """A required folder exists but holds no images."""


class OrphanMaskError(DatasetError):
    """A ground-truth mask has no matching test image."""


class CorruptImageError(DatasetError):
    """An image or mask file cannot be decoded (corrupt, truncated, not an image, unreadable)."""


class MissingMaskWarning(UserWarning):
    """A defect image has no ground-truth mask; it is left out of pixel metrics only."""


# --------------------------------------------------------------------------------------------- scan
def _natural_key(path: Path) -> list[object]:
    """Sort '2.png' before '10.png' (numbers compared as numbers), ties broken by the full name."""
    parts: list[object] = [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]
    return [parts, path.name]


def is_image_file(path: Path) -> bool:
    """A visible file with one of the image suffixes this project reads."""
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES


def _list_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if is_image_file(p)), key=_natural_key)


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _mask_stem(mask: Path) -> str:
    """'<stem>_mask.png' -> '<stem>'; '<stem>.png' -> '<stem>'."""
    stem = mask.stem
    return stem[: -len("_mask")] if stem.endswith("_mask") else stem


def _match_masks(images: list[Path], mask_dir: Path) -> dict[str, Path]:
    """Map image stem -> mask path for one defect type; raise on masks that match no image."""
    by_stem: dict[str, Path] = {}
    if not mask_dir.is_dir():
        return by_stem
    stems = {p.stem for p in images}
    if len(stems) != len(images):
        dup = sorted(stem for stem, n in Counter(p.stem for p in images).items() if n > 1)
        raise LayoutError(
            f"ambiguous masks in {mask_dir}: several images in {images[0].parent} share the stem(s) {dup}"
        )
    for mask in _list_images(mask_dir):
        # '<stem>_mask.png' is the MVTec name; '<stem>.png' is accepted too. An image that is itself
        # called 'x_mask.png' still matches its mask via the plain-name rule.
        candidates = [_mask_stem(mask), mask.stem]
        stem = next((c for c in candidates if c in stems), None)
        if stem is None:
            raise OrphanMaskError(
                f"mask without image: {mask} (no image with stem {candidates[0]!r} in "
                f"{mask_dir.parent.parent / 'test' / mask_dir.name})"
            )
        if stem in by_stem:
            # both '<stem>_mask.png' and '<stem>.png' exist: prefer the MVTec name, refuse real duplicates
            prev_mvtec = by_stem[stem].stem == f"{stem}_mask"
            cur_mvtec = mask.stem == f"{stem}_mask"
            if prev_mvtec == cur_mvtec:
                raise LayoutError(f"two masks for the same image {stem!r}: {by_stem[stem]} and {mask}")
            if prev_mvtec:
                continue
        by_stem[stem] = mask
    return by_stem


def scan_dataset(root: str | Path) -> pd.DataFrame:
    """Scan and validate an MVTec-AD-layout folder.

    Returns one row per image with columns ``path`` (str), ``label`` (0 good / 1 defect),
    ``defect_type`` ("good" or the defect folder name), ``mask_path`` (str, "" when none),
    ``has_mask`` (True when the pixel ground truth is known: good images, whose mask is all zero,
    and defect images with a mask file) and ``source_split`` ("train" / "test").
    Order is deterministic: train/good, test/good, then the defect folders alphabetically; files
    within a folder in natural order. Hidden and non-image files are ignored.

    Raises :class:`DatasetError` subclasses naming the path for every layout problem; a defect
    image without a mask only warns (:class:`MissingMaskWarning`).
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise DatasetNotFoundError(f"data set root does not exist: {root}")
    if not root.is_dir():
        raise DatasetNotFoundError(f"data set root is not a directory: {root}")
    root = root.resolve()

    train_good = root / "train" / GOOD
    if not train_good.is_dir():
        raise LayoutError(
            f"wrong layout: expected {train_good} (MVTec AD layout: <root>/train/good, <root>/test/good, "
            f"<root>/test/<defect_type>, optional <root>/ground_truth/<defect_type>)"
        )
    train_images = _list_images(train_good)
    if not train_images:
        raise EmptyDatasetError(f"no training images: {train_good} holds no image files ({sorted(IMAGE_SUFFIXES)})")
    extra_train = [p.name for p in _subdirs(root / "train") if p.name != GOOD]
    if extra_train:
        warnings.warn(f"ignoring {root / 'train'} subfolders other than 'good': {extra_train}", stacklevel=2)

    test_dir = root / "test"
    if not test_dir.is_dir():
        raise LayoutError(f"wrong layout: expected a test folder {test_dir} (with good/ and <defect_type>/ subfolders)")
    test_types = _subdirs(test_dir)
    # good first, then the defect types in alphabetical order
    test_types.sort(key=lambda p: (p.name != GOOD, p.name))
    loose = [p.name for p in test_dir.iterdir() if is_image_file(p)]
    if loose:
        warnings.warn(f"ignoring images directly inside {test_dir} (they belong in a subfolder): {loose}", stacklevel=2)

    rows: list[dict[str, object]] = [
        {"path": str(p), "label": 0, "defect_type": GOOD, "mask_path": "", "has_mask": True, "source_split": "train"}
        for p in train_images
    ]
    n_test = 0
    gt_root = root / "ground_truth"
    for type_dir in test_types:
        images = _list_images(type_dir)
        n_test += len(images)
        defect_type = type_dir.name
        if defect_type == GOOD:
            rows += [
                {"path": str(p), "label": 0, "defect_type": GOOD, "mask_path": "", "has_mask": True,
                 "source_split": "test"}
                for p in images
            ]
            continue
        masks = _match_masks(images, gt_root / defect_type)
        missing = [p for p in images if p.stem not in masks]
        for p in missing:
            msg = f"defect image without mask: {p} (left out of pixel metrics)"
            warnings.warn(msg, MissingMaskWarning, stacklevel=2)
            logger.warning(msg)
        rows += [
            {
                "path": str(p),
                "label": 1,
                "defect_type": defect_type,
                "mask_path": str(masks[p.stem]) if p.stem in masks else "",
                "has_mask": p.stem in masks,
                "source_split": "test",
            }
            for p in images
        ]
    if n_test == 0:
        raise EmptyDatasetError(f"no test images: {test_dir} holds no image files in any subfolder")

    # masks for defect types that have no test folder at all
    if gt_root.is_dir():
        test_names = {p.name for p in test_types}
        for mask_dir in _subdirs(gt_root):
            if mask_dir.name not in test_names:
                orphans = _list_images(mask_dir)
                if orphans:
                    raise OrphanMaskError(
                        f"mask without image: {orphans[0]} (there is no folder {test_dir / mask_dir.name})"
                    )

    df = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))
    df["label"] = df["label"].astype("int64")
    df["has_mask"] = df["has_mask"].astype(bool)
    logger.info(
        "scanned %s: %d train/good, %d test/good, %d defect (%d with mask)",
        root,
        int((df.source_split == "train").sum()),
        int(((df.source_split == "test") & (df.label == 0)).sum()),
        int((df.label == 1).sum()),
        int(((df.label == 1) & df.has_mask).sum()),
    )
    return df


def split_train_val(manifest: pd.DataFrame, val_fraction: float = 0.1, seed: int = 0) -> pd.DataFrame:
    """Add a ``split`` column: a fixed-seed random ``val_fraction`` of the training images becomes
    "val" (at least one, and at least one left for "train"); everything from test/ is "test".

    The validation images are good images held out of training; thresholds are set on them.
    Row order is unchanged; the input frame is not modified.
    """
    if not 0.0 < float(val_fraction) < 1.0:
        raise ValueError(f"val_fraction must lie strictly between 0 and 1, got {val_fraction!r}")
    if "source_split" not in manifest.columns:
        raise ValueError(f"manifest has no 'source_split' column (columns: {list(manifest.columns)})")
    out = manifest.copy()
    train_idx = np.flatnonzero(out["source_split"].to_numpy() == "train")
    n = len(train_idx)
    if n < 2:
        raise EmptyDatasetError(f"need at least 2 training images to hold one out for validation, got {n}")
    n_val = int(min(max(1, round(n * float(val_fraction))), n - 1))
    rng = np.random.default_rng(seed)
    val_idx = train_idx[np.sort(rng.permutation(n)[:n_val])]
    split = np.where(out["source_split"].to_numpy() == "train", "train", "test").astype(object)
    split[val_idx] = "val"
    out["split"] = split.astype(str)
    return out


# --------------------------------------------------------------------------------------------- load
def _open_decoded(path: str | Path, what: str) -> Image.Image:
    """Open and fully decode a file, turning every failure into CorruptImageError naming it."""
    path = Path(path)
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # another library may have switched it on; we want the error
    try:
        with Image.open(path) as img:
            img.load()  # decode now, so that truncated files fail here and not later
            img = img.copy()
    except FileNotFoundError as exc:
        raise CorruptImageError(f"cannot read {what} {path}: file does not exist") from exc
    except UnidentifiedImageError as exc:
        raise CorruptImageError(f"cannot read {what} {path}: not a recognised image file") from exc
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise CorruptImageError(f"cannot read {what} {path}: corrupt or truncated file ({exc})") from exc
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous
    return img


def _scale_to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    """Scale a single-channel high-bit-depth array to uint8 by its type's range (never by clipping).

    I;16* -> /257 (0..65535 -> 0..255). I (32-bit int) and F (float): by the smallest standard range
    that holds the data ([0,1], [0,255], [0,65535]); anything else is min-max normalised.
    """
    a = arr.astype(np.float64)
    if mode.startswith("I;16"):
        lo, hi = 0.0, 65535.0
    else:
        amin, amax = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        if not (np.isfinite(amin) and np.isfinite(amax)):
            a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
            amin, amax = float(a.min()), float(a.max())
        if mode == "F" and amin >= 0.0 and amax <= 1.0:
            lo, hi = 0.0, 1.0
        elif amin >= 0.0 and amax <= 255.0:
            lo, hi = 0.0, 255.0
        elif amin >= 0.0 and amax <= 65535.0:
            lo, hi = 0.0, 65535.0
        else:
            lo, hi = amin, max(amax, amin + 1e-12)
    out = np.rint((a - lo) * (255.0 / (hi - lo)))
    return np.clip(out, 0, 255).astype(np.uint8)


def _to_rgb_uint8(img: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB (gray replicated, alpha dropped, palette expanded, 16-bit scaled)."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I") or mode == "F":
        gray = _scale_to_uint8(np.asarray(img), mode)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if mode in ("LA", "La", "PA"):
        return img.convert("L" if mode != "PA" else "RGBA").convert("RGB")
    # 1, L, P, RGBA, RGBa, RGBX, CMYK, YCbCr: Pillow converts these correctly (others raise ValueError)
    return img.convert("RGB")


def load_image(path: str | Path, size: int | None = None) -> np.ndarray:
    """Load an image as uint8 RGB ``[size, size, 3]`` (native size when ``size`` is None).

    Gray, RGBA (alpha dropped), palette, CMYK and 16-bit / 32-bit / float images are handled;
    resizing uses Pillow's bilinear filter (antialiased when shrinking). Non-square images are
    resized to a square without keeping the aspect ratio. Unreadable files raise
    :class:`CorruptImageError` naming the file.
    """
    img = _open_decoded(path, "image")
    try:
        rgb = _to_rgb_uint8(img)
    except (OSError, ValueError) as exc:
        raise CorruptImageError(f"cannot convert image {path} (colour mode {img.mode}) to RGB: {exc}") from exc
    if size is not None and rgb.size != (int(size), int(size)):
        rgb = rgb.resize((int(size), int(size)), Image.Resampling.BILINEAR)
    arr = np.asarray(rgb, dtype=np.uint8)
    return np.ascontiguousarray(arr)


class ImageTooLargeError(CorruptImageError):
    """An image whose header declares more pixels than allowed (decompression-bomb guard)."""


def decode_image(data: bytes, name: str = "image", *, max_pixels: int | None = None) -> np.ndarray:
    """Decode an image file's bytes (PNG, JPEG, BMP, TIFF, ...) exactly as :func:`load_image` reads a file.

    Returns uint8 RGB ``[H, W, 3]`` at the image's own size. ``max_pixels`` (width x height) is
    checked from the header, before any pixel is decoded. Every problem raises
    :class:`CorruptImageError` (:class:`ImageTooLargeError` for the size) naming ``name``: zero
    bytes, not a recognised image, truncated or corrupt data, too many pixels.
    """
    if not data:
        raise CorruptImageError(f"{name}: empty (0 bytes), not an image")
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size  # from the header: nothing decoded yet
            if max_pixels is not None and width * height > max_pixels:
                raise ImageTooLargeError(
                    f"{name}: {width}x{height} = {width * height / 1e6:.1f} megapixels, over the limit of "
                    f"{max_pixels / 1e6:.0f} megapixels (not decoded)"
                )
            img.load()
            img = img.copy()
    except CorruptImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"{name}: too many pixels, refused before decoding ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise CorruptImageError(f"{name}: not a recognised image file (PNG, JPEG, BMP, TIFF, ...)") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise CorruptImageError(f"{name}: corrupt or truncated image ({exc})") from exc
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous
    try:
        rgb = _to_rgb_uint8(img)
    except (OSError, ValueError) as exc:
        raise CorruptImageError(f"{name}: cannot convert colour mode {img.mode} to RGB: {exc}") from exc
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 RGB image -> ``size`` = (height, width) with Pillow's bilinear filter (as training resized)."""
    height, width = (int(s) for s in size)
    if image.shape[:2] == (height, width):
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR), dtype=np.uint8)


def load_mask(path: str | Path, size: int | None = None) -> np.ndarray:
    """Load a ground-truth mask as uint8 ``[size, size]`` of 0/1 (> 127 after conversion to gray).

    Masks of another size are resized with nearest-neighbour so they stay binary. Unreadable
    files raise :class:`CorruptImageError` naming the file.
    """
    img = _open_decoded(path, "mask")
    mode = img.mode
    if mode.startswith("I") or mode == "F":
        gray = _scale_to_uint8(np.asarray(img), mode)
    elif mode in ("LA", "La"):
        gray = np.asarray(img.getchannel(0))
    else:
        gray = np.asarray(img.convert("L"))
    mask = (gray > 127).astype(np.uint8)
    if size is not None and mask.shape != (int(size), int(size)):
        mask = np.asarray(
            Image.fromarray(mask, mode="L").resize((int(size), int(size)), Image.Resampling.NEAREST), dtype=np.uint8
        )
    return np.ascontiguousarray(mask)


def load_prepared_arrays(manifest: pd.DataFrame, size: int, *, progress: bool = True) -> dict[str, np.ndarray]:
    """Load every image (and mask) of a split manifest into the ``prepared_dataset`` arrays.

    Keys (docs/design.md): ``images`` uint8 [N,size,size,3]; ``masks`` uint8 [N,size,size] 0/1
    (all zero for good images and for defect images without mask); ``has_mask`` bool [N];
    ``split`` / ``defect_type`` / ``path`` numpy unicode arrays [N]; ``label`` int64 [N].
    The string arrays use a fixed-width unicode dtype, so ``np.savez`` needs no pickle.
    """
    required = {"path", "label", "defect_type", "mask_path", "split"}
    missing = required - set(manifest.columns)
    if missing:
        raise ValueError(
            f"manifest lacks column(s) {sorted(missing)}; run split_train_val(scan_dataset(root)) first"
        )
    if int(size) <= 0:
        raise ValueError(f"image size must be positive, got {size!r}")
    size = int(size)
    n = len(manifest)
    paths = [str(p) for p in manifest["path"]]
    # a manifest read back from CSV has NaN / <NA> where the mask path was ""
    mask_paths = ["" if pd.isna(m) else str(m) for m in manifest["mask_path"]]
    labels = manifest["label"].to_numpy().astype(np.int64)
    images = np.zeros((n, size, size, 3), dtype=np.uint8)
    masks = np.zeros((n, size, size), dtype=np.uint8)
    has_mask = np.zeros(n, dtype=bool)
    for i in tqdm(range(n), desc=f"loading images ({size}px)", disable=not progress, unit="img"):
        images[i] = load_image(paths[i], size)
        if mask_paths[i]:
            masks[i] = load_mask(mask_paths[i], size)
            has_mask[i] = True
            if labels[i] == 1 and not masks[i].any():
                logger.warning("mask %s is empty after resizing to %d px", mask_paths[i], size)
        else:
            has_mask[i] = labels[i] == 0  # good images: the all-zero mask is the known ground truth
    split = np.asarray([str(s) for s in manifest["split"]], dtype=str)
    bad = sorted(set(split.tolist()) - set(SPLITS))
    if bad:
        raise ValueError(f"manifest 'split' holds unknown value(s) {bad}; expected {SPLITS}")
    return {
        "images": images,
        "masks": masks,
        "has_mask": has_mask,
        "split": split,
        "label": labels,
        "defect_type": np.asarray([str(s) for s in manifest["defect_type"]], dtype=str),
        "path": np.asarray(paths, dtype=str),
    }


def prepare_dataset(
    root: str | Path,
    image_size: int = 256,
    val_fraction: float = 0.1,
    seed: int = 0,
    *,
    progress: bool = True,
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Scan + split + load: returns (manifest with a ``split`` column, prepared arrays)."""
    manifest = split_train_val(scan_dataset(root), val_fraction=val_fraction, seed=seed)
    return manifest, load_prepared_arrays(manifest, image_size, progress=progress)


def select(arrays: dict[str, np.ndarray], splits: str | Iterable[str]) -> dict[str, np.ndarray]:
    """Rows of the prepared arrays whose ``split`` is in ``splits`` (e.g. ``select(d, "train")``).

    Scalar (0-d) entries describe the whole set (``data_source``, ``synthetic``) and are kept as they are.
    """
    wanted = {splits} if isinstance(splits, str) else set(splits)
    keep = np.isin(arrays["split"], list(wanted))
    return {k: (v[keep] if np.ndim(v) else v) for k, v in arrays.items()}

"""Label-preserving nuisance transforms: what a production line does to a good board that changes
nothing about the wood (turned around, re-lit, JPEG-compressed, slightly out of focus).

Kedro-free. Every transform takes uint8 images ``[N, H, W, 3]`` and optional masks ``[N, H, W]``
and returns new arrays ``(images, masks)``; geometric transforms move the masks with the images,
photometric ones leave them unchanged. Everything is deterministic (``noise`` draws from a generator
seeded per image).

A *spec* is a mapping ``{kind: <kind>, <parameter>: <value>}``; the evaluation reads a mapping
``name -> spec`` from ``evaluation.nuisances`` in ``conf/base/parameters.yml``:

.. code-block:: yaml

    evaluation:
      nuisances:
        hflip: {kind: hflip}
        brightness_up: {kind: brightness, factor: 1.10}
        jpeg: {kind: jpeg, quality: 75}

Kinds and their parameters:

===================  ======================  ========================================================================
kind                 parameters              what it does
===================  ======================  ========================================================================
``hflip``            -                       mirror left-right (mask too)
``vflip``            -                       mirror top-bottom (mask too)
``rot180``           -                       turn by 180 degrees (mask too)
``brightness``       ``factor``              multiply every pixel by ``factor``, clip to 0..255
``contrast``         ``factor``              scale around each image's mean gray level, clip to 0..255
``jpeg``             ``quality``             JPEG encode/decode with Pillow at this quality (1..95)
``blur``             ``sigma``               Gaussian blur, ``sigma`` in pixels (scipy.ndimage)
``gamma``            ``gamma``               ``255 * (x / 255) ** gamma`` (exposure curve; < 1 brightens the shadows)
``white_balance``    ``red``, ``green``,     multiply each channel by its gain (a warmer or cooler light); each
                     ``blue``                gain defaults to 1.0
``saturation``       ``factor``              scale each pixel's distance from its own gray value (0 = grayscale)
``noise``            ``sigma``, ``seed``     add Gaussian sensor noise of ``sigma`` gray levels; seeded per image
                                             (``seed`` defaults to 0), so the same call gives the same images
``rotate``           ``degrees``             turn by a small angle about the centre, bilinear, borders reflected
                                             (mask too, nearest); a board lying slightly skewed on the conveyor
``shift``            ``dx``, ``dy``          move by whole pixels, borders reflected (mask too); a board off-centre
``identity``         -                       no change (useful as a control)
===================  ======================  ========================================================================

``rotate`` and ``shift`` are not their own inverse: :func:`invert_geometry` maps anomaly maps back onto the
original pixels (exact for ``shift`` away from the border, to interpolation for ``rotate``).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

__all__ = [
    "DEFAULT_NUISANCES",
    "EXTRA_NUISANCES",
    "GEOMETRIC_KINDS",
    "KINDS",
    "NuisanceSpec",
    "apply_nuisance",
    "apply_nuisance_single",
    "invert_geometry",
    "parse_nuisances",
]


def _clip_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _hflip(images: np.ndarray, masks: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    return np.ascontiguousarray(images[:, :, ::-1]), None if masks is None else np.ascontiguousarray(masks[:, :, ::-1])


def _vflip(images: np.ndarray, masks: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    return np.ascontiguousarray(images[:, ::-1]), None if masks is None else np.ascontiguousarray(masks[:, ::-1])


def _rot180(images: np.ndarray, masks: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    return (
        np.ascontiguousarray(images[:, ::-1, ::-1]),
        None if masks is None else np.ascontiguousarray(masks[:, ::-1, ::-1]),
    )


def _identity(images: np.ndarray, masks: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    return images.copy(), None if masks is None else masks.copy()


def _brightness(images: np.ndarray, masks: np.ndarray | None, *, factor: float) -> tuple[np.ndarray, np.ndarray | None]:
    return _clip_uint8(images.astype(np.float32) * np.float32(factor)), None if masks is None else masks.copy()


def _contrast(images: np.ndarray, masks: np.ndarray | None, *, factor: float) -> tuple[np.ndarray, np.ndarray | None]:
    x = images.astype(np.float32)
    mean = x.mean(axis=(1, 2, 3), keepdims=True)  # one gray level per image: the colour balance stays
    return _clip_uint8((x - mean) * np.float32(factor) + mean), None if masks is None else masks.copy()


def _jpeg(images: np.ndarray, masks: np.ndarray | None, *, quality: int) -> tuple[np.ndarray, np.ndarray | None]:
    out = np.empty_like(images)
    for i, img in enumerate(images):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=int(quality))
        buf.seek(0)
        with Image.open(buf) as decoded:
            out[i] = np.asarray(decoded.convert("RGB"))
    return out, None if masks is None else masks.copy()


def _blur(images: np.ndarray, masks: np.ndarray | None, *, sigma: float) -> tuple[np.ndarray, np.ndarray | None]:
    from scipy.ndimage import gaussian_filter

    x = gaussian_filter(images.astype(np.float32), sigma=(0.0, float(sigma), float(sigma), 0.0), mode="reflect")
    return _clip_uint8(x), None if masks is None else masks.copy()


def _gamma(images: np.ndarray, masks: np.ndarray | None, *, gamma: float) -> tuple[np.ndarray, np.ndarray | None]:
    lut = _clip_uint8(255.0 * (np.arange(256, dtype=np.float64) / 255.0) ** float(gamma))
    return lut[images], None if masks is None else masks.copy()


def _white_balance(
    images: np.ndarray, masks: np.ndarray | None, *, red: float, green: float, blue: float
) -> tuple[np.ndarray, np.ndarray | None]:
    gains = np.array([red, green, blue], np.float32)
    return _clip_uint8(images.astype(np.float32) * gains), None if masks is None else masks.copy()


def _saturation(images: np.ndarray, masks: np.ndarray | None, *, factor: float) -> tuple[np.ndarray, np.ndarray | None]:
    x = images.astype(np.float32)
    gray = (x @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]  # ITU-R 601 luma, as Pillow's "L"
    return _clip_uint8(gray + (x - gray) * np.float32(factor)), None if masks is None else masks.copy()


def _noise(
    images: np.ndarray, masks: np.ndarray | None, *, sigma: float, seed: int
) -> tuple[np.ndarray, np.ndarray | None]:
    out = np.empty_like(images)
    for i, img in enumerate(images):  # one stream per image: image i gets the same noise in any batch
        rng = np.random.default_rng([int(seed), i])
        out[i] = _clip_uint8(img.astype(np.float32) + rng.normal(0.0, float(sigma), img.shape).astype(np.float32))
    return out, None if masks is None else masks.copy()


def _rotate_arrays(arrays: np.ndarray, degrees: float, order: int) -> np.ndarray:
    from scipy.ndimage import rotate

    return rotate(arrays, float(degrees), axes=(2, 1), reshape=False, order=order, mode="reflect")


def _rotate(images: np.ndarray, masks: np.ndarray | None, *, degrees: float) -> tuple[np.ndarray, np.ndarray | None]:
    out = _clip_uint8(_rotate_arrays(images.astype(np.float32), degrees, order=1))
    return out, None if masks is None else _rotate_arrays(masks, degrees, order=0)


def _shift_arrays(arrays: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Content moves ``dx`` px right and ``dy`` px down; the uncovered border is a mirror of the edge."""
    h, w = arrays.shape[1:3]
    if abs(dx) >= w or abs(dy) >= h:
        raise ValueError(f"nuisance shift: dx={dx}, dy={dy} must be smaller than the image ({w} x {h})")
    pad = [(0, 0), (max(dy, 0), max(-dy, 0)), (max(dx, 0), max(-dx, 0))] + [(0, 0)] * (arrays.ndim - 3)
    padded = np.pad(arrays, pad, mode="symmetric")
    top, left = max(-dy, 0), max(-dx, 0)
    return padded[:, top : top + h, left : left + w].copy()


def _shift(images: np.ndarray, masks: np.ndarray | None, *, dx: int, dy: int) -> tuple[np.ndarray, np.ndarray | None]:
    return _shift_arrays(images, dx, dy), None if masks is None else _shift_arrays(masks, dx, dy)


# kind -> (function, {parameter: (type, check, description)})
_Check = tuple[type, Callable[[Any], bool], str]
KINDS: dict[str, tuple[Callable[..., tuple[np.ndarray, np.ndarray | None]], dict[str, _Check]]] = {
    "identity": (_identity, {}),
    "hflip": (_hflip, {}),
    "vflip": (_vflip, {}),
    "rot180": (_rot180, {}),
    "brightness": (_brightness, {"factor": (float, lambda v: v > 0, "> 0")}),
    "contrast": (_contrast, {"factor": (float, lambda v: v >= 0, ">= 0")}),
    "jpeg": (_jpeg, {"quality": (int, lambda v: 1 <= v <= 95, "in 1..95")}),
    "blur": (_blur, {"sigma": (float, lambda v: v >= 0, ">= 0")}),
    "gamma": (_gamma, {"gamma": (float, lambda v: v > 0, "> 0")}),
    "white_balance": (
        _white_balance,
        {c: (float, lambda v: v > 0, "> 0") for c in ("red", "green", "blue")},
    ),
    "saturation": (_saturation, {"factor": (float, lambda v: v >= 0, ">= 0")}),
    "noise": (_noise, {"sigma": (float, lambda v: v >= 0, ">= 0"), "seed": (int, lambda v: v >= 0, ">= 0")}),
    "rotate": (_rotate, {"degrees": (float, lambda v: abs(v) <= 45, "in -45..45")}),
    "shift": (_shift, {"dx": (int, lambda v: True, "an integer"), "dy": (int, lambda v: True, "an integer")}),
}
#: parameters a spec may leave out
OPTIONAL_PARAMS: dict[str, dict[str, Any]] = {
    "white_balance": {"red": 1.0, "green": 1.0, "blue": 1.0},
    "noise": {"seed": 0},
    "shift": {"dx": 0, "dy": 0},
}
INVOLUTION_KINDS = frozenset({"hflip", "vflip", "rot180"})
GEOMETRIC_KINDS = INVOLUTION_KINDS | {"rotate", "shift"}

# The issue-8 list; conf/base/parameters.yml (evaluation.nuisances) repeats it explicitly.
DEFAULT_NUISANCES: dict[str, dict[str, Any]] = {
    "hflip": {"kind": "hflip"},
    "vflip": {"kind": "vflip"},
    "rot180": {"kind": "rot180"},
    "brightness_up": {"kind": "brightness", "factor": 1.10},
    "brightness_down": {"kind": "brightness", "factor": 0.90},
    "contrast_down": {"kind": "contrast", "factor": 0.85},
    "jpeg": {"kind": "jpeg", "quality": 75},
    "blur": {"kind": "blur", "sigma": 1.0},
}

# More of what a line does, beyond the issue-8 list: an exposure curve, a warmer / cooler light, sensor noise,
# a board lying slightly skewed or off-centre. Not in conf/base (each costs one more scoring of the test set);
# `benchmarks/robustness.py --nuisances all` adds them to a run.
EXTRA_NUISANCES: dict[str, dict[str, Any]] = {
    "gamma_bright": {"kind": "gamma", "gamma": 0.9},
    "gamma_dark": {"kind": "gamma", "gamma": 1.1},
    "warm_light": {"kind": "white_balance", "red": 1.06, "green": 1.0, "blue": 0.94},
    "cool_light": {"kind": "white_balance", "red": 0.94, "green": 1.0, "blue": 1.06},
    "desaturate": {"kind": "saturation", "factor": 0.8},
    "noise": {"kind": "noise", "sigma": 3.0, "seed": 0},
    "skew": {"kind": "rotate", "degrees": 3.0},
    "off_centre": {"kind": "shift", "dx": 8, "dy": 4},
}

_NAMED_NUISANCES = {**EXTRA_NUISANCES, **DEFAULT_NUISANCES}


@dataclass(frozen=True)
class NuisanceSpec:
    """One named nuisance: ``kind`` (a key of :data:`KINDS`) and its parameters."""

    name: str
    kind: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def geometric(self) -> bool:
        return self.kind in GEOMETRIC_KINDS

    @classmethod
    def from_config(cls, name: str, spec: Mapping[str, Any] | str | None = None) -> NuisanceSpec:
        """``spec`` is a mapping ``{kind, ...parameters}``, a kind name, or None (then ``name`` is the kind,
        with the parameters of :data:`DEFAULT_NUISANCES` or :data:`EXTRA_NUISANCES` when it is listed there)."""
        if spec is None:
            spec = _NAMED_NUISANCES.get(name, {"kind": name})
        if isinstance(spec, str):
            spec = {"kind": spec}
        if not isinstance(spec, Mapping):
            raise ValueError(f"nuisance {name!r}: expected a mapping {{kind: ..., ...}}, got {type(spec).__name__}")
        spec = dict(spec)
        kind = str(spec.pop("kind", name))
        if kind not in KINDS:
            raise ValueError(f"nuisance {name!r}: unknown kind {kind!r}; known kinds: {sorted(KINDS)}")
        spec = {**OPTIONAL_PARAMS.get(kind, {}), **spec}
        allowed = KINDS[kind][1]
        unknown = sorted(set(spec) - set(allowed))
        if unknown:
            raise ValueError(f"nuisance {name!r} (kind {kind}): unknown parameter(s) {unknown}; allowed: {sorted(allowed)}")
        missing = sorted(set(allowed) - set(spec))
        if missing:
            raise ValueError(f"nuisance {name!r} (kind {kind}): missing parameter(s) {missing}")
        params: dict[str, Any] = {}
        for key, (typ, ok, what) in allowed.items():
            if typ is int and isinstance(spec[key], float) and not float(spec[key]).is_integer():
                raise ValueError(f"nuisance {name!r}: {key}={spec[key]!r} is not a whole number")
            try:
                value = typ(spec[key])
            except (TypeError, ValueError) as exc:
                raise ValueError(f"nuisance {name!r}: {key}={spec[key]!r} is not a {typ.__name__}") from exc
            if not ok(value):
                raise ValueError(f"nuisance {name!r}: {key}={value!r} must be {what}")
            params[key] = value
        return cls(name=str(name), kind=kind, params=params)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.params}


def parse_nuisances(config: Mapping[str, Any] | list[str] | None) -> dict[str, NuisanceSpec]:
    """``evaluation.nuisances`` -> ``{name: NuisanceSpec}`` in the configured order.

    ``None`` gives :data:`DEFAULT_NUISANCES`; an empty mapping/list gives none (nuisance evaluation off);
    a list of names uses each name's default spec.
    """
    if config is None:
        config = DEFAULT_NUISANCES
    if isinstance(config, (list, tuple)):
        return {str(n): NuisanceSpec.from_config(str(n)) for n in config}
    if not isinstance(config, Mapping):
        raise ValueError(f"evaluation.nuisances: expected a mapping name -> {{kind, ...}}, got {type(config).__name__}")
    return {str(n): NuisanceSpec.from_config(str(n), s) for n, s in config.items()}


def _as_spec(name_or_spec: str | NuisanceSpec | Mapping[str, Any]) -> NuisanceSpec:
    if isinstance(name_or_spec, NuisanceSpec):
        return name_or_spec
    if isinstance(name_or_spec, str):
        return NuisanceSpec.from_config(name_or_spec)
    if isinstance(name_or_spec, Mapping):
        spec = dict(name_or_spec)
        name = str(spec.pop("name", spec.get("kind", "nuisance")))
        return NuisanceSpec.from_config(name, spec)
    raise ValueError(f"apply_nuisance: expected a name, a spec mapping or a NuisanceSpec, got {type(name_or_spec).__name__}")


def apply_nuisance(
    name_or_spec: str | NuisanceSpec | Mapping[str, Any],
    images: np.ndarray,
    masks: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Apply one nuisance to uint8 ``images [N,H,W,3]`` (and ``masks [N,H,W]``) -> new ``(images, masks)``.

    ``name_or_spec``: a name of :data:`DEFAULT_NUISANCES` (or a kind without parameters), a spec
    mapping ``{kind, ...}`` or a :class:`NuisanceSpec`. The inputs are never modified.
    """
    spec = _as_spec(name_or_spec)
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"nuisance {spec.name!r}: expected uint8 images [N,H,W,3], got {images.dtype} {images.shape}")
    if masks is not None:
        masks = np.asarray(masks)
        if masks.shape != images.shape[:3]:
            raise ValueError(f"nuisance {spec.name!r}: masks {masks.shape} do not match images {images.shape[:3]}")
    fn = KINDS[spec.kind][0]
    return fn(images, masks, **spec.params)


def invert_geometry(spec: NuisanceSpec | str | Mapping[str, Any], maps: np.ndarray) -> np.ndarray:
    """Maps ``[N, H, W]`` computed on transformed images -> the original images' pixel grid.

    Flips and ``rot180`` are their own inverse; ``shift`` moves back (the mirrored border strip is the
    mirror of what the model saw there); ``rotate`` turns back by the opposite angle (bilinear); photometric
    kinds move nothing.
    """
    spec = _as_spec(spec)
    maps = np.asarray(maps)
    if spec.kind in INVOLUTION_KINDS:  # applying the transform again undoes it
        return KINDS[spec.kind][0](maps, None)[0]
    if spec.kind == "shift":
        return _shift_arrays(maps, -spec.params["dx"], -spec.params["dy"])
    if spec.kind == "rotate":
        return _rotate_arrays(maps.astype(np.float32), -spec.params["degrees"], order=1)
    return maps


def apply_nuisance_single(name_or_spec: str | NuisanceSpec | Mapping[str, Any], image: np.ndarray) -> np.ndarray:
    """One uint8 image ``[H,W,3]`` -> the transformed image (convenience wrapper)."""
    out, _ = apply_nuisance(name_or_spec, np.asarray(image)[None])
    return out[0]

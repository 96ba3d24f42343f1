"""Label-preserving nuisance transforms: what a production line does to a good board that changes
nothing about the wood (turned around, re-lit, JPEG-compressed, slightly out of focus).

Kedro-free. Every transform takes uint8 images ``[N, H, W, 3]`` and optional masks ``[N, H, W]``
and returns new arrays ``(images, masks)``; geometric transforms move the masks with the images,
photometric ones leave them unchanged. Everything is deterministic (no random numbers).

A *spec* is a mapping ``{kind: <kind>, <parameter>: <value>}``; the evaluation reads a mapping
``name -> spec`` from ``evaluation.nuisances`` in ``conf/base/parameters.yml``:

.. code-block:: yaml

    evaluation:
      nuisances:
        hflip: {kind: hflip}
        brightness_up: {kind: brightness, factor: 1.10}
        jpeg: {kind: jpeg, quality: 75}

Kinds and their parameters:

==============  ===================  ===============================================================
kind            parameters           what it does
==============  ===================  ===============================================================
``hflip``       -                    mirror left-right (mask too)
``vflip``       -                    mirror top-bottom (mask too)
``rot180``      -                    turn by 180 degrees (mask too)
``brightness``  ``factor``           multiply every pixel by ``factor``, clip to 0..255
``contrast``    ``factor``           scale around each image's mean gray level, clip to 0..255
``jpeg``        ``quality``          JPEG encode/decode with Pillow at this quality (1..95)
``blur``        ``sigma``            Gaussian blur, ``sigma`` in pixels (scipy.ndimage)
``identity``    -                    no change (useful as a control)
==============  ===================  ===============================================================
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
    "GEOMETRIC_KINDS",
    "KINDS",
    "NuisanceSpec",
    "apply_nuisance",
    "apply_nuisance_single",
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
}
GEOMETRIC_KINDS = frozenset({"hflip", "vflip", "rot180"})

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
        with the default parameters of :data:`DEFAULT_NUISANCES` when ``name`` is listed there)."""
        if spec is None:
            spec = DEFAULT_NUISANCES.get(name, {"kind": name})
        if isinstance(spec, str):
            spec = {"kind": spec}
        if not isinstance(spec, Mapping):
            raise ValueError(f"nuisance {name!r}: expected a mapping {{kind: ..., ...}}, got {type(spec).__name__}")
        spec = dict(spec)
        kind = str(spec.pop("kind", name))
        if kind not in KINDS:
            raise ValueError(f"nuisance {name!r}: unknown kind {kind!r}; known kinds: {sorted(KINDS)}")
        allowed = KINDS[kind][1]
        unknown = sorted(set(spec) - set(allowed))
        if unknown:
            raise ValueError(f"nuisance {name!r} (kind {kind}): unknown parameter(s) {unknown}; allowed: {sorted(allowed)}")
        missing = sorted(set(allowed) - set(spec))
        if missing:
            raise ValueError(f"nuisance {name!r} (kind {kind}): missing parameter(s) {missing}")
        params: dict[str, Any] = {}
        for key, (typ, ok, what) in allowed.items():
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


def apply_nuisance_single(name_or_spec: str | NuisanceSpec | Mapping[str, Any], image: np.ndarray) -> np.ndarray:
    """One uint8 image ``[H,W,3]`` -> the transformed image (convenience wrapper)."""
    out, _ = apply_nuisance(name_or_spec, np.asarray(image)[None])
    return out[0]

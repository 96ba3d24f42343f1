"""``TorchStateDataset``: a dict of tensors / numpy arrays / plain values in a ``.pt`` file.

Saved with ``torch.save``, loaded with ``torch.load(weights_only=True, map_location="cpu")``:
loading never runs pickled code. The only non-torch globals allowed while loading are the four
numpy ones needed to rebuild arrays and numpy scalars (``numpy._core.multiarray._reconstruct``,
``numpy.ndarray``, ``numpy.dtype``, ``numpy._core.multiarray.scalar`` and the numeric / string
dtype classes of ``numpy.dtypes``), see ``NUMPY_SAFE_GLOBALS``.

What ``save`` accepts (checked before anything is written, errors name the offending key):
a mapping whose values are, recursively, ``torch.Tensor`` (stored detached, on the CPU and
compacted when it is a view of a larger storage), ``numpy.ndarray`` (not object / structured
dtypes), numpy scalars, ``str``/``int``/``float``/``bool``/``None``/``bytes``, and
``list``/``tuple``/``dict`` of those.

Example catalog entry::

    "{model}.state":
      type: wood_anomaly.datasets.TorchStateDataset
      filepath: data/06_models/{model}/state.pt
      versioned: true
"""

from __future__ import annotations

import io
import json
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from kedro.io.core import DatasetError
from kedro_datasets._typing import JSONPreview

from ._base import BinaryFileDataset

#: numpy globals ``torch.load(weights_only=True)`` must accept to rebuild arrays / scalars
#: (the array constructor, ``ndarray``, ``dtype`` and the concrete dtype classes except object).
NUMPY_SAFE_GLOBALS: list[Any] = [
    np._core.multiarray._reconstruct,  # type: ignore[attr-defined]
    np.ndarray,
    np.dtype,
    np._core.multiarray.scalar,  # type: ignore[attr-defined]
    *(
        getattr(np.dtypes, name)
        for name in dir(np.dtypes)
        if name.endswith("DType") and name != "ObjectDType"
    ),
]

_PLAIN = (str, int, float, bool, bytes, type(None))
_PREVIEW_MAX_KEYS = 64
_PREVIEW_MAX_DEPTH = 4
_PREVIEW_MAX_STR = 200


def _clean_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """Detached CPU tensor that owns exactly its data (a view would save its whole storage)."""
    out = tensor.detach().to("cpu")
    if isinstance(out, torch.nn.Parameter):  # pragma: no cover - detach() already unwraps
        out = out.data
    needed = out.numel() * out.element_size()
    if out.untyped_storage().nbytes() != needed or not out.is_contiguous():
        out = out.contiguous().clone()
    return out


def sanitise_state(value: Any, where: str = "state") -> Any:
    """Validated copy of ``value`` that ``torch.load(weights_only=True)`` can read back.

    Raises:
        DatasetError: naming the key path (``state['a'][2]``) of the first unsupported value.
    """
    if isinstance(value, torch.Tensor):
        return _clean_tensor(value)
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "OV":
            raise DatasetError(
                f"{where} is a numpy array of dtype {value.dtype}: object and structured "
                "arrays cannot be loaded with weights_only=True; convert it to a numeric or "
                "string array"
            )
        return value
    if isinstance(value, np.generic):
        if value.dtype.kind in "OV":
            raise DatasetError(f"{where} is a numpy scalar of dtype {value.dtype}")
        return value
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, Mapping):
        out: dict[Any, Any] = OrderedDict() if isinstance(value, OrderedDict) else {}
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise DatasetError(f"{where} has a key {key!r} of type {type(key).__name__}")
            out[key] = sanitise_state(item, f"{where}[{key!r}]")
        return out
    if isinstance(value, (list, tuple)):
        items = [sanitise_state(item, f"{where}[{i}]") for i, item in enumerate(value)]
        return tuple(items) if isinstance(value, tuple) else items
    raise DatasetError(
        f"{where} is a {type(value).__module__}.{type(value).__qualname__}; a state may hold "
        "only tensors, numpy arrays, numpy scalars, str/int/float/bool/None/bytes and "
        "lists/tuples/dicts of those"
    )


def _summarise(value: Any, depth: int, totals: dict[str, int]) -> Any:
    """JSON-able summary of a state value for previews (shapes, not contents)."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        nbytes = (
            value.numel() * value.element_size()
            if isinstance(value, torch.Tensor)
            else value.nbytes
        )
        totals["array_bytes"] += int(nbytes)
        totals["n_arrays"] += 1
        dtype = str(value.dtype).removeprefix("torch.")
        kind = "tensor" if isinstance(value, torch.Tensor) else "ndarray"
        summary: dict[str, Any] = {"type": kind, "shape": list(value.shape), "dtype": dtype}
        if value.ndim == 0 and value.dtype != object:
            summary["value"] = _summarise(value.item(), depth, totals)
        return summary
    if isinstance(value, np.generic):
        return _summarise(value.item(), depth, totals)
    if isinstance(value, str):
        return value if len(value) <= _PREVIEW_MAX_STR else value[:_PREVIEW_MAX_STR] + "..."
    if isinstance(value, bytes):
        return f"bytes[{len(value)}]"
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    if isinstance(value, (int, float, bool, type(None))):
        return value
    if isinstance(value, Mapping):
        if depth >= _PREVIEW_MAX_DEPTH:
            return f"dict[{len(value)}]"
        keys = list(value.keys())
        out = {str(k): _summarise(value[k], depth + 1, totals) for k in keys[:_PREVIEW_MAX_KEYS]}
        if len(keys) > _PREVIEW_MAX_KEYS:
            out["..."] = f"{len(keys) - _PREVIEW_MAX_KEYS} more keys"
        return out
    if isinstance(value, (list, tuple)):
        plain = all(isinstance(v, _PLAIN) and not isinstance(v, bytes) for v in value)
        if len(value) <= 16 and plain:
            return [_summarise(v, depth + 1, totals) for v in value]
        for v in value:  # count arrays nested in long lists without listing them
            _summarise(v, _PREVIEW_MAX_DEPTH, totals)
        return f"{type(value).__name__}[{len(value)}]"
    return repr(value)[:_PREVIEW_MAX_STR]


class TorchStateDataset(BinaryFileDataset[Mapping[str, Any], dict[str, Any]]):
    """A model ``state`` dict in a ``.pt`` file (``torch.save`` / safe ``torch.load``).

    ``load_args`` go to ``torch.load`` (default ``map_location="cpu"``; ``weights_only`` is
    always True), ``save_args`` to ``torch.save``. See :class:`BinaryFileDataset` for the
    other arguments (filepath, version, credentials, fs_args, metadata).
    """

    FORMAT: ClassVar[str] = "a torch state (.pt)"
    DEFAULT_LOAD_ARGS: ClassVar[dict[str, Any]] = {"map_location": "cpu"}

    def _serialise(self, data: Mapping[str, Any]) -> bytes:
        if not isinstance(data, Mapping):
            raise DatasetError("a state must be a dict")
        state = sanitise_state(data)
        buffer = io.BytesIO()
        torch.save(state, buffer, **self._save_args)
        return buffer.getvalue()

    def _deserialise(self, raw: bytes) -> dict[str, Any]:
        load_args = {k: v for k, v in self._load_args.items() if k != "weights_only"}
        with torch.serialization.safe_globals(NUMPY_SAFE_GLOBALS):
            state = torch.load(io.BytesIO(raw), weights_only=True, **load_args)
        if not isinstance(state, dict):
            raise TypeError(f"expected a dict, found {type(state).__name__}")
        return state

    def preview(self) -> JSONPreview:
        """JSON summary for kedro-viz: keys with shapes/dtypes, scalar config values, sizes."""
        header = self._preview_header()
        totals = {"array_bytes": 0, "n_arrays": 0}
        summary = _summarise(self.load(), 0, totals)
        return JSONPreview(json.dumps({**header, **totals, "state": summary}))

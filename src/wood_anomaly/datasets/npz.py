"""``NpzDataset``: a dict of numpy arrays in one ``.npz`` file, without pickle.

Saved with ``np.savez_compressed`` (``np.savez`` with ``save_args: {compress: false}``),
loaded with ``np.load(allow_pickle=False)`` into a plain ``dict`` (keys in saved order).
Object arrays (and structured arrays holding objects) are refused on save with an error that
names the key: they would need pickle to load. Strings are fine as numpy ``str_`` arrays.

Example catalog entry::

    prepared_dataset:
      type: wood_anomaly.datasets.NpzDataset
      filepath: data/03_primary/prepared_dataset.npz
      versioned: true
"""

from __future__ import annotations

import io
import math
import zipfile
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
from kedro.io.core import DatasetError
from kedro_datasets._typing import TablePreview

from ._base import BinaryFileDataset

#: names ``np.savez*`` takes as its own arguments, so they cannot be array keys.
RESERVED_KEYS = frozenset({"file", "allow_pickle", "args", "kwds"})
PREVIEW_COLUMNS = ["key", "shape", "dtype", "min", "max", "mean", "std"]
_STATS_MAX_ELEMENTS = 50_000_000


def _finite_or_none(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def array_stats(array: np.ndarray) -> list[float | None]:
    """[min, max, mean, std] of a non-empty 1-D numeric/bool array (NaNs ignored), else Nones."""
    if array.ndim != 1 or array.size == 0 or array.dtype.kind not in "biuf":
        return [None] * 4
    values = array.astype(np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return [None] * 4
    return [
        _finite_or_none(finite.min()),
        _finite_or_none(finite.max()),
        _finite_or_none(finite.mean()),
        _finite_or_none(finite.std()),
    ]


def _read_npy_header(member: Any) -> tuple[tuple[int, ...], np.dtype]:
    version = np.lib.format.read_magic(member)
    if version == (1, 0):
        shape, _fortran, dtype = np.lib.format.read_array_header_1_0(member)
    else:
        shape, _fortran, dtype = np.lib.format.read_array_header_2_0(member)
    return tuple(shape), dtype


class NpzDataset(BinaryFileDataset[Mapping[str, Any], dict[str, np.ndarray]]):
    """Saves / loads ``dict[str, np.ndarray]`` as ``.npz``. Versioned when ``versioned: true``.

    ``save_args``: ``compress`` (default True: ``savez_compressed``; False: ``savez``).
    ``load_args``: extra ``np.load`` options (``allow_pickle`` is always False).
    See :class:`BinaryFileDataset` for the other arguments.
    """

    FORMAT: ClassVar[str] = "npz"
    DEFAULT_SAVE_ARGS: ClassVar[dict[str, Any]] = {"compress": True}

    def _serialise(self, data: Mapping[str, Any]) -> bytes:
        if not isinstance(data, Mapping):
            raise DatasetError("expected a dict of arrays")
        arrays: dict[str, np.ndarray] = {}
        for key, value in data.items():
            if not isinstance(key, str) or not key:
                raise DatasetError(f"key {key!r} is not a non-empty str")
            if key in RESERVED_KEYS:
                raise DatasetError(
                    f"key '{key}' is reserved by numpy.savez "
                    f"(reserved: {sorted(RESERVED_KEYS)})"
                )
            array = np.asarray(value)
            if array.dtype.hasobject:
                raise DatasetError(
                    f"array '{key}' has dtype {array.dtype} "
                    "(Python objects); npz files here are written and read without pickle. "
                    "Convert it, e.g. strings with np.asarray(values, dtype=str)."
                )
            arrays[key] = array
        buffer = io.BytesIO()
        save = np.savez_compressed if self._save_args.get("compress", True) else np.savez
        save(buffer, allow_pickle=False, **arrays)
        return buffer.getvalue()

    def _deserialise(self, raw: bytes) -> dict[str, np.ndarray]:
        load_args = {k: v for k, v in self._load_args.items() if k != "allow_pickle"}
        npz = np.load(io.BytesIO(raw), allow_pickle=False, **load_args)
        if not isinstance(npz, np.lib.npyio.NpzFile):  # a bare .npy file
            raise ValueError("the file is a single .npy array, not an .npz archive")
        with npz:
            return {key: npz[key] for key in npz.files}

    def preview(self, nrows: int = 50) -> TablePreview:
        """Table for kedro-viz: one row per array (key, shape, dtype; min/max/mean/std for
        1-D numeric arrays). Reads only the array headers, plus the 1-D arrays' data."""
        rows: list[list[Any]] = []
        with self._open_for_read() as fs_file, zipfile.ZipFile(fs_file) as archive:
            for name in archive.namelist()[:nrows]:
                key = name.removesuffix(".npy")
                with archive.open(name) as member:
                    shape, dtype = _read_npy_header(member)
                stats: list[float | None] = [None] * 4
                if len(shape) == 1 and dtype.kind in "biuf" and shape[0] <= _STATS_MAX_ELEMENTS:
                    with archive.open(name) as member:
                        stats = array_stats(np.lib.format.read_array(member, allow_pickle=False))
                rows.append([key, list(shape), str(dtype), *stats])
        return TablePreview(
            {"index": list(range(len(rows))), "columns": PREVIEW_COLUMNS, "data": rows}
        )

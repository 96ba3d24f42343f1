"""``FaissIndexDataset``: a FAISS index in a ``.faiss`` file, on any fsspec filesystem.

The index goes through ``faiss.serialize_index`` / ``faiss.deserialize_index`` (the same bytes
``faiss.write_index`` / ``read_index`` produce) so that remote filesystems work too. A GPU index
is copied to the CPU (``faiss.index_gpu_to_cpu``) before it is written, so the file always
holds a CPU index that any faiss build can read; moving it back to a GPU is the loader's
choice (PatchCore does it by itself when a GPU is there).

Example catalog entry::

    "{model}.memory_bank":
      type: wood_anomaly.datasets.FaissIndexDataset
      filepath: data/06_models/{model}/memory_bank.faiss
      versioned: true
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import faiss
import numpy as np
from kedro.io.core import DatasetError
from kedro_datasets._typing import JSONPreview

from ._base import BinaryFileDataset

_GPU_CONTAINERS = ("IndexShards", "IndexReplicas")


def metric_name(metric_type: int) -> str:
    """``faiss.METRIC_L2`` -> ``"L2"`` (or the number when faiss has no name for it)."""
    for name in dir(faiss):
        if name.startswith("METRIC_") and getattr(faiss, name) == metric_type:
            return name.removeprefix("METRIC_")
    return str(metric_type)


def is_gpu_index(index: Any) -> bool:
    """True for ``faiss.GpuIndex*`` objects (and shard/replica wrappers when faiss has GPUs)."""
    name = type(index).__name__
    if name.startswith("Gpu"):
        return True
    gpu_base = getattr(faiss, "GpuIndex", None)
    if gpu_base is not None and isinstance(index, gpu_base):
        return True
    # containers may hold GPU sub-indexes; only a GPU-enabled faiss can have made them.
    return name in _GPU_CONTAINERS and getattr(faiss, "get_num_gpus", lambda: 0)() > 0


def to_cpu_index(index: faiss.Index) -> faiss.Index:
    """CPU copy of a GPU index (the index itself when it is already on the CPU)."""
    if not is_gpu_index(index):
        return index
    converter = getattr(faiss, "index_gpu_to_cpu", None)
    if converter is None:
        raise DatasetError(
            f"{type(index).__name__} is a GPU index but this faiss build has no "
            "index_gpu_to_cpu; save it from a faiss-gpu installation"
        )
    return converter(index)


class FaissIndexDataset(BinaryFileDataset[faiss.Index, faiss.Index]):
    """Saves / loads a ``faiss.Index`` (``.faiss``). Versioned when ``versioned: true``.

    ``load_args`` / ``save_args`` are not used (kept for the catalog's uniform signature).
    See :class:`BinaryFileDataset` for the other arguments.
    """

    FORMAT: ClassVar[str] = "a faiss index (.faiss)"

    def _serialise(self, data: faiss.Index) -> bytes:
        if not isinstance(data, faiss.Index):
            raise DatasetError(
                f"expected a faiss.Index, got {type(data).__module__}.{type(data).__qualname__}"
            )
        return bytes(faiss.serialize_index(to_cpu_index(data)).tobytes())

    def _deserialise(self, raw: bytes) -> faiss.Index:
        if not raw:
            raise ValueError("the file is empty")
        return faiss.deserialize_index(np.frombuffer(raw, dtype=np.uint8))

    def preview(self) -> JSONPreview:
        """JSON summary for kedro-viz: number of vectors, dimension, index type and metric."""
        index = self.load()
        info: dict[str, Any] = {
            **self._preview_header(),
            "ntotal": int(index.ntotal),
            "d": int(index.d),
            "index_type": type(index).__name__,
            "metric": metric_name(int(index.metric_type)),
            "is_trained": bool(index.is_trained),
        }
        return JSONPreview(json.dumps(info))

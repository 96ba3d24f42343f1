"""Custom Kedro datasets (versionable, any fsspec filesystem).

- :class:`TorchStateDataset` (``.pt``): model state dicts, loaded with ``weights_only=True``.
- :class:`FaissIndexDataset` (``.faiss``): FAISS indexes (GPU indexes are saved as CPU ones).
- :class:`NpzDataset` (``.npz``): dicts of numpy arrays, no pickle.

Use in ``catalog.yml`` as ``type: wood_anomaly.datasets.NpzDataset`` (etc.).
"""

from .faiss_index import FaissIndexDataset
from .npz import NpzDataset
from .torch_state import TorchStateDataset

__all__ = ["FaissIndexDataset", "NpzDataset", "TorchStateDataset"]

"""``PngFolderDataset``: a dict ``{name: uint8 image}`` saved as one PNG per entry in a folder, versioned.

``PartitionedDataset`` refuses versioned inner datasets, and inference outputs must only grow, so
this saves ``<filepath>/<version>/<folder name>/<name>.png`` (Kedro's versioned layout, with a folder
in place of a file). Loading returns ``{name: np.ndarray}`` of the chosen (default: newest) version.

Example::

    inference.overlays:
      type: wood_anomaly.datasets.image_folder.PngFolderDataset
      filepath: data/07_model_output/inference/overlays
      versioned: true
"""

from __future__ import annotations

import glob
import re
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from kedro.io.core import AbstractVersionedDataset, DatasetError, Version
from kedro_datasets._typing import ImagePreview
from PIL import Image

_SAFE = re.compile(r"^[\w.\- ]+$")


class PngFolderDataset(AbstractVersionedDataset[dict[str, np.ndarray], dict[str, np.ndarray]]):
    """Saves ``{name: uint8 [H, W, 3] or [H, W]}`` as ``<name>.png`` files (local filesystem)."""

    def __init__(self, *, filepath: str, version: Version | None = None, metadata: dict[str, Any] | None = None) -> None:
        super().__init__(filepath=PurePosixPath(filepath), version=version,
                         exists_function=lambda p: Path(p).is_dir(), glob_function=glob.glob)
        self.metadata = metadata

    def save(self, data: dict[str, np.ndarray]) -> None:
        if not isinstance(data, dict):
            raise DatasetError(f"PngFolderDataset '{self._filepath}' saves a dict of images, got {type(data).__name__}")
        for name, image in data.items():  # validate everything before writing anything
            if not _SAFE.match(str(name)) or str(name) in {".", ".."}:
                raise DatasetError(f"PngFolderDataset '{self._filepath}': unsafe file name {name!r}")
            if np.asarray(image).dtype != np.uint8:
                raise DatasetError(f"PngFolderDataset '{self._filepath}': image {name!r} is not uint8")
        folder = Path(str(self._get_save_path()))
        folder.mkdir(parents=True, exist_ok=False)
        for name, image in data.items():
            Image.fromarray(np.asarray(image)).save(folder / f"{name}.png")

    def load(self) -> dict[str, np.ndarray]:
        folder = Path(str(self._get_load_path()))
        if not folder.is_dir():
            raise DatasetError(f"PngFolderDataset: no folder {folder}")
        return {p.stem: np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))}

    def _exists(self) -> bool:
        try:
            return Path(str(self._get_load_path())).is_dir()
        except DatasetError:
            return False

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "version": self._version}

    def preview(self) -> ImagePreview:
        """kedro-viz: the first PNG of the newest version (base64)."""
        import base64

        folder = Path(str(self._get_load_path()))
        first = next(iter(sorted(folder.glob("*.png"))), None)
        if first is None:
            raise DatasetError(f"PngFolderDataset: {folder} holds no PNG")
        return ImagePreview(base64.b64encode(first.read_bytes()).decode("ascii"))

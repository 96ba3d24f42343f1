"""Fixtures for the data-layer tests: tiny MVTec-layout trees written into tmp_path."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REAL_DATA_ENV = "WOOD_REAL_DATA"


def real_data_root() -> Path | None:
    """The real VSB wood set: $WOOD_REAL_DATA, else ../shared/datasets/vsb_wood_esogu next to the repo."""
    env = os.environ.get(REAL_DATA_ENV)
    candidates = [Path(env)] if env else []
    repo_root = Path(__file__).resolve().parents[2]
    candidates.append(repo_root.parent / "shared" / "datasets" / "vsb_wood_esogu")
    return next((c for c in candidates if (c / "train" / "good").is_dir()), None)


@pytest.fixture
def real_root() -> Path:
    root = real_data_root()
    if root is None:
        pytest.skip(f"real wood data not found (set ${REAL_DATA_ENV} or put it in ../shared/datasets/vsb_wood_esogu)")
    return root


def write_rgb(path: Path, size: int = 32, seed: int = 0, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, format=fmt)
    return path


def write_mask(path: Path, size: int = 32, box: tuple[int, int, int, int] = (4, 4, 12, 12)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.zeros((size, size), dtype=np.uint8)
    y0, x0, y1, x1 = box
    arr[y0:y1, x0:x1] = 255
    Image.fromarray(arr, mode="L").save(path)
    return path


MakeTree = Callable[..., Path]


@pytest.fixture
def make_tree(tmp_path: Path) -> MakeTree:
    """Factory for a small valid MVTec tree; keyword arguments shape it.

    n_train / n_test_good: counts of good images; defects: {type: n}; masks: write a mask per
    defect image (``<stem>_mask.png``). Returns the root.
    """

    def _make(
        name: str = "ds",
        n_train: int = 5,
        n_test_good: int = 3,
        defects: dict[str, int] | None = None,
        masks: bool = True,
        size: int = 32,
    ) -> Path:
        root = tmp_path / name
        defects = {"crack": 2, "knot": 2} if defects is None else defects
        seed = 0
        for i in range(n_train):
            write_rgb(root / "train" / "good" / f"{i}.png", size, seed := seed + 1)
        for i in range(n_test_good):
            write_rgb(root / "test" / "good" / f"{i}.png", size, seed := seed + 1)
        for dtype_, n in defects.items():
            for i in range(n):
                write_rgb(root / "test" / dtype_ / f"{i:03d}.png", size, seed := seed + 1)
                if masks:
                    write_mask(root / "ground_truth" / dtype_ / f"{i:03d}_mask.png", size)
        return root

    return _make

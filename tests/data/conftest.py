"""Fixtures for the data-layer tests: tiny MVTec-layout trees written into tmp_path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


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


@pytest.fixture
def imgio() -> object:
    """The file writers above, for tests that build odd trees by hand (conftest is not importable)."""
    from types import SimpleNamespace

    return SimpleNamespace(write_rgb=write_rgb, write_mask=write_mask)

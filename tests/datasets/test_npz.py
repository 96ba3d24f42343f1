"""NpzDataset specifics: no pickle, strings, compression switch, reserved keys."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from kedro.io.core import DatasetError

from wood_anomaly.datasets import NpzDataset


def test_object_arrays_are_refused_naming_the_key(tmp_path: Path) -> None:
    dataset = NpzDataset(filepath=str(tmp_path / "a.npz"))
    with pytest.raises(DatasetError, match=r"a\.npz.*'paths'.*object"):
        dataset.save({"ok": np.zeros(2), "paths": np.array(["a", None], dtype=object)})
    assert not (tmp_path / "a.npz").exists()


def test_a_pickled_npz_from_elsewhere_is_not_loaded(tmp_path: Path) -> None:
    path = tmp_path / "pickled.npz"
    np.savez(path, x=np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DatasetError, match=r"pickled\.npz.*(?i:pickle)"):
        NpzDataset(filepath=str(path)).load()


def test_lists_become_arrays_and_keys_keep_order(tmp_path: Path) -> None:
    dataset = NpzDataset(filepath=str(tmp_path / "a.npz"))
    dataset.save({"z": [1, 2], "a": ["x", "yy"], "m": np.zeros((2, 2), dtype=bool)})
    loaded = dataset.load()
    assert list(loaded) == ["z", "a", "m"]
    assert loaded["a"].dtype.kind == "U" and loaded["z"].tolist() == [1, 2]


def test_compression_switch(tmp_path: Path) -> None:
    data = {"zeros": np.zeros(100_000, dtype=np.float32)}
    NpzDataset(filepath=str(tmp_path / "c.npz")).save(data)
    NpzDataset(filepath=str(tmp_path / "u.npz"), save_args={"compress": False}).save(data)
    assert (tmp_path / "c.npz").stat().st_size < 10_000 < (tmp_path / "u.npz").stat().st_size
    np.testing.assert_array_equal(NpzDataset(filepath=str(tmp_path / "u.npz")).load()["zeros"],
                                  data["zeros"])


@pytest.mark.parametrize("key", ["file", "allow_pickle", ""])
def test_bad_keys_are_refused(tmp_path: Path, key: str) -> None:
    with pytest.raises(DatasetError, match="key"):
        NpzDataset(filepath=str(tmp_path / "a.npz")).save({key: np.zeros(1)})


def test_a_single_npy_is_not_an_npz(tmp_path: Path) -> None:
    path = tmp_path / "single.npz"
    with path.open("wb") as handle:
        np.save(handle, np.zeros(3))
    with pytest.raises(DatasetError, match=r"single\.npz.*not an \.npz"):
        NpzDataset(filepath=str(path)).load()

"""TorchStateDataset specifics: what a state may hold, safe loading, compact tensors."""

from __future__ import annotations

import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from kedro.io.core import DatasetError

from wood_anomaly.datasets import TorchStateDataset


def test_types_survive_round_trip(tmp_path: Path) -> None:
    state = {
        "weights": OrderedDict(conv=torch.ones(2, 2, dtype=torch.float16)),
        "param": torch.nn.Parameter(torch.zeros(3)),
        "names": np.array(["a", "bb"]),
        "flags": np.array([True, False]),
        "np_scalar": np.float32(1.5),
        "tuple": (1, "x"),
        "nested": {"list": [1, 2.5, None, {"deep": torch.arange(3)}]},
        "blob": b"\x00\x01",
    }
    dataset = TorchStateDataset(filepath=str(tmp_path / "s.pt"))
    dataset.save(state)
    loaded = dataset.load()
    assert isinstance(loaded["weights"], OrderedDict)
    assert loaded["weights"]["conv"].dtype == torch.float16
    assert not loaded["param"].requires_grad  # stored detached
    np.testing.assert_array_equal(loaded["names"], state["names"])
    assert loaded["np_scalar"] == np.float32(1.5) and loaded["np_scalar"].dtype == np.float32
    assert loaded["tuple"] == (1, "x") and loaded["blob"] == b"\x00\x01"
    assert torch.equal(loaded["nested"]["list"][3]["deep"], torch.arange(3))


def test_a_view_is_stored_without_its_whole_storage(tmp_path: Path) -> None:
    big = torch.zeros(100_000)
    dataset = TorchStateDataset(filepath=str(tmp_path / "s.pt"))
    dataset.save({"head": big[:10]})
    assert (tmp_path / "s.pt").stat().st_size < 10_000
    assert torch.equal(dataset.load()["head"], torch.zeros(10))


@pytest.mark.parametrize(
    ("value", "where"),
    [
        ({"model": {"layer": torch.nn.Linear(2, 2)}}, r"state\['model'\]\['layer'\]"),
        ({"names": np.array(["a", None], dtype=object)}, r"state\['names'\].*object"),
        ({"items": [1, {2, 3}]}, r"state\['items'\]\[1\]"),
        ({(1, 2): 3}, r"key \(1, 2\)"),
    ],
)
def test_unsupported_values_are_named(tmp_path: Path, value: dict, where: str) -> None:
    dataset = TorchStateDataset(filepath=str(tmp_path / "s.pt"))
    with pytest.raises(DatasetError, match=r"s\.pt.*" + where):
        dataset.save(value)
    assert not (tmp_path / "s.pt").exists()


class _Evil:
    def __reduce__(self):  # runs on unpickling when loading is unsafe
        return (print, ("pwned",))


def test_loading_never_runs_pickled_code(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"x": _Evil()}, path)  # written by someone else, not through the dataset
    with pytest.raises(DatasetError, match=r"evil\.pt.*(?i:weights.only|unsupported global)"):
        TorchStateDataset(filepath=str(path)).load()


def test_a_non_dict_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tensor.pt"
    torch.save(torch.ones(2), path)
    with pytest.raises(DatasetError, match=r"tensor\.pt.*expected a dict"):
        TorchStateDataset(filepath=str(path)).load()


def test_a_plain_pickle_is_not_a_torch_file(tmp_path: Path) -> None:
    path = tmp_path / "plain.pt"
    path.write_bytes(pickle.dumps({"a": 1}, protocol=2))
    with pytest.raises(DatasetError, match=r"plain\.pt"):
        TorchStateDataset(filepath=str(path)).load()

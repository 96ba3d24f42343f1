"""Behaviour shared by the three custom datasets: round trips, versioning, errors, catalog."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import kedro.io.core as kedro_core
import numpy as np
import pytest
import torch
from kedro.io import DataCatalog
from kedro.io.core import DatasetError, Version

from wood_anomaly.datasets import FaissIndexDataset, NpzDataset, TorchStateDataset


def _state(seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    return {
        "mean": torch.from_numpy(rng.normal(size=(3, 4)).astype(np.float32)),
        "inv_cov": rng.normal(size=(2, 2)),
        "channels": np.arange(5, dtype=np.int64),
        "config": {"backbone": "resnet18", "layers": ["layer1", "layer2"], "image_size": 32,
                   "normalise": True, "eps": 0.01, "none": None},
        "seed": seed,
    }


def _index(seed: int) -> faiss.Index:
    index = faiss.IndexFlatL2(8)
    index.add(np.random.default_rng(seed).normal(size=(20 + seed, 8)).astype(np.float32))
    return index


def _arrays(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "images": rng.integers(0, 255, size=(3, 8, 8, 3), dtype=np.uint8),
        "scores": rng.normal(size=4 + seed).astype(np.float32),
        "has_mask": np.array([True, False, True]),
        "split": np.array(["train", "val", "test"]),
    }


def _assert_state_equal(a: Any, b: Any) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and b.dtype == a.dtype and torch.equal(a, b)
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and b.dtype == a.dtype
        np.testing.assert_array_equal(a, b)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for key in a:
            _assert_state_equal(a[key], b[key])
    else:
        assert a == b and type(a) is type(b)


def _assert_index_equal(a: faiss.Index, b: faiss.Index) -> None:
    assert (a.ntotal, a.d, a.metric_type, type(a)) == (b.ntotal, b.d, b.metric_type, type(b))
    queries = np.random.default_rng(99).normal(size=(5, a.d)).astype(np.float32)
    da, ia = a.search(queries, 3)
    db, ib = b.search(queries, 3)
    np.testing.assert_array_equal(ia, ib)
    np.testing.assert_allclose(da, db)


def _assert_arrays_equal(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert list(a) == list(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        np.testing.assert_array_equal(a[key], b[key])


@dataclass(frozen=True)
class Case:
    cls: type
    suffix: str
    make: Callable[[int], Any]
    check: Callable[[Any, Any], None]


CASES = [
    Case(TorchStateDataset, "pt", _state, _assert_state_equal),
    Case(FaissIndexDataset, "faiss", _index, _assert_index_equal),
    Case(NpzDataset, "npz", _arrays, _assert_arrays_equal),
]


@pytest.fixture(params=CASES, ids=lambda c: c.cls.__name__)
def case(request: pytest.FixtureRequest) -> Case:
    return request.param


def test_round_trip_not_versioned(case: Case, tmp_path: Path) -> None:
    path = tmp_path / f"sub/x.{case.suffix}"
    dataset = case.cls(filepath=str(path))
    assert not dataset.exists()
    dataset.save(case.make(0))
    assert dataset.exists() and path.is_file()
    case.check(case.make(0), case.cls(filepath=str(path)).load())


def test_round_trip_on_a_remote_style_filesystem(case: Case) -> None:
    path = f"memory://wood_anomaly_tests/{case.cls.__name__}/x.{case.suffix}"
    dataset = case.cls(filepath=path, version=Version(None, None))
    dataset.save(case.make(1))
    case.check(case.make(1), case.cls(filepath=path, version=Version(None, None)).load())


def test_versioned_saves_grow_and_pinned_load(case: Case, tmp_path: Path, monkeypatch) -> None:
    stamps = iter(f"2026-01-01T00.00.{i:02d}.000Z" for i in range(10))
    monkeypatch.setattr(kedro_core, "generate_timestamp", lambda: next(stamps))
    path = str(tmp_path / f"x.{case.suffix}")
    dataset = case.cls(filepath=path, version=Version(None, None))
    assert not dataset.exists()
    with warnings.catch_warnings():  # Kedro warns when save and load versions disagree
        warnings.simplefilter("error")
        dataset.save(case.make(0))
        dataset.save(case.make(1))
    versions = dataset.list_versions(full_path=False)
    # one timestamp per save (a doubly wrapped save would draw two and warn)
    assert versions == ["2026-01-01T00.00.01.000Z", "2026-01-01T00.00.00.000Z"]
    assert dataset.exists()
    # newest by default ...
    case.check(case.make(1), case.cls(filepath=path, version=Version(None, None)).load())
    # ... or a pinned one
    pinned = case.cls(filepath=path, version=Version(versions[1], None))
    case.check(case.make(0), pinned.load())
    assert pinned.exists()
    assert not case.cls(filepath=path, version=Version("1999-01-01T00.00.00.000Z", None)).exists()


def test_saving_to_an_existing_version_raises(case: Case, tmp_path: Path) -> None:
    path = tmp_path / f"x.{case.suffix}"
    version = Version(None, "2026-01-01T00.00.00.000Z")
    case.cls(filepath=str(path), version=version).save(case.make(0))
    stored = (path / version.save / path.name).read_bytes()
    with pytest.raises(DatasetError, match="must not exist"):
        case.cls(filepath=str(path), version=version).save(case.make(1))
    assert (path / version.save / path.name).read_bytes() == stored


@pytest.mark.parametrize("content", [b"", b"this is not the right format" * 3])
def test_corrupt_file_error_names_the_file(case: Case, tmp_path: Path, content: bytes) -> None:
    path = tmp_path / f"broken.{case.suffix}"
    path.write_bytes(content)
    with pytest.raises(DatasetError, match=r"broken\." + case.suffix) as info:
        case.cls(filepath=str(path)).load()
    assert case.cls.__name__ in str(info.value)


def test_missing_file_error_names_the_file(case: Case, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"missing\." + case.suffix):
        case.cls(filepath=str(tmp_path / f"missing.{case.suffix}")).load()


def test_unsupported_data_is_refused_before_writing(case: Case, tmp_path: Path) -> None:
    path = tmp_path / f"x.{case.suffix}"
    dataset = case.cls(filepath=str(path), version=Version(None, None))
    with pytest.raises(DatasetError, match=r"x\." + case.suffix):
        dataset.save(object())  # type: ignore[arg-type]
    assert not path.exists()  # not even an empty version folder


def test_built_from_catalog_config(case: Case, tmp_path: Path) -> None:
    path = str(tmp_path / f"x.{case.suffix}")
    config = {"x": {"type": f"wood_anomaly.datasets.{case.cls.__name__}",
                    "filepath": path, "versioned": True,
                    "fs_args": {"open_args_save": {"mode": "wb"}},
                    "metadata": {"kedro-viz": {"layer": "models"}}}}
    catalog = DataCatalog.from_config(config)
    assert isinstance(catalog["x"], case.cls)
    assert catalog["x"].metadata == {"kedro-viz": {"layer": "models"}}
    catalog.save("x", case.make(0))
    case.check(case.make(0), DataCatalog.from_config(config).load("x"))
    assert len(list(Path(path).iterdir())) == 1  # one timestamped version folder


def test_describe_names_file_and_version(case: Case, tmp_path: Path) -> None:
    dataset = case.cls(filepath=str(tmp_path / f"x.{case.suffix}"), version=Version(None, None))
    text = str(dataset)
    assert f"x.{case.suffix}" in text and "version" in text


# ------------------------------------------------------------------ previews ----------------


def test_torch_state_preview(tmp_path: Path) -> None:
    dataset = TorchStateDataset(filepath=str(tmp_path / "s.pt"), version=Version(None, None))
    dataset.save(_state(0))
    preview = dataset.preview()
    assert isinstance(preview, str)
    info = json.loads(preview)
    assert info["state"]["mean"] == {"type": "tensor", "shape": [3, 4], "dtype": "float32"}
    assert info["state"]["inv_cov"] == {"type": "ndarray", "shape": [2, 2], "dtype": "float64"}
    assert info["state"]["config"]["backbone"] == "resnet18"
    assert info["state"]["config"]["layers"] == ["layer1", "layer2"]
    assert info["state"]["seed"] == 0
    assert info["n_arrays"] == 3
    assert info["array_bytes"] == 3 * 4 * 4 + 2 * 2 * 8 + 5 * 8
    assert info["file_bytes"] == Path(dataset._get_load_path()).stat().st_size
    assert info["version"] == dataset.list_versions(full_path=False)[0]


def test_faiss_preview(tmp_path: Path) -> None:
    dataset = FaissIndexDataset(filepath=str(tmp_path / "m.faiss"))
    dataset.save(faiss.IndexFlatIP(6))
    info = json.loads(dataset.preview())
    assert info["ntotal"] == 0 and info["d"] == 6
    assert info["index_type"] == "IndexFlatIP" and info["metric"] == "INNER_PRODUCT"
    dataset.save(_index(2))
    info = json.loads(dataset.preview())
    assert (info["ntotal"], info["d"], info["metric"]) == (22, 8, "L2")
    assert info["file_bytes"] > 22 * 8 * 4


def test_npz_preview(tmp_path: Path) -> None:
    dataset = NpzDataset(filepath=str(tmp_path / "a.npz"))
    data = _arrays(0)
    data["with_nan"] = np.array([1.0, np.nan, 3.0])
    dataset.save(data)
    table = dataset.preview()
    assert table["columns"] == ["key", "shape", "dtype", "min", "max", "mean", "std"]
    rows = {row[0]: row for row in table["data"]}
    assert list(rows) == list(data)
    assert rows["images"][1:] == [[3, 8, 8, 3], "uint8", None, None, None, None]
    scores = data["scores"].astype(np.float64)
    assert rows["scores"][1:3] == [[4], "float32"]
    np.testing.assert_allclose(rows["scores"][3:], [scores.min(), scores.max(), scores.mean(),
                                                    scores.std()], rtol=1e-6)
    assert rows["has_mask"][3:6] == [0.0, 1.0, pytest.approx(2 / 3)]
    assert rows["split"][2] == "<U5" and rows["split"][3] is None
    assert rows["with_nan"][3:5] == [1.0, 3.0]  # NaNs ignored, never emitted (JSON-safe)
    json.dumps(table, allow_nan=False)
    assert len(dataset.preview(nrows=2)["data"]) == 2


def test_previews_are_typed_for_kedro_viz() -> None:
    import inspect

    # kedro-viz reads the annotation's name the same way and maps it to a renderer
    # ("JSONPreview" -> json: a JSON *string*; "TablePreview" -> table: split-orient dict)
    annotations = {cls.__name__: inspect.signature(cls.preview).return_annotation
                   for cls in (TorchStateDataset, FaissIndexDataset, NpzDataset)}
    names = {k: getattr(a, "__name__", str(a)) for k, a in annotations.items()}
    assert names == {"TorchStateDataset": "JSONPreview", "FaissIndexDataset": "JSONPreview",
                     "NpzDataset": "TablePreview"}

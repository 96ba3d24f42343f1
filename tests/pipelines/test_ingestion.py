"""Where the raw data comes from: the shipped real boards by default, a generated SYNTHETIC set only when
asked for (dataset.synthetic=true) or when dataset.path is missing (dataset.generate_if_missing), and
never written over a real folder."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from wood_anomaly.data.layout import scan_dataset
from wood_anomaly.data.synthetic import NotASyntheticSetError
from wood_anomaly.pipelines.ingestion.nodes import locate_raw_dataset

REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED = REPO_ROOT / "data" / "01_raw" / "wood"
TINY = {"n_train": 3, "n_test_good": 1, "n_test_defect": 1, "image_size": 16, "seed": 0}


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def params(tmp_path: Path, **overrides) -> dict:
    return {
        "path": str(tmp_path / "real"),
        "synthetic": False,
        "generate_if_missing": True,
        "synthetic_set": {"path": str(tmp_path / "synthetic"), **TINY},
        **overrides,
    }


@pytest.fixture
def real_folder(tmp_path: Path, tiny_dataset: Path) -> Path:
    """A real-looking (not generated) MVTec folder: the tiny set without the generator's README."""
    import shutil

    real = tmp_path / "real"
    shutil.copytree(tiny_dataset, real, ignore=shutil.ignore_patterns("README.txt"))
    return real


def test_existing_folder_is_used_as_is(tmp_path, real_folder):
    out = locate_raw_dataset(params(tmp_path))
    assert out == {"root": str(real_folder.resolve()), "synthetic": False}
    assert not (tmp_path / "synthetic").exists()


def test_missing_path_is_an_error_when_generation_is_off(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist.*generate_if_missing is false"):
        locate_raw_dataset(params(tmp_path, generate_if_missing=False))
    assert not (tmp_path / "synthetic").exists()


def test_missing_path_falls_back_to_a_loudly_announced_synthetic_set(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        out = locate_raw_dataset(params(tmp_path))
    assert out == {"root": str((tmp_path / "synthetic").resolve()), "synthetic": True}
    assert not (tmp_path / "real").exists()  # written beside, never at dataset.path
    assert len(scan_dataset(tmp_path / "synthetic")) == 5
    assert "SYNTHETIC" in caplog.text and "does not exist" in caplog.text


def test_synthetic_true_leaves_the_real_folder_untouched(tmp_path, real_folder, caplog):
    before = snapshot(real_folder)
    with caplog.at_level(logging.WARNING):
        out = locate_raw_dataset(params(tmp_path, synthetic=True))
    assert out["synthetic"] is True and out["root"] == str((tmp_path / "synthetic").resolve())
    assert snapshot(real_folder) == before
    assert "dataset.synthetic=true" in caplog.text and "SYNTHETIC" in caplog.text
    # `--params=dataset.synthetic=true` arrives as a string from some callers
    assert locate_raw_dataset(params(tmp_path, synthetic="true"))["synthetic"] is True


def test_same_synthetic_set_is_reused_other_arguments_regenerate(tmp_path):
    locate_raw_dataset(params(tmp_path, synthetic=True))
    first = snapshot(tmp_path / "synthetic")
    locate_raw_dataset(params(tmp_path, synthetic=True))
    assert snapshot(tmp_path / "synthetic") == first  # same arguments: not rewritten
    bigger = params(tmp_path, synthetic=True)
    bigger["synthetic_set"]["n_train"] = 4
    locate_raw_dataset(bigger)
    assert len(scan_dataset(tmp_path / "synthetic").query("source_split == 'train'")) == 4


def test_synthetic_set_never_overwrites_a_real_folder(tmp_path, real_folder):
    before = snapshot(real_folder)
    clash = params(tmp_path, synthetic=True)
    clash["synthetic_set"]["path"] = str(real_folder)
    with pytest.raises(FileExistsError, match="is the real data folder"):
        locate_raw_dataset(clash)
    other = tmp_path / "other_real"
    other.mkdir()
    (other / "board.jpg").write_bytes(b"not generated")
    clash["synthetic_set"]["path"] = str(other)
    with pytest.raises(NotASyntheticSetError):
        locate_raw_dataset(clash)
    assert snapshot(real_folder) == before and (other / "board.jpg").read_bytes() == b"not generated"


def test_legacy_synthetic_dict_still_sizes_the_set(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default synthetic_set.path is relative to the project
    out = locate_raw_dataset({"path": "missing", "generate_if_missing": True, "synthetic": dict(TINY)})
    assert out == {"root": str((tmp_path / "data" / "01_raw" / "synthetic_wood").resolve()), "synthetic": True}
    assert len(scan_dataset(out["root"])) == 5


def test_default_config_points_at_the_shipped_real_boards():
    import yaml

    dataset = yaml.safe_load((REPO_ROOT / "conf" / "base" / "parameters.yml").read_text())["dataset"]
    assert dataset["path"] == "data/01_raw/wood" and dataset["synthetic"] is False
    assert Path(dataset["synthetic_set"]["path"]).resolve() != Path(dataset["path"]).resolve()
    if not (SHIPPED / "train" / "good").is_dir():
        pytest.skip("the shipped data set is not in this checkout")
    manifest = scan_dataset(SHIPPED)
    counts = manifest.groupby(["source_split", "defect_type"]).size().to_dict()
    assert counts == {("train", "good"): 70, ("test", "good"): 70, ("test", "defect"): 71}
    assert manifest.query("label == 1")["has_mask"].all()
    licence = (SHIPPED / "LICENSE.md").read_text()
    for needed in ("CC BY 4.0", "10.5281/zenodo.4694695", "Kodytek", "Bodzas", "Bilik"):
        assert needed in licence


def test_real_data_fixture_skips_a_partial_copy(tmp_path, monkeypatch):
    """tests/conftest.py's `real_data` skips (not fails) unless every part of the set is there."""
    import importlib.util
    import shutil
    import sys

    spec = importlib.util.spec_from_file_location("wood_tests_conftest", REPO_ROOT / "tests" / "conftest.py")
    conftest = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, conftest)  # its dataclasses look their module up there
    spec.loader.exec_module(conftest)
    complete = tmp_path / "complete"
    for part in conftest.REAL_DATA_PARTS:
        (complete / part).mkdir(parents=True)
        (complete / part / "x.png").write_bytes(b"x")
    assert conftest.real_data_problem(complete) is None
    for part in conftest.REAL_DATA_PARTS:
        partial = tmp_path / f"partial_{part.replace('/', '_')}"
        shutil.copytree(complete, partial)
        shutil.rmtree(partial / part)
        assert part in conftest.real_data_problem(partial)
        (partial / part).mkdir()  # present but empty is partial too
        assert part in conftest.real_data_problem(partial)

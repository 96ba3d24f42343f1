"""Inference: `kedro run --pipeline=inference --params="inference.model=...,inference.images=<folder>"`."""

from __future__ import annotations

import io
import json
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

V_OLD, V_NEW = "2026-01-01T10.00.00.000Z", "2026-01-02T10.00.00.000Z"


# ---- a stand-in model saved the way the model pipelines save (fast; the real models are checked below) ----
class BrightnessModel:
    """Score = mean darkness * gain; map = darkness. Enough to check every step of inference."""

    def __init__(self, gain: float) -> None:
        self.gain = gain

    @classmethod
    def from_artifacts(cls, state: dict) -> BrightnessModel:
        return cls(float(state["gain"]))

    def score(self, images: np.ndarray, *, batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
        assert images.dtype == np.uint8 and images.shape[1:] == (64, 64, 3), images.shape  # the training size
        maps = self.gain * (1.0 - images.mean(axis=-1) / 255.0)
        return maps.mean(axis=(1, 2)).astype(np.float32), maps.astype(np.float32)


@pytest.fixture
def saved_model(kedro_project: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, float]:
    """Two saved versions of a 'padim' (stand-in) model: thresholds 0.5 (old) and 0.3 (new)."""
    from wood_anomaly.datasets import TorchStateDataset
    from wood_anomaly.datasets import trained_model
    from wood_anomaly.pipelines.model_pipeline import ModelSpec

    module = types.ModuleType("wood_inference_stand_in")
    module.BrightnessModel = BrightnessModel
    monkeypatch.setitem(sys.modules, module.__name__, module)
    spec = ModelSpec(name="padim", model_path=f"{module.__name__}:BrightnessModel", artifacts={"state": "state"})
    real_spec = trained_model.model_spec
    monkeypatch.setattr(trained_model, "model_spec", lambda name: spec if name == "padim" else real_spec(name))

    data = kedro_project / "data"
    thresholds = {V_OLD: 0.5, V_NEW: 0.3}
    for version, threshold in thresholds.items():
        from kedro.io.core import Version

        TorchStateDataset(filepath=str(data / "06_models/padim/state.pt"), version=Version(None, version)).save({"gain": 1.0})
        metrics_file = data / "08_reporting/padim/metrics.json" / version / "metrics.json"
        metrics_file.parent.mkdir(parents=True)
        metrics_file.write_text(json.dumps({"threshold": threshold, "image_auroc": 0.9}))
        scores_file = data / "07_model_output/padim/scores.npz" / version / "scores.npz"
        scores_file.parent.mkdir(parents=True)
        buffer = io.BytesIO()
        np.savez(buffer, maps=np.linspace(0, 1, 2 * 64 * 64, dtype=np.float16).reshape(2, 64, 64), scores=np.zeros(2))
        scores_file.write_bytes(buffer.getvalue())
    return thresholds


def board(path: Path, value: int, size: tuple[int, int] = (64, 64)) -> Path:
    """A flat grey board (score = 1 - value/255 for the stand-in model)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def boards(tmp_path: Path) -> Path:
    folder = tmp_path / "new_boards"
    board(folder / "bright.png", 230)          # score 0.098 -> good at either threshold
    board(folder / "mid.jpg", 150)             # score 0.41  -> defect at 0.3, good at 0.5
    board(folder / "dark.png", 20)             # score 0.92  -> defect
    board(folder / "wide.png", 20, (96, 48))   # another size: resized, still scored
    (folder / "notes.txt").write_text("not an image, ignored")
    return folder


def params(folder: Path | str | None, **extra) -> dict:
    """What `--params="inference.model=padim,inference.images=<folder>,..."` gives Kedro (nested, like the CLI)."""
    return {"inference": {"model": "padim", "images": None if folder is None else str(folder), **extra}}


def outputs(project: Path) -> list[tuple[pd.DataFrame, Path]]:
    root = project / "data/07_model_output/inference"
    pred = root / "predictions.csv"
    found = []
    for version in sorted(p.name for p in pred.iterdir()):
        found.append((pd.read_csv(pred / version / "predictions.csv"), root / "overlays" / version / "overlays"))
    return found


def test_inference_scores_every_image_with_the_latest_model(kedro_project, saved_model, boards, run_kedro, monkeypatch):
    from wood_anomaly.pipelines.inference import nodes

    warnings: list[str] = []  # Kedro's logging setup drops handlers added by tests (caplog too): spy instead
    real_warning = nodes.logger.warning
    monkeypatch.setattr(nodes.logger, "warning", lambda msg, *a, **k: (warnings.append(msg % a), real_warning(msg, *a, **k)))
    run_kedro(kedro_project, "inference", params(boards))
    ((table, overlay_dir),) = outputs(kedro_project)

    assert sorted(table["file"]) == ["bright.png", "dark.png", "mid.jpg", "wide.png"]  # one row per image
    rows = table.set_index("file")
    assert set(rows["version"]) == {V_NEW} and set(rows["threshold"]) == {0.3}  # newest version, its threshold
    assert rows.loc["mid.jpg", "score"] == pytest.approx(1 - 150 / 255, abs=0.01)
    assert rows["verdict"].to_dict() == {"bright.png": "good", "mid.jpg": "defect", "dark.png": "defect", "wide.png": "defect"}
    assert rows.loc["wide.png", "resized"] and rows.loc["wide.png", "original_size"] == "96x48"
    assert not rows.loc["dark.png", "resized"]
    assert (rows["ms"] >= 0).all()
    assert any("wide.png is 96x48 px; resized to 64x64" in m for m in warnings), warnings

    pngs = sorted(p.name for p in overlay_dir.iterdir())
    assert pngs == ["bright.png", "dark.png", "mid.png", "wide.png"]
    dark, bright = (np.asarray(Image.open(overlay_dir / f"{n}.png"), dtype=float) for n in ("dark", "bright"))
    assert dark.shape == (64, 64, 3)
    # heat on the model's saved colour scale (jet): the dark board's map is hot (red), the bright one's cold (blue)
    assert (dark[..., 0] - dark[..., 2]).mean() > 50 and (bright[..., 2] - bright[..., 0]).mean() > 50


def test_pinned_version_and_outputs_only_grow(kedro_project, saved_model, boards, run_kedro):
    run_kedro(kedro_project, "inference", params(boards))
    run_kedro(kedro_project, "inference", params(boards, version=V_OLD))
    (first, _), (second, _) = outputs(kedro_project)
    assert set(first["version"]) == {V_NEW} and set(second["version"]) == {V_OLD}
    assert second.set_index("file").loc["mid.jpg", "verdict"] == "good"  # threshold 0.5 of the old version


def test_no_trained_model_is_a_clear_error_naming_the_training_command(kedro_project, saved_model, boards, run_kedro):
    with pytest.raises(Exception, match=r"no trained 'patchcore' model yet.*kedro run --pipeline=patchcore"):
        run_kedro(kedro_project, "inference", {"inference": {"model": "patchcore", "images": str(boards)}})
    assert not (kedro_project / "data/07_model_output/inference").exists()  # nothing half-written


@pytest.mark.parametrize(
    ("model", "version", "message"),
    [
        ("resnet", None, r"unknown model 'resnet'.*patchcore, padim"),
        ("padim", "2020-01-01T00.00.00.000Z", r"no trained model at version '2020-01-01T00.00.00.000Z'.*" + V_OLD),
        ("padim", None, None),
    ],
)
def test_model_choice_errors(kedro_project, saved_model, model, version, message):
    """The catalog's dataset, as `inference.model` / `inference.version` configure it (the run above shows
    such errors reach the user unchanged)."""
    from wood_anomaly.datasets.trained_model import TrainedModelDataset

    dataset = TrainedModelDataset(model=model, model_version=version)
    if message is None:
        loaded = dataset.load()
        assert (loaded.version, loaded.threshold, loaded.image_size) == (V_NEW, 0.3, (64, 64))
    else:
        with pytest.raises(Exception, match=message):
            dataset.load()


@pytest.mark.parametrize(
    ("folder", "message"),
    [(None, r"inference.images is not set"), ("nowhere", r"nowhere: folder does not exist"),
     ("empty", r"empty: no images in this folder"), ("board.png", r"board\.png: not a folder")],
)
def test_folder_errors(tmp_path, folder, message):
    from wood_anomaly.pipelines.inference.nodes import read_images

    board(tmp_path / "board.png", 100)  # a file where a folder is expected
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("no images here")
    with pytest.raises(Exception, match=message):
        read_images({"images": None if folder is None else str(tmp_path / folder)})


def test_unreadable_image_is_named_and_skipped_only_when_asked(kedro_project, saved_model, boards, run_kedro):
    (boards / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(Exception, match=r"unreadable image .*broken\.png.*inference\.skip_unreadable=true"):
        run_kedro(kedro_project, "inference", params(boards))
    assert not (kedro_project / "data/07_model_output/inference").exists()

    run_kedro(kedro_project, "inference", params(boards, skip_unreadable=True))
    ((table, overlay_dir),) = outputs(kedro_project)
    rows = table.set_index("file")
    assert len(rows) == 5 and rows.loc["broken.png", "verdict"] == "unreadable"
    assert "broken.png" in rows.loc["broken.png", "error"] and np.isnan(rows.loc["broken.png", "score"])
    assert rows.drop("broken.png")["score"].notna().all()
    assert len(list(overlay_dir.iterdir())) == 4


def test_inference_with_a_trained_model_reproduces_its_evaluation_scores(kedro_project, tiny_dataset, run_kedro):
    """Real path: train patchcore (tiny), then score its own test boards through the inference pipeline."""
    run_kedro(kedro_project, "patchcore", {"dataset": {"path": str(tiny_dataset), "image_size": 64},
                                           "patchcore": {"model": {"coreset_ratio": 0.25}}, "evaluation": {"n_overlays": 2}})
    folder = tiny_dataset / "test" / "good"
    run_kedro(kedro_project, "inference", {"inference": {"model": "patchcore", "images": str(folder)}})
    ((table, overlay_dir),) = outputs(kedro_project)

    scores_dir = kedro_project / "data/07_model_output/patchcore/scores.npz"
    (version,) = [p.name for p in scores_dir.iterdir()]
    with np.load(scores_dir / version / "scores.npz") as saved:
        expected = {Path(p).name: float(s) for p, s in zip(saved["path"], saved["scores"]) if Path(p).parent == folder}
    metrics = json.loads((kedro_project / "data/08_reporting/patchcore/metrics.json" / version / "metrics.json").read_text())
    rows = table.set_index("file")
    assert sorted(rows.index) == sorted(expected) and set(rows["version"]) == {version}
    for name, score in expected.items():
        assert rows.loc[name, "score"] == pytest.approx(score, rel=1e-4, abs=1e-5), name
        assert rows.loc[name, "verdict"] == ("defect" if score > metrics["threshold"] else "good")
    assert len(list(overlay_dir.glob("*.png"))) == len(expected)


def test_every_image_unreadable_is_an_error_even_when_skipping(tmp_path):
    from wood_anomaly.pipelines.inference.nodes import read_images

    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (folder / "b.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(Exception, match=r"unreadable image .*a\.png"):
        read_images({"images": str(folder)})
    with pytest.raises(Exception, match=r"broken: none of the 2 image\(s\) can be read"):
        read_images({"images": str(folder), "skip_unreadable": True})


def test_two_images_with_one_stem_keep_two_rows_and_two_overlays(kedro_project, saved_model, tmp_path, run_kedro):
    folder = tmp_path / "same_stem"
    board(folder / "board.png", 230)
    board(folder / "board.jpg", 20)
    run_kedro(kedro_project, "inference", params(folder))
    ((table, overlay_dir),) = outputs(kedro_project)
    rows = table.set_index("file")
    assert sorted(rows.index) == ["board.jpg", "board.png"]
    assert rows["verdict"].to_dict() == {"board.png": "good", "board.jpg": "defect"}  # each scored on its own image
    overlays = sorted(p.name for p in overlay_dir.iterdir())
    assert len(overlays) == 2 and len(set(overlays)) == 2, overlays  # neither overwrites the other


def test_model_version_without_weights_is_a_clear_error(kedro_project, saved_model):
    """A metrics.json version with no weights saved at or before it (a run that died after evaluating,
    or weights deleted by hand) names the missing file and the command that retrains."""
    import shutil

    from wood_anomaly.datasets.trained_model import TrainedModelDataset

    shutil.rmtree(kedro_project / "data/06_models/padim/state.pt" / V_OLD)
    with pytest.raises(Exception, match=rf"padim: metrics version {V_OLD} has no saved state.*kedro run --pipeline=padim"):
        TrainedModelDataset(model="padim", model_version=V_OLD).load()
    shutil.rmtree(kedro_project / "data/06_models/padim/state.pt")
    with pytest.raises(Exception, match=rf"metrics version {V_NEW} has no saved state.*versions there: none"):
        TrainedModelDataset(model="padim").load()

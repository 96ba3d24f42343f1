"""The model registry is the one list of models: pipelines, hooks, reporting and inference agree with it,
and inference's artifact datasets come from the catalog's ``{model}.*`` factories."""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path

import pytest
import yaml
from kedro.io.core import DatasetError

from wood_anomaly.models.registry import (
    AUGMENTED_MODELS,
    MODEL_NAMES,
    MODELS,
    UnknownModelError,
    import_model_class,
    model_spec,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_six_models_in_canonical_order():
    assert MODEL_NAMES == ("patchcore", "padim", "efficientad", "autoencoder", "vae", "ganomaly")
    assert AUGMENTED_MODELS == {"efficientad", "autoencoder", "vae", "ganomaly"}
    assert {n for n in MODEL_NAMES if MODELS[n].reconstructs} == {"autoencoder", "vae", "ganomaly"}


def test_unknown_model_names_the_known_ones():
    with pytest.raises(UnknownModelError, match="unknown model 'patchcor'.*patchcore, padim"):
        model_spec("patchcor")


def test_every_layer_reads_the_registry():
    from wood_anomaly import hooks, pipeline_registry
    from wood_anomaly.datasets import model_results

    assert hooks.MODEL_NAMES is MODEL_NAMES
    assert model_results.DEFAULT_MODELS is MODEL_NAMES
    assert pipeline_registry.AUGMENTED_MODELS is AUGMENTED_MODELS
    for name in MODEL_NAMES:
        assert importlib.import_module(f"wood_anomaly.pipelines.{name}.pipeline").SPEC is MODELS[name]
    pipelines = pipeline_registry.register_pipelines()
    assert set(MODEL_NAMES) <= set(pipelines)
    for name in MODEL_NAMES:  # the augmentation preview runs exactly for the augmented models
        has_preview = "augmentation_preview" in pipelines[name].all_outputs()
        assert has_preview == (name in AUGMENTED_MODELS), name


@pytest.mark.parametrize("name", ["autoencoder", "vae", "ganomaly"])
def test_keras_artifact_keys_match_the_class(name):
    spec = MODELS[name]
    cls = spec.load_class()  # a 2-fold cross-fitted ensemble (models/ensemble.py): the member's keys per fold
    assert tuple(spec.artifacts) == cls.artifact_keys(cls.member_class().artifact_names)


def test_import_model_class():
    assert import_model_class("wood_anomaly.models.registry:ModelSpec") is type(MODELS["padim"])


def test_artifact_datasets_come_from_the_catalog(tmp_path):
    from wood_anomaly.datasets.trained_model import TrainedModelDataset, catalog_artifact_datasets

    found = catalog_artifact_datasets(REPO_ROOT / "conf")
    assert set(found) == {"state", "state_{fold}", "memory_bank", "keras_{part}"}
    assert found["state"] == {"type": "wood_anomaly.datasets.TorchStateDataset", "filepath": "{models_dir}/state.pt"}
    assert found["keras_{part}"]["save_args"]["include_optimizer"] is False
    # every artifact of every model resolves to a file under its models_dir
    for name, spec in MODELS.items():
        dataset = TrainedModelDataset(model=name, conf_source=str(REPO_ROOT / "conf"), models_dir=f"/m/{name}")
        for artifact in spec.artifacts.values():
            assert dataset._artifact_config(artifact)["filepath"].startswith(f"/m/{name}/")

    # a change in the catalog is followed (no copy to keep in sync) ...
    conf = tmp_path / "conf"
    shutil.copytree(REPO_ROOT / "conf", conf, ignore=shutil.ignore_patterns("local"))
    (conf / "local").mkdir()
    catalog = yaml.safe_load((conf / "base" / "catalog.yml").read_text())
    catalog["{model}.state"]["dataset"]["filepath"] = "data/06_models/{model}/weights.pt"
    (conf / "base" / "catalog.yml").write_text(yaml.safe_dump(catalog))
    assert catalog_artifact_datasets(conf)["state"]["filepath"] == "{models_dir}/weights.pt"
    # ... and a catalog without a factory for an artifact is a clear error
    del catalog["{model}.memory_bank"]
    (conf / "base" / "catalog.yml").write_text(yaml.safe_dump(catalog))
    with pytest.raises(DatasetError, match="memory_bank"):
        catalog_artifact_datasets(conf)

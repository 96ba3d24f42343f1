"""The one list of the project's models: what each is, where its class lives, what it saves.

Everything that needs to know "which models exist" reads this module: the model pipelines
(``pipelines/<model>/pipeline.py`` take their :class:`ModelSpec` from here), the pipeline registry
(which pipelines get the augmentation preview), the MLflow hook (which namespaces are models), the
reporting datasets (report order) and inference (``TrainedModelDataset``: artifact keys, class).

Importing this module is cheap: model classes are given as dotted paths and imported on demand
(:meth:`ModelSpec.load_class`), so listing models never starts TensorFlow or PyTorch.

Adding a model: write ``models/<name>/`` (fit/score/to_artifacts/from_artifacts), add a
:class:`ModelSpec` below, a ``pipelines/<name>/`` package whose ``SPEC = model_spec("<name>")``,
and ``conf/base/parameters_<name>.yml``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping


@dataclass(frozen=True)
class ModelSpec:
    """What differs between models.

    ``artifacts`` maps the keys of ``Model.to_artifacts()`` to dataset names inside the model's
    namespace (``{"state": "state"}`` -> catalog entry ``padim.state``, which the catalog's
    ``{model}.state`` factory stores).
    """

    name: str
    model_path: str  # "wood_anomaly.models.padim:Padim"
    artifacts: dict[str, str] = field(default_factory=lambda: {"state": "state"})
    uses_augmentation: bool = False  # gradient-trained: gets params:augmentation.transforms on the fly
    reconstructs: bool = False  # reconstruction model: also saves a grid of reconstructions (PNG)
    title: str = ""  # display name ("PatchCore")
    framework: str = ""  # "PyTorch", "Keras 3 / TensorFlow", ...

    @property
    def class_path(self) -> str:
        return self.model_path

    @property
    def gradient_trained(self) -> bool:
        return self.uses_augmentation

    def load_class(self) -> type:
        """Import and return the model class (imports TensorFlow / PyTorch as needed)."""
        return import_model_class(self.model_path)


_SPECS = (
    ModelSpec(
        name="patchcore",
        title="PatchCore",
        framework="PyTorch + FAISS",
        model_path="wood_anomaly.models.patchcore:PatchCore",
        artifacts={"memory_bank": "memory_bank", "state": "state"},
    ),
    ModelSpec(
        name="padim",
        title="PaDiM",
        framework="PyTorch",
        model_path="wood_anomaly.models.padim:Padim",
        artifacts={"state": "state"},
    ),
    ModelSpec(
        name="efficientad",
        title="EfficientAD",
        framework="PyTorch",
        # a 2-fold cross-fitted ensemble of EfficientAD (models/ensemble.py): out-of-fold threshold scores
        model_path="wood_anomaly.models.ensemble:EfficientADFolds",
        artifacts={"state_fold0": "state_fold0", "state_fold1": "state_fold1"},
        uses_augmentation=True,
    ),
    ModelSpec(
        name="autoencoder",
        title="AutoEncoder",
        framework="Keras 3 / TensorFlow",
        model_path="wood_anomaly.models.ensemble:AutoEncoderFolds",  # 2-fold cross-fitted ensemble
        artifacts={f"model_fold{j}": f"keras_model_fold{j}" for j in range(2)},
        uses_augmentation=True,
        reconstructs=True,
    ),
    ModelSpec(
        name="vae",
        title="VAE",
        framework="Keras 3 / TensorFlow",
        model_path="wood_anomaly.models.ensemble:VAEFolds",  # 2-fold cross-fitted ensemble
        artifacts={f"{part}_fold{j}": f"keras_{part}_fold{j}" for j in range(2) for part in ("encoder", "decoder")},
        uses_augmentation=True,
        reconstructs=True,
    ),
    ModelSpec(
        name="ganomaly",
        title="GANomaly",
        framework="Keras 3 / TensorFlow",
        model_path="wood_anomaly.models.ensemble:GANomalyFolds",  # 2-fold cross-fitted ensemble
        artifacts={f"{part}_fold{j}": f"keras_{part}_fold{j}" for j in range(2) for part in ("generator", "discriminator")},
        uses_augmentation=True,
        reconstructs=True,
    ),
)

#: name -> spec, in the project's canonical (report) order.
MODELS: Mapping[str, ModelSpec] = MappingProxyType({s.name: s for s in _SPECS})
#: every model name, in canonical order.
MODEL_NAMES: tuple[str, ...] = tuple(MODELS)
#: models trained by gradient descent: they use the augmentation transforms (and its preview).
AUGMENTED_MODELS: frozenset[str] = frozenset(s.name for s in _SPECS if s.uses_augmentation)


class UnknownModelError(KeyError):
    """A model name the project does not know."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def model_spec(name: str) -> ModelSpec:
    """The spec of a model by name; :class:`UnknownModelError` naming the known ones otherwise."""
    try:
        return MODELS[name]
    except KeyError:
        raise UnknownModelError(f"unknown model {name!r}: use one of {', '.join(MODEL_NAMES)}") from None


def import_model_class(model_path: str) -> type:
    """'package.module:ClassName' -> the class."""
    module_name, _, class_name = model_path.partition(":")
    return getattr(importlib.import_module(module_name), class_name)

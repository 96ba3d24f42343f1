"""autoencoder pipeline: the shared model pipeline (train -> score -> evaluate) in namespace `autoencoder`."""

from kedro.pipeline import Pipeline

from ..model_pipeline import ModelSpec, create_model_pipeline

SPEC = ModelSpec(
    name="autoencoder",
    model_path="wood_anomaly.models.autoencoder:AutoEncoder",
    artifacts={"model": "keras_model"},
    uses_augmentation=True,
    reconstructs=True,
)


def create_pipeline(**kwargs) -> Pipeline:
    return create_model_pipeline(SPEC)

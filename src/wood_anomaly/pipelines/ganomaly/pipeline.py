"""ganomaly pipeline: the shared model pipeline (train -> score -> evaluate) in namespace `ganomaly`."""

from kedro.pipeline import Pipeline

from ..model_pipeline import ModelSpec, create_model_pipeline

SPEC = ModelSpec(
    name="ganomaly",
    model_path="wood_anomaly.models.ganomaly:GANomaly",
    artifacts={"generator": "keras_generator", "discriminator": "keras_discriminator"},
    uses_augmentation=True,
    reconstructs=True,
)


def create_pipeline(**kwargs) -> Pipeline:
    return create_model_pipeline(SPEC)

"""vae pipeline: the shared model pipeline (train -> score -> evaluate) in namespace `vae`."""

from kedro.pipeline import Pipeline

from ..model_pipeline import ModelSpec, create_model_pipeline

SPEC = ModelSpec(
    name="vae",
    model_path="wood_anomaly.models.vae:VAE",
    artifacts={"encoder": "keras_encoder", "decoder": "keras_decoder"},
    uses_augmentation=True,
    reconstructs=True,
)


def create_pipeline(**kwargs) -> Pipeline:
    return create_model_pipeline(SPEC)

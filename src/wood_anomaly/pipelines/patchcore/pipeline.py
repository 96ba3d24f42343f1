"""PatchCore pipeline: the shared model pipeline with a FAISS memory bank and a .pt state."""

from kedro.pipeline import Pipeline

from ..model_pipeline import ModelSpec, create_model_pipeline

SPEC = ModelSpec(
    name="patchcore",
    model_path="wood_anomaly.models.patchcore:PatchCore",
    artifacts={"memory_bank": "memory_bank", "state": "state"},
)


def create_pipeline(**kwargs) -> Pipeline:
    return create_model_pipeline(SPEC)

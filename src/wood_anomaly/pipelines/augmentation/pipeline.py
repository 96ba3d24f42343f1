"""Augmentation pipeline: versioned PNG grid of augmented training samples."""

from kedro.pipeline import Pipeline, node, pipeline

from .nodes import augmentation_preview


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(
                augmentation_preview,
                ["prepared_dataset", "params:augmentation"],
                "augmentation_preview",
                name="augmentation_preview",
            )
        ]
    )

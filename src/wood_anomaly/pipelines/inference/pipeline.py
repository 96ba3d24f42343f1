"""Inference pipeline (namespace ``inference``): trained model + image folder -> predictions CSV + overlays."""

from __future__ import annotations

from kedro.pipeline import Pipeline, node, pipeline

from .nodes import read_images, score_images


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(read_images, "params:inference", "images", name="read_images"),
            node(
                score_images,
                ["trained_model", "images", "params:inference"],
                ["predictions", "overlays"],
                name="score_images",
            ),
        ],
        namespace="inference",
        parameters={"params:inference"},
    )

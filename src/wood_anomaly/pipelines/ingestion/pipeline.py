"""Ingestion pipeline: raw folder -> versioned manifest + prepared arrays."""

from kedro.pipeline import Pipeline, node, pipeline

from .nodes import locate_raw_dataset, prepare_dataset


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(locate_raw_dataset, "params:dataset", "raw_dataset", name="locate_raw_dataset"),
            node(
                prepare_dataset,
                ["raw_dataset", "params:dataset", "params:runtime"],
                ["manifest", "prepared_dataset"],
                name="prepare_dataset",
            ),
        ]
    )

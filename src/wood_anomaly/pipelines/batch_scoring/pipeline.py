"""Batch scoring pipeline (namespace ``batch``): image files (Spark binaryFile) -> registered model -> Parquet."""

from __future__ import annotations

from kedro.pipeline import Pipeline, node, pipeline

from .nodes import list_board_files, score_boards


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(list_board_files, "params:batch", "files", name="list_board_files"),
            node(score_boards, ["files", "params:batch"], "scores", name="score_boards"),
        ],
        namespace="batch",
        parameters={"params:batch"},
    )

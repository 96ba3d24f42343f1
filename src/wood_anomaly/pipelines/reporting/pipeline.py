"""Reporting pipeline (namespace ``reporting``): reads saved results, writes the comparison CSV + HTML."""

from __future__ import annotations

from kedro.pipeline import Pipeline, node, pipeline

from .nodes import build_comparison


def create_pipeline(models: list[str] | tuple[str, ...] | None = None, **kwargs) -> Pipeline:
    """The reporting pipeline.

    Args:
        models: models trained in the same ``kedro run`` (the default pipeline): their
            ``<model>.metrics`` become extra inputs, so the report is built after every one of
            them. Leave empty for ``kedro run --pipeline=reporting`` (reads whatever was saved).
    """
    after = {f"after_{m}": f"{m}.metrics" for m in (models or [])}
    return pipeline(
        [
            node(
                build_comparison,
                ["model_results", "params:reporting", *after],
                ["comparison_table", "comparison_report"],
                name="build_comparison",
            )
        ],
        namespace="reporting",
        inputs=after,
        parameters={"params:reporting"},
    )

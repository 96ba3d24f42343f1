"""Project hooks: tag each MLflow run (started by kedro-mlflow) with the models it trains."""

from __future__ import annotations

import logging
from typing import Any

from kedro.framework.hooks import hook_impl
from kedro.pipeline import Pipeline
from kedro.pipeline.node import Node

logger = logging.getLogger(__name__)

MODEL_NAMES = ("patchcore", "padim", "efficientad", "autoencoder", "vae", "ganomaly")


def models_in(nodes: list[Node]) -> list[str]:
    """The model namespaces present in a list of nodes, in the project's canonical order."""
    found = {n.namespace.split(".")[0] for n in nodes if n.namespace}
    return [m for m in MODEL_NAMES if m in found]


class ModelRunTagsHook:
    """Sets MLflow tags ``model`` (when one model runs) and ``models`` on kedro-mlflow's run."""

    def __init__(self) -> None:
        self._models: list[str] = []
        self._tagged = False

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Pipeline, catalog: Any) -> None:
        self._models = models_in(pipeline.nodes)
        self._tagged = False

    @hook_impl
    def before_node_run(self, node: Node, catalog: Any, inputs: dict[str, Any], is_async: bool, run_id: str) -> None:
        if self._tagged:
            return
        import mlflow

        if mlflow.active_run() is None:
            return
        tags = {"models": ",".join(self._models) or "none"}
        if len(self._models) == 1:
            tags["model"] = self._models[0]
        mlflow.set_tags(tags)
        self._tagged = True

"""Project hooks: make every model's MLflow run comparable, also when one ``kedro run`` trains several.

kedro-mlflow opens one MLflow run per ``kedro run``. This hook adds:

- one model in the run (``kedro run --pipeline=patchcore``): that run is the model's run, tagged
  ``model=patchcore`` (and ``models=patchcore``); its metrics have plain names (``image_auroc``).
- several models (the default pipeline): the kedro-mlflow run is the parent (tag ``models=a,b,...``,
  the comparison report, the augmentation preview, all params); every model gets a **child run**
  (``mlflow.parentRunId`` = the parent, run name and tag ``model=<name>``) that receives that
  model's metrics, plots and weights under the same metric names as a single-model run, and the
  params of that model's nodes. In the MLflow UI, filter ``tags.model != ''`` (or expand the parent)
  and compare the children side by side.

Routing works per dataset, not through MLflow's active-run stack: just before a node of model
``m`` saves an output tracked by kedro-mlflow (``MlflowArtifactDataset``,
``MlflowMetricsHistoryDataset``, ...), the dataset's ``run_id`` is pointed at ``m``'s child run, and
reset right after. Child runs end with the pipeline (FINISHED, or FAILED on error).
Assumes a runner that saves in the main thread (SequentialRunner, the default).

Also: with ``tracking.run.nested: True`` kedro-mlflow re-activates its run once per node (pushing
it again on MLflow's active-run stack) but ends it once, so a second ``kedro run`` in the same
Python process (tests, notebooks) would log into the first run. After each run this hook pops what
the run left on the stack, so every ``kedro run`` leaves MLflow as it found it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from kedro.framework.hooks import hook_impl
from kedro.pipeline import Pipeline
from kedro.pipeline.node import Node

from wood_anomaly.models.registry import MODEL_NAMES  # noqa: F401 - also re-exported for old imports

logger = logging.getLogger(__name__)

MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value


def models_in(nodes: Iterable[Node]) -> list[str]:
    """The model namespaces present in a list of nodes, in the project's canonical order."""
    found = {n.namespace.split(".")[0] for n in nodes if n.namespace}
    return [m for m in MODEL_NAMES if m in found]


def model_of(node: Node) -> str | None:
    """The model a node belongs to (its top namespace), or None for shared / reporting nodes."""
    top = node.namespace.split(".")[0] if node.namespace else None
    return top if top in MODEL_NAMES else None


def flatten_params(inputs: Mapping[str, Any], sep: str = ".") -> dict[str, str]:
    """``{"params:patchcore": {"model": {"k": 1}}}`` -> ``{"patchcore.model.k": "1"}`` (like kedro-mlflow)."""
    out: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping) and value:
            for key, item in value.items():
                walk(f"{prefix}{sep}{key}", item)
        else:
            out[prefix] = str(value)[:MAX_PARAM_LENGTH]

    for name, value in inputs.items():
        if name.startswith("params:"):
            walk(name[len("params:"):], value)
        elif name == "parameters":
            walk(name, value)
    return out


def recommended_model_of(outputs: Mapping[str, Any]) -> str | None:
    """The model marked ``recommended`` in a node's comparison-table output (a DataFrame), else None."""
    for name, value in outputs.items():
        if name.endswith("comparison_table") and hasattr(value, "columns") and "recommended" in value.columns:
            chosen = value.loc[value["recommended"].astype(bool), "model"]
            if len(chosen):
                return str(chosen.iloc[0])
    return None


def absolute_sqlite_uri(uri: str, project_path: Any) -> str:
    """``sqlite:///mlflow.db`` -> ``sqlite:////<project>/mlflow.db``; any other URI unchanged."""
    from pathlib import Path

    prefix = "sqlite:///"
    if not uri.startswith(prefix) or uri.startswith(prefix + "/") or uri == prefix + ":memory:":
        return uri
    return prefix + (Path(project_path) / uri[len(prefix):]).as_posix()


def _is_mlflow_dataset(dataset: Any) -> bool:
    module = type(dataset).__module__
    return module.startswith(("kedro_mlflow", "wood_anomaly.datasets.mlflow_tracking")) and hasattr(dataset, "run_id")


class ModelRunTagsHook:
    """Tags kedro-mlflow's run with its models; one child run per model when a run trains several."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._models: list[str] = []
        self._tagged = False
        self._catalog: Any = None
        self._children: dict[str, str] = {}  # model -> child run id
        self._redirected: dict[str, Any] = {}  # dataset name -> dataset whose run_id we set
        self._active_before: str | None = None  # MLflow run active before this kedro run (if any)

    @property
    def child_runs(self) -> dict[str, str]:
        """``{model: run_id}`` of the child runs opened in the current ``kedro run``."""
        return dict(self._children)

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _parent_run() -> Any:
        import mlflow

        return mlflow.active_run()

    def _nested(self) -> bool:
        return len(self._models) > 1

    def _child(self, model: str) -> str | None:
        """The child run of ``model`` (created on first use under the active kedro-mlflow run)."""
        if model in self._children:
            return self._children[model]
        parent = self._parent_run()
        if parent is None:
            return None
        from mlflow.tracking import MlflowClient
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

        run = MlflowClient().create_run(
            experiment_id=parent.info.experiment_id,
            run_name=model,
            tags={MLFLOW_PARENT_RUN_ID: parent.info.run_id, MLFLOW_RUN_NAME: model, "model": model, "models": model},
        )
        self._children[model] = run.info.run_id
        logger.info("MLflow child run %s for model %s (parent %s)", run.info.run_id, model, parent.info.run_id)
        return run.info.run_id

    def _end_children(self, status: str) -> None:
        if self._children:
            from mlflow.tracking import MlflowClient

            client = MlflowClient()
            for model, run_id in self._children.items():
                try:
                    client.set_terminated(run_id, status)
                except Exception as exc:  # noqa: BLE001 - tracking must never hide the run's own outcome
                    logger.warning("could not end MLflow child run of %s: %s", model, exc)
        for dataset in self._redirected.values():
            dataset.run_id = None
        self._reset()

    @staticmethod
    def _pop_runs_left_open(active_before: str | None) -> None:
        """End the MLflow runs this kedro run left on the active-run stack (kedro-mlflow's extra pushes)."""
        import mlflow

        while (run := mlflow.active_run()) is not None and run.info.run_id != active_before:
            mlflow.end_run()

    # ------------------------------------------------------------------ hooks
    @hook_impl(tryfirst=True)  # before kedro-mlflow reads mlflow.yml
    def after_context_created(self, context: Any) -> None:
        """A relative SQLite tracking URI (``sqlite:///mlflow.db``) is made absolute against the project root.

        kedro-mlflow leaves such URIs relative, and MLflow caches one store per URI string, so a second
        project in the same process (tests, notebooks) or a run started from a subfolder would write
        into another folder's database.
        """
        loader = context.config_loader
        loader.config_patterns.setdefault("mlflow", ["mlflow*", "mlflow*/**", "**/mlflow*"])  # as kedro-mlflow does
        try:
            conf = loader["mlflow"]
        except Exception:  # noqa: BLE001 - no mlflow.yml: kedro-mlflow's defaults apply
            return
        server = conf.get("server") or {}
        uri = str(server.get("mlflow_tracking_uri") or "")
        absolute = absolute_sqlite_uri(uri, context.project_path)
        if absolute != uri:
            server["mlflow_tracking_uri"] = absolute
            conf["server"] = server
            loader["mlflow"] = conf

    @hook_impl(tryfirst=True)  # before kedro-mlflow starts its run
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Pipeline, catalog: Any) -> None:
        import mlflow

        self._reset()
        self._models = models_in(pipeline.nodes)
        self._catalog = catalog
        active = mlflow.active_run()
        self._active_before = active.info.run_id if active else None

    @hook_impl(trylast=True)  # after kedro-mlflow's own before_node_run (it (re)activates its run)
    def before_node_run(self, node: Node, catalog: Any, inputs: dict[str, Any], is_async: bool, run_id: str) -> None:
        parent = self._parent_run()
        if parent is None:
            return
        import mlflow

        if not self._tagged:
            tags = {"models": ",".join(self._models) or "none"}
            if len(self._models) == 1:
                tags["model"] = self._models[0]
            mlflow.set_tags(tags)
            self._tagged = True
        model = model_of(node)
        if model is None or not self._nested():
            return
        child = self._child(model)
        params = flatten_params(inputs)
        if child and params:
            from mlflow.entities import Param
            from mlflow.tracking import MlflowClient

            try:
                MlflowClient().log_batch(child, params=[Param(k, v) for k, v in params.items()])
            except Exception as exc:  # noqa: BLE001 - e.g. a param already logged with another value
                logger.warning("could not log %s params to its MLflow child run: %s", model, exc)

    @hook_impl
    def before_dataset_saved(self, dataset_name: str, data: Any, node: Node) -> None:
        model = model_of(node)
        if model is None or not self._nested() or self._catalog is None:
            return
        dataset = self._catalog.get(dataset_name)
        if not _is_mlflow_dataset(dataset):
            return
        # metrics datasets' `run_id` property falls back to the active run: look at what the catalog set
        if getattr(dataset, "_run_id", None) if hasattr(dataset, "_run_id") else getattr(dataset, "run_id", None):
            return  # pinned to a run in the catalog
        child = self._child(model)
        if child:
            dataset.run_id = child
            self._redirected[dataset_name] = dataset

    @hook_impl
    def after_node_run(self, node: Node, outputs: dict[str, Any]) -> None:
        """The comparison table names the recommended model (validation rule, reporting/confidence.py):
        tag the kedro-mlflow (parent) run ``recommended_model=<name>``."""
        recommended = recommended_model_of(outputs)
        if recommended and self._parent_run() is not None:
            import mlflow

            mlflow.set_tag("recommended_model", recommended)

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any, node: Node) -> None:
        dataset = self._redirected.pop(dataset_name, None)
        if dataset is not None:
            dataset.run_id = None

    @hook_impl(trylast=True)  # after kedro-mlflow has ended its run
    def after_pipeline_run(self, run_params: dict[str, Any], pipeline: Pipeline, catalog: Any) -> None:
        active_before = self._active_before
        self._end_children("FINISHED")
        self._pop_runs_left_open(active_before)

    @hook_impl
    def on_pipeline_error(self, error: Exception, run_params: dict[str, Any], pipeline: Pipeline, catalog: Any) -> None:
        self._end_children("FAILED")


class SparkHooks:
    """Builds the SparkSession from ``conf/<env>/spark.yml``, the Kedro way, but only for runs that need it.

    ``after_context_created`` reads the configuration (cheap); the session (a JVM) is started in
    ``before_pipeline_run`` only when the pipeline has nodes of the ``batch`` namespace
    (``kedro run --pipeline=batch_scoring``), so training, inference and reporting never start Spark.
    Point it at a cluster with ``spark.master`` in ``conf/<env>/spark.yml`` (README, "Batch scoring on Spark").
    """

    NAMESPACES = ("batch",)

    def __init__(self) -> None:
        self.conf: dict[str, Any] = {}

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        loader = context.config_loader
        loader.config_patterns.setdefault("spark", ["spark*", "spark*/**"])
        try:
            self.conf = dict(loader["spark"])
        except Exception:  # noqa: BLE001 - no spark.yml: Spark's defaults (local[*])
            self.conf = {}

    @staticmethod
    def needs_spark(pipeline: Pipeline) -> bool:
        return any(n.namespace and n.namespace.split(".")[0] in SparkHooks.NAMESPACES for n in pipeline.nodes)

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Pipeline, catalog: Any) -> None:
        if self.needs_spark(pipeline):
            from wood_anomaly.serving.spark import build_spark_session

            build_spark_session(self.conf)

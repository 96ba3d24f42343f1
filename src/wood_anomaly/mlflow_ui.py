"""The MLflow UI, made to open on what our users compare: the model runs of the ``wood_anomaly`` experiment.

- The experiment is tagged ``mlflow.experimentKind = custom_model_development`` (MLflow 3's marker of
  a model-training experiment, as opposed to GenAI) and gets a description with a link that lists the
  model runs flat, best image AUROC first (:func:`mark_experiment`, called by
  :class:`ExperimentUiHook` once per ``kedro run``; a description written by a user is kept).
- MLflow 3.17's UI decides between its GenAI and its "Model training" views by a switch that it
  keeps in the browser (default GenAI) or by ``?workflowType=machine_learning`` in the address, so
  the links printed here carry that parameter: :func:`runs_url`, :func:`model_runs_url`.

``python -m wood_anomaly.mlflow_ui`` (what ``make mlflow-ui`` runs before ``kedro mlflow ui``) prints
those links for this project's tracking store.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote, urlencode

from kedro.framework.hooks import hook_impl

logger = logging.getLogger(__name__)

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
CUSTOM_MODEL_DEVELOPMENT = "custom_model_development"
DESCRIPTION_TAG = "mlflow.note.content"
DESCRIPTION_MARK = "<!-- wood_anomaly -->"
#: a model's run (one-model `kedro run`, or a child run of a multi-model run) carries tag `model`
MODEL_RUNS_FILTER = "tags.model != ''"


def _query(**params: str) -> str:
    return urlencode(params, quote_via=quote, safe="")


def runs_path(experiment_id: str, *, models_only: bool = False) -> str:
    """The UI route (``#/...``) of the experiment's runs in the Model training view.

    ``models_only``: only the model runs, flat (MLflow nests child runs under their parent only when
    no filter is set), best image AUROC first.
    """
    params = {"workflowType": "machine_learning"}
    if models_only:
        params.update(searchFilter=MODEL_RUNS_FILTER, orderByKey="metrics.`image_auroc`", orderByAsc="false")
    return f"#/experiments/{experiment_id}/runs?{_query(**params)}"


def runs_url(base_url: str, experiment_id: str) -> str:
    return base_url.rstrip("/") + "/" + runs_path(experiment_id)


def model_runs_url(base_url: str, experiment_id: str) -> str:
    return base_url.rstrip("/") + "/" + runs_path(experiment_id, models_only=True)


def description(experiment_id: str) -> str:
    return (
        f"{DESCRIPTION_MARK}Six anomaly-detection models on wood boards, one run per model "
        f"(a default `kedro run` nests them under its parent run). "
        f"[Compare the model runs, best image AUROC first]({runs_path(experiment_id, models_only=True)})"
    )


def mark_experiment(client: Any, experiment_id: str) -> None:
    """Tag the experiment as model training and give it the link to its model runs (idempotent)."""
    experiment = client.get_experiment(experiment_id)
    tags = dict(experiment.tags or {})
    if tags.get(EXPERIMENT_KIND_TAG) != CUSTOM_MODEL_DEVELOPMENT:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, CUSTOM_MODEL_DEVELOPMENT)
    current = tags.get(DESCRIPTION_TAG)
    if current is None or (current.startswith(DESCRIPTION_MARK) and current != description(experiment_id)):
        client.set_experiment_tag(experiment_id, DESCRIPTION_TAG, description(experiment_id))


class ExperimentUiHook:
    """Once per ``kedro run``, after kedro-mlflow has started its run: :func:`mark_experiment`."""

    def __init__(self) -> None:
        self._done = False

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        self._done = False

    @hook_impl(trylast=True)  # kedro-mlflow (re)activates its run in its own before_node_run
    def before_node_run(self, node: Any, catalog: Any, inputs: dict[str, Any], is_async: bool, run_id: str) -> None:
        if self._done:
            return
        self._done = True
        import mlflow

        active = mlflow.active_run()
        if active is None:
            return
        try:
            from mlflow.tracking import MlflowClient

            mark_experiment(MlflowClient(), active.info.experiment_id)
        except Exception as exc:  # noqa: BLE001 - the UI hint must never fail a run
            logger.warning("could not tag the MLflow experiment for its UI: %s", exc)


def tracking_settings(project_path: Any = None, env: str | None = None) -> dict[str, str]:
    """The project's MLflow tracking URI, experiment name and UI address (as ``kedro mlflow ui`` reads them)."""
    from pathlib import Path

    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project
    from kedro.utils import find_kedro_project

    project = Path(project_path or find_kedro_project(Path.cwd()) or Path.cwd())
    bootstrap_project(project)
    with KedroSession.create(project_path=project, env=env) as session:
        context = session.load_context()
        config = context.mlflow
        return {
            "tracking_uri": config.server.mlflow_tracking_uri,
            "experiment": config.tracking.experiment.name,
            "base_url": f"http://{config.ui.host}:{config.ui.port}",
        }


def main(argv: list[str] | None = None) -> int:
    """Print where the UI shows the model runs (``make mlflow-ui`` runs this, then ``kedro mlflow ui``)."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--env", default=None)
    args = parser.parse_args(argv)
    settings = tracking_settings(env=args.env)
    from mlflow.tracking import MlflowClient

    experiment = None
    try:
        experiment = MlflowClient(tracking_uri=settings["tracking_uri"]).get_experiment_by_name(settings["experiment"])
    except Exception as exc:  # noqa: BLE001 - an empty or missing store
        logger.debug("no experiment yet: %s", exc)
    print(f"MLflow UI at {settings['base_url']} (store: {settings['tracking_uri']})")
    if experiment is None:
        print(f"No '{settings['experiment']}' runs yet: train first (`make run`).")
        return 0
    mark_experiment(MlflowClient(tracking_uri=settings["tracking_uri"]), experiment.experiment_id)
    print(f"  model runs, best image AUROC first: {model_runs_url(settings['base_url'], experiment.experiment_id)}")
    print(f"  every run of '{settings['experiment']}':      {runs_url(settings['base_url'], experiment.experiment_id)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

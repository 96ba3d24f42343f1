"""Tuning nodes: load train/good only, run the study, hand its results to the catalog.

Everything that decides anything lives in :mod:`wood_anomaly.tuning` (Kedro-free).
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd

from wood_anomaly.data.layout import load_image, scan_dataset
from wood_anomaly.data.synthetic import VALIDATION_DEFECT_TYPES
from wood_anomaly.models.registry import MODEL_NAMES, MODELS
from wood_anomaly.models.base import seed_everything, set_cpu_threads
from wood_anomaly.pipelines.model_nodes import build_model
from wood_anomaly.tuning import run_study, tuning_config

logger = logging.getLogger(__name__)


def load_tuning_images(raw_dataset: dict[str, Any], dataset: dict[str, Any]) -> dict[str, np.ndarray]:
    """The train/good boards of the raw folder, and nothing else: test files are listed by the
    layout check but never opened. ``{"images": uint8 [N,S,S,3], "path": str [N], "split": "train" [N]}``."""
    manifest = scan_dataset(raw_dataset["root"])
    train = manifest[manifest["source_split"] == "train"]
    if (train["label"] != 0).any():  # pragma: no cover - scan_dataset only puts train/good there
        raise ValueError(f"{raw_dataset['root']}: the train split holds non-good images")
    size = int(dataset["image_size"])
    images = np.stack([load_image(path, size) for path in train["path"]])
    logger.info("Tuning reads %d train/good boards from %s (no test image)", len(images), raw_dataset["root"])
    return {
        "images": images,
        "path": train["path"].to_numpy(dtype=str),
        "split": np.full(len(images), "train"),
    }


def _spec(model: str) -> Any:
    if model not in MODEL_NAMES:
        raise ValueError(f"tuning.model={model!r} is not a model of this project; choose one of {list(MODEL_NAMES)}")
    return MODELS[model]


def _child_run_logger(model: str, n_trials: int) -> Any:
    """``on_trial`` callback: one MLflow child run per trial under kedro-mlflow's active run (if any)."""
    import mlflow

    parent = mlflow.active_run()
    if parent is None:
        return None, []
    from mlflow.tracking import MlflowClient
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

    client = MlflowClient()
    run_ids: list[str] = []

    def on_trial(number: int, params: dict[str, Any], components: dict[str, float]) -> None:
        name = f"{model}-trial-{number:03d}"
        run = client.create_run(
            experiment_id=parent.info.experiment_id,
            run_name=name,
            tags={MLFLOW_PARENT_RUN_ID: parent.info.run_id, MLFLOW_RUN_NAME: name, "model": model,
                  "tuning_trial": str(number)},
        )
        for key, value in params.items():
            client.log_param(run.info.run_id, key, str(value)[:6000])
        for key, value in components.items():
            client.log_metric(run.info.run_id, key, float(value))
        client.set_terminated(run.info.run_id, "FINISHED")
        run_ids.append(run.info.run_id)

    return on_trial, run_ids


def _history_figure(study: Any, model: str) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna

    values = [t.value if t.state == optuna.trial.TrialState.COMPLETE else np.nan for t in study.trials]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(range(len(values)), values, "o", color="tab:blue", label="trial objective")
    ax.plot(range(len(values)), np.fmax.accumulate(np.nan_to_num(values, nan=-np.inf)), "-", color="tab:red",
            label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel("objective (validation only)")
    ax.set_title(f"{model}: tuning study ({len(values)} trials)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def tune_model(
    tuning_images: dict[str, np.ndarray],
    tuning: dict[str, Any],
    runtime: dict[str, Any],
    evaluation: dict[str, Any],
    augmentation: dict[str, Any],
    *model_params: dict[str, Any],
) -> tuple[dict[str, Any], pd.DataFrame, Any, dict[str, float]]:
    """Run the Optuna study for ``tuning.model`` on the train/good boards (see wood_anomaly.tuning)."""
    config = tuning_config(tuning, evaluation)
    model = str(config["model"])
    spec = _spec(model)
    base = dict(model_params[MODEL_NAMES.index(model)])
    seed = int(runtime.get("seed", 0))
    seed_everything(seed)
    set_cpu_threads(runtime.get("num_threads"))
    aug = augmentation if spec.uses_augmentation else None
    on_trial, child_runs = _child_run_logger(model, int(config["trials"]))
    started = datetime.now(timezone.utc)
    result = run_study(
        tuning_images["images"],
        model_name=model,
        base_params=base,
        build_model=lambda params: build_model(spec.model_path, params, aug),
        config=config,
        seed=seed,
        device=str(runtime.get("device", "auto")),
        batch_size=int(base.get("batch_size", 16)),
        on_trial=on_trial,
    )
    seconds = (datetime.now(timezone.utc) - started).total_seconds()
    best_row = next(r for r in result.trials if r["trial"] == result.best_trial)
    fixed = dict((config.get("fixed") or {}).get(model) or {})
    best = {
        "model": model,
        "best_value": result.best_value,
        "best_trial": result.best_trial,
        "best_params": result.best_params,
        "fixed_params": fixed,
        "components": {k: v for k, v in best_row.items() if isinstance(v, float) and not k.startswith("param.")},
        "study": {
            "trials": len(result.trials),
            "completed": sum(r["state"] == "COMPLETE" for r in result.trials),
            "sampler": f"TPESampler(seed={int(config['seed'])}, n_startup_trials={int(config['n_startup_trials'])})",
            "runtime_seed": seed,
            "folds": int(config["folds"]),
            "holdout_fraction": float(config["holdout_fraction"]),
            "defects_per_image": int(config["defects_per_image"]),
            "defect_kinds": list(config["defect_kinds"] or VALIDATION_DEFECT_TYPES),
            "nuisance_boards": config["nuisance_boards"],
            "nuisance_penalty": float(config["nuisance_penalty"]),
            "false_alarm_rate": float(config["false_alarm_rate"]),
            "n_train_good": int(len(tuning_images["images"])),
            "started_utc": started.isoformat(timespec="seconds"),
            "seconds": round(seconds, 1),
            "search_space": config["search_spaces"][model],
        },
        "data": "train/good boards only (validation set: held-out train/good + pasted synthetic defects + nuisances)",
    }
    import mlflow

    if (run := mlflow.active_run()) is not None:
        best["mlflow_run_id"] = run.info.run_id
        best["mlflow_trial_runs"] = len(child_runs)
    logger.info("Tuning %s done in %.0f s: best objective %.4f (trial %d) with %s",
                model, seconds, result.best_value, result.best_trial, result.best_params)
    best = json.loads(json.dumps(best))  # plain data: no YAML anchors for lists shared with the search space
    trials = pd.DataFrame(result.trials)
    metrics = {"tuning_best_objective": result.best_value, "tuning_seconds": seconds,
               **{f"tuning_best_{k}": v for k, v in best["components"].items()}}
    return best, trials, _history_figure(result.study, model), metrics

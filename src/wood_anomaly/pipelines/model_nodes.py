"""The nodes every model pipeline shares: train, score, evaluate (+ reconstruction samples for the
reconstruction models).

They only slice the prepared arrays, call the Kedro-free model (``fit``/``score``/``to_artifacts``),
time the work and hand results to the catalog. Which model runs is given by a dotted path, imported
when the node runs, so building the pipelines never imports TensorFlow or PyTorch models.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

import numpy as np
from PIL import Image

from wood_anomaly.evaluation.metrics import evaluate, off_defect_auroc
from wood_anomaly.evaluation.robustness import (
    DEFAULT_ROBUSTNESS_PIXELS,
    flatten_robustness,
    robustness_metrics,
    score_under_nuisances,
)
from wood_anomaly.evaluation.plots import (
    confusion_matrix_figure,
    heatmap_overlay_figure,
    roc_curve_figure,
    score_histogram_figure,
)
from wood_anomaly.models.base import seed_everything, set_cpu_threads
from wood_anomaly.models.registry import import_model_class

logger = logging.getLogger(__name__)


def _split(prepared_dataset: dict[str, np.ndarray], name: str) -> np.ndarray:
    return prepared_dataset["split"] == name


def build_model(model_path: str, model_params: dict[str, Any], augmentation: dict[str, Any] | None) -> Any:
    """Instantiate the model; gradient-trained models get the shared transforms unless their params set their own."""
    config = dict(model_params)
    if augmentation is not None:
        config.setdefault("augmentation", dict(augmentation.get("transforms", {})))
    return import_model_class(model_path)(**config)


def threshold_method(evaluation: dict[str, Any] | None, model_name: str) -> tuple[str, int]:
    """``("out_of_fold", k)`` for the models listed in ``evaluation.threshold.out_of_fold``, else ``("validation", 0)``."""
    cfg = (evaluation or {}).get("threshold") or {}
    if model_name in (cfg.get("out_of_fold") or []):
        return "out_of_fold", int(cfg.get("n_folds", 5))
    return "validation", 0


def _out_of_fold_threshold_scores(
    model_path: str, model_params: dict[str, Any], good_images: np.ndarray, evaluation: dict[str, Any],
    runtime: dict[str, Any], n_folds: int, seed: int,
) -> dict[str, Any]:
    """k-fold out-of-fold scores of the good training boards (threshold) and of synthetic defects pasted
    on them (label-free validation AUROC), each scored by the fold model that never saw the board."""
    from wood_anomaly.data.validation_set import build_validation_set
    from wood_anomaly.evaluation.thresholds import out_of_fold_scores

    validation = build_validation_set(good_images, seed)  # one pasted defect per board, seeded
    defects = validation.labels == 1
    oof = out_of_fold_scores(
        lambda: build_model(model_path, model_params, None),
        good_images,
        n_folds=n_folds,
        seed=seed,
        fit_kwargs={"seed": seed, "device": runtime.get("device", "auto"), "progress": False},
        extra_images=validation.images[defects],
        extra_source=validation.source[defects],
    )
    logger.info("%d out-of-fold threshold scores from %d folds in %.1f s", oof.scores.size, n_folds, oof.fit_seconds)
    return oof.precomputed, {
        "threshold_scores": [float(v) for v in oof.scores],
        "threshold_source": f"out-of-fold: {n_folds}-fold over the {oof.scores.size} good training boards "
                            "(each scored by a model fitted on the other folds; the deployed model is fitted on all)",
        "threshold_seconds": round(oof.fit_seconds, 3),
        "validation_scores": {
            "good": [float(v) for v in oof.scores],
            "defect": [float(v) for v in oof.extra_scores],
            "defect_kind": [str(k) for k in validation.kinds[defects]],
            "source": "out-of-fold: held-out good training boards and the same boards with a pasted synthetic defect",
        },
    }


def _fold_ensemble_threshold_scores(model: Any) -> dict[str, Any]:
    """Training-summary entries of a cross-fitted fold ensemble: its out-of-fold scores (threshold) and
    those of the pasted synthetic defects (validation evidence)."""
    oof = np.asarray(model.threshold_scores, dtype=np.float64)
    return {
        "threshold_scores": [float(v) for v in oof],
        "threshold_source": f"out-of-fold: {model.n_folds}-fold cross-fitted ensemble over the {oof.size} good training "
                            "boards (each scored by the member fitted without it; the deployed model = mean of the members)",
        "validation_scores": {
            "good": [float(v) for v in oof],
            "defect": [float(v) for v in model.validation_defect_scores],
            "defect_kind": [str(k) for k in model.validation_defect_kinds],
            "source": "out-of-fold: held-out good training boards and the same boards with a pasted synthetic defect",
        },
    }


def train_model(
    prepared_dataset: dict[str, np.ndarray],
    model_params: dict[str, Any],
    runtime: dict[str, Any],
    augmentation: dict[str, Any],
    evaluation: dict[str, Any] | None = None,
    *,
    model_name: str,
    model_path: str,
    artifact_keys: tuple[str, ...],
    uses_augmentation: bool,
) -> tuple[Any, ...]:
    """Fit on train-split good images (validation split passed for early stopping/normalisation)."""
    seed = int(runtime.get("seed", 0))
    seed_everything(seed)
    set_cpu_threads(runtime.get("num_threads"))
    train_images = prepared_dataset["images"][_split(prepared_dataset, "train")]
    val_images = prepared_dataset["images"][_split(prepared_dataset, "val")]
    method, n_folds = threshold_method(evaluation, model_name)
    threshold_info: dict[str, Any] = {}
    precomputed = None
    if method == "out_of_fold":  # threshold from k-fold out-of-fold scores; deployed model fitted on every good board
        train_images = np.concatenate([train_images, val_images])
        val_images = val_images[:0]
        precomputed, threshold_info = _out_of_fold_threshold_scores(
            model_path, model_params, train_images, evaluation or {}, runtime, n_folds, seed
        )
        seed_everything(seed)
    model = build_model(model_path, model_params, augmentation if uses_augmentation else None)
    logger.info("Training %s on %d good images (%d for validation)", model_name, len(train_images), len(val_images))
    start = time.perf_counter()
    reuse = {} if precomputed is None else {"precomputed": precomputed}  # the boards' features from the k-fold pass
    model.fit(train_images, val_images if len(val_images) else None, seed=seed, device=runtime.get("device", "auto"),
              progress=True, **reuse)
    fit_seconds = time.perf_counter() - start
    if getattr(model, "threshold_scores", None) is not None:  # a cross-fitted fold ensemble (models/ensemble.py)
        method, threshold_info = "fold_ensemble", _fold_ensemble_threshold_scores(model)
        train_images = np.concatenate([train_images, val_images])
        val_images = val_images[:0]
    artifacts = model.to_artifacts()
    summary = {
        "model": model_name,
        "fit_seconds": round(fit_seconds, 3),
        "device": str(getattr(model, "device_used", None) or getattr(model, "device", None) or runtime.get("device", "auto")),
        "backbone": str(model_params.get("backbone", "none (trained from scratch)")),
        "n_train": int(len(train_images)),
        "n_val": int(len(val_images)),
        "history": {k: [float(v) for v in vs] for k, vs in getattr(model, "history", {}).items()},
        "params": model_params,
        "threshold_method": method,
        **threshold_info,
    }
    logger.info("Trained %s in %.1f s on %s", model_name, fit_seconds, summary["device"])
    return (*(artifacts[key] for key in artifact_keys), summary)


def score_model(
    prepared_dataset: dict[str, np.ndarray],
    scoring: dict[str, Any],
    runtime: dict[str, Any],
    evaluation: dict[str, Any],
    *artifacts: Any,
    model_path: str,
    artifact_keys: tuple[str, ...],
) -> dict[str, np.ndarray]:
    """Reload the model from its saved artifacts and score the validation and test images, then the
    test images again under each nuisance of ``evaluation.nuisances`` (scores and a pixel sample only,
    see :mod:`wood_anomaly.evaluation.robustness`)."""
    set_cpu_threads(runtime.get("num_threads"))
    model = import_model_class(model_path).from_artifacts(**dict(zip(artifact_keys, artifacts)))
    batch_size = int(scoring.get("batch_size", 16))
    val = _split(prepared_dataset, "val")
    test = _split(prepared_dataset, "test")
    val_scores, _ = model.score(prepared_dataset["images"][val], batch_size=batch_size)
    val_defect_scores = _validation_defect_scores(model, prepared_dataset["images"][val], int(runtime.get("seed", 0)), batch_size)
    # a model that averages over flips meets the plain pass's flipped boards again under hflip / vflip / rot180:
    # within this block it looks them up instead of recomputing them (same numbers; EfficientAD)
    memoise = getattr(model, "memoise_repeated_inputs", None)
    with memoise() if memoise is not None else contextlib.nullcontext() as memos:
        start = time.perf_counter()
        test_scores, test_maps = model.score(prepared_dataset["images"][test], batch_size=batch_size)
        ms_per_image = 1000.0 * (time.perf_counter() - start) / max(int(test.sum()), 1)
        logger.info("Scored %d test images at %.1f ms/image", int(test.sum()), ms_per_image)
        robustness = score_under_nuisances(
            model,
            prepared_dataset["images"][test],
            (evaluation or {}).get("nuisances") or {},
            has_mask=prepared_dataset["has_mask"][test],
            plain_maps=test_maps,
            batch_size=batch_size,
            max_pixels=int((evaluation or {}).get("robustness_max_pixels", DEFAULT_ROBUSTNESS_PIXELS)),
            seed=int(runtime.get("seed", 0)),
        )
        if memos and sum(m.hits for m in memos):
            logger.info("Reused %d of %d flipped-board passes (seen before in this scoring)",
                        sum(m.hits for m in memos), sum(m.hits + m.misses for m in memos))
    if len(robustness["nuisance_names"]):
        logger.info(
            "Scored the test images under %d nuisances in %.1f s", len(robustness["nuisance_names"]),
            float(robustness["nuisance_seconds"]),
        )
    return {
        **robustness,
        "path": prepared_dataset["path"][test],
        "label": prepared_dataset["label"][test],
        "defect_type": prepared_dataset["defect_type"][test],
        "scores": np.asarray(test_scores, dtype=np.float32),
        "maps": np.asarray(test_maps, dtype=np.float16),
        "val_path": prepared_dataset["path"][val],
        "val_scores": np.asarray(val_scores, dtype=np.float32),
        "val_defect_scores": val_defect_scores,
        "score_ms_per_image": np.float32(ms_per_image),
    }


def _validation_defect_scores(model: Any, val_images: np.ndarray, seed: int, batch_size: int) -> np.ndarray:
    """Scores of the held-out validation boards with one synthetic defect pasted on each (label-free
    validation evidence: their AUROC against the plain validation boards). Empty without validation boards."""
    if len(val_images) == 0:
        return np.zeros(0, dtype=np.float32)
    from wood_anomaly.data.validation_set import build_validation_set

    validation = build_validation_set(val_images, seed)
    scores, _ = model.score(validation.images[validation.labels == 1], batch_size=batch_size)
    return np.asarray(scores, dtype=np.float32)


def reconstruction_samples(
    prepared_dataset: dict[str, np.ndarray],
    *artifacts: Any,
    model_path: str,
    artifact_keys: tuple[str, ...],
    n_per_class: int = 4,
) -> Image.Image:
    """Reconstruction models: originals / reconstructions / error maps of the first good and defective test boards."""
    model = import_model_class(model_path).from_artifacts(**dict(zip(artifact_keys, artifacts)))
    test = np.flatnonzero(_split(prepared_dataset, "test"))
    labels = prepared_dataset["label"][test]
    chosen = np.concatenate([test[labels == 0][:n_per_class], test[labels == 1][:n_per_class]])
    return Image.fromarray(model.reconstruction_grid(prepared_dataset["images"][chosen], max_images=len(chosen)))


def _operating_point(scores: dict[str, np.ndarray], training_summary: dict[str, Any], false_alarm_rate: float) -> dict[str, Any]:
    """The conformal threshold from the scores the model never trained on: out-of-fold scores when the
    train node made them (``training_summary["threshold_scores"]``), else the validation split's."""
    from wood_anomaly.evaluation.thresholds import threshold_metrics

    labels = scores["label"].astype(int)
    if training_summary.get("threshold_scores"):
        held_out = np.asarray(training_summary["threshold_scores"], dtype=np.float64)
        source = str(training_summary.get("threshold_source", "out-of-fold scores"))
    else:
        held_out = np.asarray(scores["val_scores"], dtype=np.float64)
        source = f"the {held_out.size} held-out validation good boards"
    return threshold_metrics(held_out, false_alarm_rate, scores["scores"][labels == 0], source)


def _intervals(
    prepared_dataset: dict[str, np.ndarray], scores: dict[str, np.ndarray], maps: np.ndarray, threshold: float,
    evaluation: dict[str, Any],
) -> dict[str, Any]:
    """Stratified-bootstrap 95% intervals of the test metrics (fixed seed; evaluation.bootstrap)."""
    from wood_anomaly.evaluation.uncertainty import bootstrap_intervals

    cfg = evaluation.get("bootstrap") or {}
    test = _split(prepared_dataset, "test")
    start = time.perf_counter()
    out = bootstrap_intervals(
        scores["label"].astype(int), scores["scores"], threshold,
        masks=prepared_dataset["masks"][test], maps=maps, has_mask=prepared_dataset["has_mask"][test],
        n_resamples=int(cfg.get("n_resamples", 2000)), seed=int(cfg.get("seed", 0)),
        fpr_limit=float(evaluation.get("aupro_fpr_limit", 0.3)),
        rates=tuple(float(r) for r in cfg.get("tpr_at_false_alarm_rates", (0.01, 0.05, 0.10))),
    )
    logger.info("bootstrap intervals (%d resamples) in %.1f s", out["bootstrap"]["n_resamples"], time.perf_counter() - start)
    return out


def _validation_evidence(scores: dict[str, np.ndarray], training_summary: dict[str, Any], evaluation: dict[str, Any]) -> dict[str, Any]:
    """Label-free validation AUROC: held-out good boards vs the same boards with pasted synthetic defects
    (out-of-fold when the train node made them, else the validation split). Never a test image."""
    from wood_anomaly.evaluation.uncertainty import validation_auroc

    cfg = evaluation.get("bootstrap") or {}
    kwargs = {"n_resamples": int(cfg.get("n_resamples", 2000)), "seed": int(cfg.get("seed", 0))}
    stored = training_summary.get("validation_scores")
    if stored:
        result = validation_auroc(stored["good"], stored["defect"], **kwargs)
        source = stored.get("source", "out-of-fold")
    else:
        result = validation_auroc(scores["val_scores"], scores.get("val_defect_scores", np.zeros(0)), **kwargs)
        source = "validation split: held-out good boards and the same boards with a pasted synthetic defect"
    return {**result, "source": source} if result else {}


def interval_mlflow_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """``<metric>_ci95_low`` / ``_high``, ``tpr_at_far_<rate>`` (+ interval), ``validation_image_auroc``."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if key.endswith("_ci95") and isinstance(value, (list, tuple)) and len(value) == 2:
            out[f"{key}_low"], out[f"{key}_high"] = float(value[0]), float(value[1])
    for rate, entry in (metrics.get("tpr_at_far") or {}).items():
        out[f"tpr_at_far_{rate}"] = float(entry["tpr"])
        out[f"tpr_at_far_{rate}_ci95_low"], out[f"tpr_at_far_{rate}_ci95_high"] = map(float, entry["ci95"])
    validation = metrics.get("validation") or {}
    if "image_auroc" in validation:
        out["validation_image_auroc"] = float(validation["image_auroc"])
        out["validation_image_auroc_ci95_low"], out["validation_image_auroc_ci95_high"] = map(float, validation["image_auroc_ci95"])
    return {k: v for k, v in out.items() if np.isfinite(v)}


def evaluate_model(
    prepared_dataset: dict[str, np.ndarray],
    scores: dict[str, np.ndarray],
    training_summary: dict[str, Any],
    evaluation: dict[str, Any],
    *,
    model_name: str,
) -> tuple[dict[str, Any], dict[str, Any], Any, Any, Any, Any]:
    """Metrics (validation threshold, oracle F1-max beside it), MLflow metrics and the report figures."""
    test = _split(prepared_dataset, "test")
    labels = scores["label"].astype(int)
    maps = scores["maps"].astype(np.float32)
    false_alarm_rate = float(evaluation["false_alarm_rate"])
    operating_point = _operating_point(scores, training_summary, false_alarm_rate)
    metrics = evaluate(
        labels,
        scores["scores"],
        scores["val_scores"],
        masks=prepared_dataset["masks"][test],
        maps=maps,
        has_mask=prepared_dataset["has_mask"][test],
        threshold=operating_point["threshold"],
        fpr_limit=float(evaluation.get("aupro_fpr_limit", 0.3)),
    )
    metrics.pop("threshold_k", None)
    metrics.update(operating_point)
    metrics.update(_intervals(prepared_dataset, scores, maps, metrics["threshold"], evaluation))
    metrics.update(validation=_validation_evidence(scores, training_summary, evaluation))
    metrics.update(
        off_defect_auroc(labels, maps, prepared_dataset["masks"][test], prepared_dataset["has_mask"][test],
                         dilate=int(evaluation.get("off_defect_dilate", 16)))
    )
    metrics.update(
        model=model_name,
        f1_max_note="oracle: best F1 over all thresholds on the test labels, for comparison only",
        fit_seconds=training_summary["fit_seconds"],
        score_ms_per_image=float(scores["score_ms_per_image"]),
        n_train=training_summary["n_train"],
        n_val=training_summary["n_val"],
        n_test_good=int((labels == 0).sum()),
        n_test_defect=int((labels == 1).sum()),
        device=training_summary["device"],
        backbone=training_summary["backbone"],
        data_source=str(prepared_dataset["data_source"]),
        synthetic_data=bool(prepared_dataset["synthetic"]),
    )
    robustness = robustness_metrics(scores, labels, float(metrics["threshold"]), prepared_dataset["masks"][test])
    if robustness:
        metrics["robustness"] = robustness
        metrics["robustness_seconds"] = float(scores.get("nuisance_seconds", float("nan")))
        for name, entry in robustness.items():
            logger.info(
                "%s under %-16s image AUROC %.3f, pixel AUROC %.3f, false alarms %.1f%%",
                model_name, name, entry["image_auroc"], entry["pixel_auroc"], 100 * entry["false_alarm_rate"],
            )
    mlflow_metrics: dict[str, Any] = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    mlflow_metrics.update(flatten_robustness(robustness))
    mlflow_metrics.update(interval_mlflow_metrics(metrics))
    for name, values in training_summary.get("history", {}).items():
        if values:
            mlflow_metrics[f"history_{name}"] = [float(v) for v in values]
    title = f"{model_name}"
    images = prepared_dataset["images"][test]
    threshold = metrics["threshold"]
    figures = (
        roc_curve_figure(labels, scores["scores"], title=f"{title}: ROC (test)"),
        score_histogram_figure(labels, scores["scores"], threshold, title=f"{title}: scores (test)"),
        heatmap_overlay_figure(
            images, maps, prepared_dataset["masks"][test], scores["scores"], labels, threshold,
            n=int(evaluation.get("n_overlays", 6)),
        ),
        confusion_matrix_figure(labels, scores["scores"], threshold),
    )
    logger.info(
        "%s: image AUROC %.3f, F1 %.3f at validation threshold %.4g (oracle F1-max %.3f), pixel AUROC %s",
        model_name, metrics["image_auroc"], metrics["image_f1"], threshold, metrics["f1_max"],
        f"{metrics['pixel_auroc']:.3f}" if "pixel_auroc" in metrics else "n/a",
    )
    return (metrics, mlflow_metrics, *figures)


def serving_model(
    prepared_dataset: dict[str, np.ndarray],
    scores: dict[str, np.ndarray],
    metrics: dict[str, Any],
    scoring: dict[str, Any],
) -> dict[str, Any]:
    """What the MLflow registration needs beyond the saved files: the trained image size, an input
    example (the first validation board) and the heatmap colour scale. Runs after ``evaluate`` (its
    ``metrics`` input), so the registered model carries the threshold saved by this run."""
    from wood_anomaly.reporting.figures import map_display_range

    images = prepared_dataset["images"]
    val = np.flatnonzero(_split(prepared_dataset, "val"))
    example = images[val[0] if len(val) else 0]
    maps = scores.get("maps")
    display_range = map_display_range(maps) if maps is not None and maps.size else None
    logger.info("Registering %s (threshold %.6g) in the MLflow Model Registry", metrics.get("model"), metrics["threshold"])
    return {
        "image_size": [int(images.shape[1]), int(images.shape[2])],
        "example": example,
        "display_range": display_range,
        "batch_size": int(scoring.get("batch_size", 16)),
    }

"""Hyper-parameter tuning on label-free validation data only (no Kedro in here).

The tuning pipeline (``kedro run --pipeline=tuning``) calls :func:`run_study` with the train/good
boards only; nothing here ever sees a test image or a test label.

Protocol (one Optuna trial = one parameter set):

1. **Folds inside train/good.** ``folds: 1`` holds out a fixed-seed ``holdout_fraction`` of the
   train/good boards; ``folds: k >= 2`` is a shuffled k-fold over them. From each fold's training
   part a fixed-seed ``fit_val_fraction`` is passed to ``fit`` as its validation images (early
   stopping, EfficientAD's map quantiles), as the real pipeline does with its "val" split.
2. **Validation set per fold** (:mod:`wood_anomaly.data.validation_set`): the held-out good boards,
   ``defects_per_image`` copies of each with a procedural defect pasted on (exact masks), and the
   held-out good boards under every configured nuisance (flips, re-lighting, JPEG, blur).
3. **Components per fold**, from the trained model's scores:

   - ``auroc``: image AUROC, held-out good boards (0) vs their synthetic-defect copies (1);
   - ``threshold`` = mean + k * std (ddof=1) of the held-out good boards' scores, k from
     ``false_alarm_rate`` (0.05 -> k = 1.645): the project's validation threshold rule;
   - ``nuisance_far.<name>``: share of the nuisance versions of the held-out good boards scored
     above that threshold (``nuisance_boards: cycle``, the default: held-out board ``j`` is seen
     under nuisance ``j mod n`` only, at 1/n of the scoring cost; ``all``: every board under every
     nuisance); ``nuisance_excess`` = mean over nuisances of
     ``max(0, nuisance_far.<name> - false_alarm_rate)``;
   - ``pixel_auroc``: pixel AUROC of the maps on the synthetic-defect copies (logged; weight 0 by
     default).

4. **Objective** (maximised) = mean over folds of
   ``auroc - nuisance_penalty * nuisance_excess + pixel_auroc_weight * pixel_auroc``.

Same inputs + config + seed -> the same study (Optuna ``TPESampler(seed)``, seeded model fits).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from wood_anomaly.data.nuisances import parse_nuisances
from wood_anomaly.data.validation_set import ValidationSet, build_validation_set, nuisance_versions
from wood_anomaly.evaluation.metrics import threshold_k_for_false_alarm_rate, validation_threshold

logger = logging.getLogger(__name__)

PARAM_TYPES = ("int", "float", "categorical")

DEFAULT_CONFIG: dict[str, Any] = {
    "model": "patchcore",
    "trials": 30,
    "seed": 0,  # TPESampler seed; the folds, pasted defects and model fits use runtime.seed
    "folds": 1,
    "holdout_fraction": 0.3,
    "fit_val_fraction": 0.1,
    "defects_per_image": 2,
    "defect_kinds": None,  # None = wood_anomaly.data.synthetic.VALIDATION_DEFECT_TYPES
    "nuisances": None,  # None = evaluation.nuisances
    "nuisance_boards": "cycle",  # cycle: held-out board j under nuisance j mod n; all: every board under every nuisance
    "false_alarm_rate": None,  # None = evaluation.false_alarm_rate
    "nuisance_penalty": 1.0,
    "pixel_auroc_weight": 0.0,
    "n_startup_trials": 10,
    "timeout_s": None,
    "fixed": {},  # {model: {param: value}}: overrides for every trial (e.g. fewer epochs)
    "search_spaces": {},
}


# ------------------------------------------------------------------------------------------ config
def tuning_config(tuning: Mapping[str, Any], evaluation: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``params:tuning`` with defaults filled in; unknown keys are an error (a typo in parameters_tuning.yml)."""
    unknown = sorted(set(tuning) - set(DEFAULT_CONFIG))
    if unknown:
        raise ValueError(f"tuning: unknown key(s) {unknown}; known: {sorted(DEFAULT_CONFIG)}")
    config = {**DEFAULT_CONFIG, **dict(tuning)}
    evaluation = evaluation or {}
    if config["nuisances"] is None:
        config["nuisances"] = evaluation.get("nuisances")
    if config["false_alarm_rate"] is None:
        config["false_alarm_rate"] = float(evaluation.get("false_alarm_rate", 0.05))
    if int(config["trials"]) < 1:
        raise ValueError(f"tuning.trials must be >= 1, got {config['trials']}")
    if int(config["folds"]) < 1:
        raise ValueError(f"tuning.folds must be >= 1, got {config['folds']}")
    if int(config["folds"]) == 1 and not 0.0 < float(config["holdout_fraction"]) < 1.0:
        raise ValueError(f"tuning.holdout_fraction must lie in (0, 1), got {config['holdout_fraction']}")
    if config["nuisance_boards"] not in ("cycle", "all"):
        raise ValueError(f"tuning.nuisance_boards must be 'cycle' or 'all', got {config['nuisance_boards']!r}")
    if config["defect_kinds"] is not None:
        from wood_anomaly.data.synthetic import DEFECT_PAINTERS

        kinds = list(config["defect_kinds"])
        unknown = [k for k in kinds if k not in DEFECT_PAINTERS]
        if not kinds or unknown:
            raise ValueError(f"tuning.defect_kinds: unknown or empty {unknown or kinds}; known: {sorted(DEFECT_PAINTERS)}")
        config["defect_kinds"] = kinds
    if not 0.0 <= float(config["fit_val_fraction"]) < 1.0:
        raise ValueError(f"tuning.fit_val_fraction must lie in [0, 1), got {config['fit_val_fraction']}")
    return config


def _encode_choice(value: Any) -> Any:
    """Optuna categorical choices must be None/bool/int/float/str: lists and dicts travel as JSON."""
    return json.dumps(value) if isinstance(value, (list, tuple, dict)) else value


def _decode_choice(value: Any, choices: Sequence[Any]) -> Any:
    for choice in choices:
        if _encode_choice(choice) == value:
            return choice
    return value


def check_search_space(model: str, space: Mapping[str, Any], base_params: Mapping[str, Any]) -> None:
    """Every declaration well formed and every name a parameter the model has (conf/base)."""
    if not space:
        raise ValueError(f"tuning.search_spaces.{model} is empty or missing: declare at least one parameter")
    unknown = sorted(set(space) - set(base_params))
    if unknown:
        raise ValueError(
            f"tuning.search_spaces.{model}: unknown parameter(s) {unknown}; {model}.model has {sorted(base_params)}"
        )
    for name, decl in space.items():
        where = f"tuning.search_spaces.{model}.{name}"
        if not isinstance(decl, Mapping) or decl.get("type") not in PARAM_TYPES:
            raise ValueError(f"{where}: expected a mapping with type in {PARAM_TYPES}, got {decl!r}")
        kind = decl["type"]
        if kind == "categorical":
            choices = decl.get("choices")
            if not isinstance(choices, Sequence) or isinstance(choices, str) or len(choices) == 0:
                raise ValueError(f"{where}: a categorical needs a non-empty list `choices`, got {choices!r}")
            extra = sorted(set(decl) - {"type", "choices"})
        else:
            if "low" not in decl or "high" not in decl:
                raise ValueError(f"{where}: an {kind} needs `low` and `high`")
            if not float(decl["low"]) <= float(decl["high"]):
                raise ValueError(f"{where}: low {decl['low']} > high {decl['high']}")
            if decl.get("log") and float(decl["low"]) <= 0:
                raise ValueError(f"{where}: log scale needs low > 0, got {decl['low']}")
            if decl.get("log") and decl.get("step") not in (None, 1):
                raise ValueError(f"{where}: `step` and `log` cannot be combined")
            extra = sorted(set(decl) - {"type", "low", "high", "log", "step"})
        if extra:
            raise ValueError(f"{where}: unknown key(s) {extra}")


def suggest_params(trial: Any, space: Mapping[str, Any]) -> dict[str, Any]:
    """One Optuna suggestion per declared parameter: ``{name: value}`` in the model's own types."""
    params: dict[str, Any] = {}
    for name, decl in space.items():
        kind = decl["type"]
        if kind == "int":
            params[name] = trial.suggest_int(
                name, int(decl["low"]), int(decl["high"]), step=int(decl.get("step", 1)), log=bool(decl.get("log", False))
            )
        elif kind == "float":
            step = decl.get("step")
            params[name] = trial.suggest_float(
                name, float(decl["low"]), float(decl["high"]),
                step=None if step is None else float(step), log=bool(decl.get("log", False)),
            )
        else:
            choices = list(decl["choices"])
            picked = trial.suggest_categorical(name, [_encode_choice(c) for c in choices])
            params[name] = _decode_choice(picked, choices)
    return params


# ------------------------------------------------------------------------------------------ folds
@dataclass(frozen=True)
class Fold:
    """One split of the train/good boards and its validation data."""

    train_idx: np.ndarray
    fit_val_idx: np.ndarray
    holdout_idx: np.ndarray
    validation: ValidationSet
    nuisances: dict[str, np.ndarray] = field(default_factory=dict)


def fold_indices(
    n: int, *, folds: int, holdout_fraction: float, fit_val_fraction: float, seed: int
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``[(train_idx, fit_val_idx, holdout_idx), ...]`` over ``n`` boards (fixed seed, sorted indices)."""
    rng = np.random.default_rng(seed)
    if folds == 1:
        n_hold = int(min(max(1, round(n * holdout_fraction)), n - 2))
        perm = rng.permutation(n)
        parts = [(np.sort(perm[n_hold:]), np.sort(perm[:n_hold]))]
    else:
        if n < folds + 1:
            raise ValueError(f"{folds}-fold tuning needs more than {folds} train/good boards, got {n}")
        from sklearn.model_selection import KFold

        splitter = KFold(n_splits=folds, shuffle=True, random_state=seed)
        parts = [(np.sort(a), np.sort(b)) for a, b in splitter.split(np.arange(n))]
    out = []
    for rest, hold in parts:
        n_val = int(round(len(rest) * fit_val_fraction)) if fit_val_fraction > 0 else 0
        n_val = min(max(n_val, 1 if fit_val_fraction > 0 else 0), len(rest) - 1)
        pick = rng.permutation(len(rest))
        fit_val = np.sort(rest[pick[:n_val]])
        train = np.sort(rest[pick[n_val:]])
        out.append((train, fit_val, hold))
    return out


def make_folds(images: np.ndarray, config: Mapping[str, Any], seed: int) -> list[Fold]:
    """The folds and their validation sets (pasted defects + nuisance versions), built once per study."""
    if images.shape[0] < 3:
        raise ValueError(f"tuning needs at least 3 train/good boards, got {images.shape[0]}")
    folds = []
    for f, (train, fit_val, hold) in enumerate(
        fold_indices(
            images.shape[0],
            folds=int(config["folds"]),
            holdout_fraction=float(config["holdout_fraction"]),
            fit_val_fraction=float(config["fit_val_fraction"]),
            seed=seed,
        )
    ):
        held = images[hold]
        nuisances: dict[str, np.ndarray] = {}
        if config["nuisances"] != {}:
            if config["nuisance_boards"] == "all":
                nuisances = nuisance_versions(held, config["nuisances"])
            else:  # board j under nuisance j mod n only: every nuisance seen, at 1/n of the scoring cost
                names = list(parse_nuisances(config["nuisances"]))
                every = nuisance_versions(held, config["nuisances"])
                nuisances = {
                    name: every[name][np.arange(k, len(held), len(names))]
                    for k, name in enumerate(names)
                    if k < len(held)
                }
        folds.append(
            Fold(
                train_idx=train,
                fit_val_idx=fit_val,
                holdout_idx=hold,
                validation=build_validation_set(
                    held, seed=seed + f, kinds=config["defect_kinds"], defects_per_image=int(config["defects_per_image"])
                ),
                nuisances=nuisances,
            )
        )
    return folds


# ------------------------------------------------------------------------------------------ objective
def fold_components(
    scores: np.ndarray,
    maps: np.ndarray | None,
    validation: ValidationSet,
    nuisance_scores: Mapping[str, np.ndarray],
    false_alarm_rate: float,
) -> dict[str, float]:
    """The objective's components for one fold (see the module docstring)."""
    from sklearn.metrics import roc_auc_score

    scores = np.asarray(scores, dtype=np.float64)
    if not np.all(np.isfinite(scores)):
        raise FloatingPointError("the model produced non-finite scores on the validation boards")
    good = scores[validation.labels == 0]
    threshold = validation_threshold(good, threshold_k_for_false_alarm_rate(false_alarm_rate))
    out: dict[str, float] = {
        "auroc": float(roc_auc_score(validation.labels, scores)),
        "threshold": float(threshold),
        "good_far": float(np.mean(good > threshold)),
        "defect_recall": float(np.mean(scores[validation.labels == 1] > threshold)),
    }
    excess = []
    for name, values in nuisance_scores.items():
        far = float(np.mean(np.asarray(values) > threshold))
        out[f"nuisance_far.{name}"] = far
        excess.append(max(0.0, far - false_alarm_rate))
    out["nuisance_far_mean"] = float(np.mean([out[f"nuisance_far.{n}"] for n in nuisance_scores])) if excess else 0.0
    out["nuisance_excess"] = float(np.mean(excess)) if excess else 0.0
    if maps is not None:
        defect = validation.labels == 1
        m = np.asarray(maps, dtype=np.float32)[defect]
        truth = validation.masks[defect]
        if m.shape[1:] == truth.shape[1:]:  # maps come at the input size; anything else is left out
            out["pixel_auroc"] = float(roc_auc_score(truth.ravel(), m.ravel()))
    return out


def combine(components: Sequence[Mapping[str, float]], config: Mapping[str, Any]) -> dict[str, float]:
    """Mean of every component over the folds, and the objective."""
    keys = [k for k in components[0] if all(k in c for c in components)]
    mean = {k: float(np.mean([c[k] for c in components])) for k in keys}
    objective = mean["auroc"] - float(config["nuisance_penalty"]) * mean["nuisance_excess"]
    if float(config["pixel_auroc_weight"]) and "pixel_auroc" in mean:
        objective += float(config["pixel_auroc_weight"]) * mean["pixel_auroc"]
    mean["objective"] = float(objective)
    return mean


def evaluate_params(
    images: np.ndarray,
    folds: Sequence[Fold],
    build: Callable[[], Any],
    config: Mapping[str, Any],
    *,
    seed: int,
    device: str = "auto",
    batch_size: int = 16,
) -> dict[str, float]:
    """Fit a fresh model per fold and return the averaged components (+ ``objective``, ``seconds``)."""
    start = time.perf_counter()
    per_fold = []
    for fold in folds:
        model = build()
        fit_val = images[fold.fit_val_idx] if len(fold.fit_val_idx) else None
        model.fit(images[fold.train_idx], fit_val, seed=seed, device=device, progress=False)
        names = list(fold.nuisances)
        batch = np.concatenate([fold.validation.images, *(fold.nuisances[n] for n in names)])
        scores, maps = model.score(batch, batch_size=batch_size)
        n_val = len(fold.validation)
        bounds = np.cumsum([n_val, *(len(fold.nuisances[n]) for n in names)])
        nuisance_scores = {n: np.asarray(scores[a:b]) for n, a, b in zip(names, bounds[:-1], bounds[1:])}
        per_fold.append(
            fold_components(
                np.asarray(scores[:n_val]),
                None if maps is None else np.asarray(maps[:n_val]),
                fold.validation,
                nuisance_scores,
                float(config["false_alarm_rate"]),
            )
        )
    result = combine(per_fold, config)
    result["seconds"] = round(time.perf_counter() - start, 3)
    return result


# ------------------------------------------------------------------------------------------ study
@dataclass
class StudyResult:
    best_params: dict[str, Any]  # the searched parameters of the best trial
    best_value: float
    best_trial: int
    trials: list[dict[str, Any]]  # one row per trial: number, state, params, components
    study: Any  # the optuna.Study


def run_study(
    images: np.ndarray,
    *,
    model_name: str,
    base_params: Mapping[str, Any],
    build_model: Callable[[dict[str, Any]], Any],
    config: Mapping[str, Any],
    seed: int,
    device: str = "auto",
    batch_size: int = 16,
    on_trial: Callable[[int, dict[str, Any], dict[str, float]], None] | None = None,
) -> StudyResult:
    """An Optuna study over ``config['search_spaces'][model_name]`` on train/good ``images`` only.

    ``build_model(params)`` returns an unfitted model (fit/score on arrays) for the full parameter
    dict (``base_params`` + ``config['fixed'][model_name]`` + the trial's suggestion).
    ``on_trial(number, params, components)`` is called after every finished trial (MLflow logging).
    A trial whose fit or score raises is logged and marked failed; the study goes on.
    """
    import optuna

    images = np.asarray(images)
    space = dict((config.get("search_spaces") or {}).get(model_name) or {})
    fixed = dict((config.get("fixed") or {}).get(model_name) or {})
    check_search_space(model_name, space, base_params)
    unknown_fixed = sorted(set(fixed) - set(base_params))
    if unknown_fixed:
        raise ValueError(f"tuning.fixed.{model_name}: unknown parameter(s) {unknown_fixed}; known: {sorted(base_params)}")
    folds = make_folds(images, config, seed)
    n_trials = int(config["trials"])
    logger.info(
        "Tuning %s: %d trials over %s on %d train/good boards (%d fold(s), %d held out + %d pasted defects + %d nuisances each)",
        model_name, n_trials, sorted(space), len(images), len(folds), len(folds[0].holdout_idx),
        folds[0].validation.n_defect, len(folds[0].nuisances),
    )
    rows: list[dict[str, Any]] = []

    def objective(trial: Any) -> float:
        suggestion = suggest_params(trial, space)
        params = {**dict(base_params), **fixed, **suggestion}
        try:
            comps = evaluate_params(
                images, folds, lambda: build_model(params), config, seed=seed, device=device, batch_size=batch_size
            )
        except Exception as exc:  # noqa: BLE001 - a parameter set that cannot train is a failed trial
            logger.warning("Tuning %s trial %d/%d FAILED (%s: %s) with %s", model_name, trial.number + 1, n_trials,
                           type(exc).__name__, exc, suggestion)
            rows.append({"trial": trial.number, "state": "FAIL", "error": f"{type(exc).__name__}: {exc}",
                         **{f"param.{k}": _encode_choice(v) for k, v in suggestion.items()}})
            raise optuna.TrialPruned(str(exc)) from exc
        for key, value in comps.items():
            trial.set_user_attr(key, value)
        best = max([comps["objective"]] + [r["objective"] for r in rows if r.get("state") == "COMPLETE"])
        logger.info(
            "Tuning %s trial %d/%d: objective %.4f (AUROC %.4f, nuisance false alarms %.3f) in %.1f s, best %.4f | %s",
            model_name, trial.number + 1, n_trials, comps["objective"], comps["auroc"], comps["nuisance_far_mean"],
            comps["seconds"], best, suggestion,
        )
        rows.append({"trial": trial.number, "state": "COMPLETE",
                     **{f"param.{k}": _encode_choice(v) for k, v in suggestion.items()}, **comps})
        if on_trial is not None:
            on_trial(trial.number, suggestion, comps)
        return comps["objective"]

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=int(config["seed"]), n_startup_trials=int(config["n_startup_trials"]))
    study = optuna.create_study(direction="maximize", sampler=sampler, study_name=f"{model_name}-tuning")
    timeout = config.get("timeout_s")
    study.optimize(objective, n_trials=n_trials, timeout=None if timeout in (None, 0) else float(timeout),
                   catch=(), gc_after_trial=True)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise RuntimeError(f"tuning {model_name}: every trial failed; see the warnings above")
    best = study.best_trial
    best_params = {name: _decode_choice(value, space[name].get("choices", [])) if space[name]["type"] == "categorical"
                   else value for name, value in best.params.items()}
    return StudyResult(best_params=best_params, best_value=float(best.value), best_trial=int(best.number),
                       trials=rows, study=study)

"""wood_anomaly.tuning (Kedro-free): search-space declarations, folds, the objective's arithmetic."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from wood_anomaly.data.validation_set import ValidationSet
from wood_anomaly.tuning import (
    check_search_space,
    combine,
    fold_components,
    fold_indices,
    suggest_params,
    tuning_config,
)

BASE = {"train_flips": ["none"], "coreset_ratio": 0.02, "pool_size": 1, "score_topk": 0.025, "patch_neighbors": 5}


def test_suggestions_follow_the_declared_types_and_decode_list_choices():
    space = {
        "train_flips": {"type": "categorical", "choices": [["none"], ["none", "h", "v", "hv"]]},
        "coreset_ratio": {"type": "float", "low": 0.005, "high": 0.05, "log": True},
        "patch_neighbors": {"type": "int", "low": 1, "high": 9},
        "pool_size": {"type": "categorical", "choices": [1, 3]},
    }
    check_search_space("patchcore", space, BASE)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen_flips = set()
    for _ in range(12):
        trial = study.ask()
        p = suggest_params(trial, space)
        assert p["train_flips"] in (["none"], ["none", "h", "v", "hv"])
        seen_flips.add(tuple(p["train_flips"]))
        assert 0.005 <= p["coreset_ratio"] <= 0.05 and isinstance(p["coreset_ratio"], float)
        assert 1 <= p["patch_neighbors"] <= 9 and isinstance(p["patch_neighbors"], int)
        assert p["pool_size"] in (1, 3)
        study.tell(trial, 0.0)
    assert len(seen_flips) == 2


@pytest.mark.parametrize(
    "space, match",
    [
        ({}, "empty"),
        ({"coreset_ration": {"type": "float", "low": 0.1, "high": 0.2}}, "unknown parameter"),
        ({"coreset_ratio": {"type": "uniform", "low": 0.1, "high": 0.2}}, "type in"),
        ({"coreset_ratio": {"type": "float", "low": 0.3, "high": 0.2}}, "low"),
        ({"coreset_ratio": {"type": "float", "low": 0.0, "high": 0.2, "log": True}}, "log scale"),
        ({"pool_size": {"type": "categorical", "choices": []}}, "non-empty"),
        ({"pool_size": {"type": "int", "low": 1}}, "low` and `high"),
        ({"pool_size": {"type": "int", "low": 1, "high": 3, "stepp": 2}}, "unknown key"),
    ],
)
def test_bad_search_space_is_a_clear_error(space, match):
    with pytest.raises(ValueError, match=match):
        check_search_space("patchcore", space, BASE)


def test_config_rejects_typos_and_fills_from_evaluation():
    with pytest.raises(ValueError, match="unknown key"):
        tuning_config({"trails": 3})
    cfg = tuning_config({"trials": 2}, {"false_alarm_rate": 0.1, "nuisances": {"hflip": {"kind": "hflip"}}})
    assert cfg["false_alarm_rate"] == 0.1 and cfg["nuisances"] == {"hflip": {"kind": "hflip"}}


@pytest.mark.parametrize("folds", [1, 3])
def test_folds_are_disjoint_cover_the_boards_and_are_seeded(folds):
    parts = fold_indices(20, folds=folds, holdout_fraction=0.3, fit_val_fraction=0.1, seed=4)
    assert len(parts) == folds
    held = []
    for train, fit_val, hold in parts:
        assert not set(train) & set(hold) and not set(fit_val) & set(hold) and not set(train) & set(fit_val)
        assert len(train) + len(fit_val) + len(hold) == 20 and len(fit_val) >= 1
        held += list(hold)
    if folds > 1:
        assert sorted(held) == list(range(20))  # every board held out exactly once
    else:
        assert len(held) == 6
    again = fold_indices(20, folds=folds, holdout_fraction=0.3, fit_val_fraction=0.1, seed=4)
    assert all(np.array_equal(a, b) for pa, pb in zip(parts, again) for a, b in zip(pa, pb))


def _vs(n_good: int, n_def: int) -> ValidationSet:
    n = n_good + n_def
    masks = np.zeros((n, 4, 4), bool)
    masks[n_good:, 0, 0] = True
    return ValidationSet(
        images=np.zeros((n, 4, 4, 3), np.uint8), masks=masks,
        labels=np.r_[np.zeros(n_good, int), np.ones(n_def, int)],
        kinds=np.array(["good"] * n_good + ["crack"] * n_def), source=np.r_[np.arange(n_good), np.arange(n_def)],
    )


def test_components_and_objective_by_hand():
    vs = _vs(4, 4)
    scores = np.array([1.0, 2.0, 3.0, 4.0, 2.5, 5.0, 6.0, 7.0])  # one defect below two good boards
    good = scores[:4]
    threshold = good.mean() + 1.6448536269514722 * good.std(ddof=1)  # false_alarm_rate 0.05
    comps = fold_components(scores, None, vs, {"hflip": np.array([10.0, 0.0]), "jpeg": np.array([0.0, 0.0])}, 0.05)
    assert comps["auroc"] == pytest.approx(14 / 16)
    assert comps["threshold"] == pytest.approx(threshold)
    assert comps["nuisance_far.hflip"] == 0.5 and comps["nuisance_far.jpeg"] == 0.0
    assert comps["nuisance_excess"] == pytest.approx(((0.5 - 0.05) + 0.0) / 2)
    out = combine([comps, comps], {"nuisance_penalty": 2.0, "pixel_auroc_weight": 0.0})
    assert out["objective"] == pytest.approx(14 / 16 - 2.0 * 0.225)


def test_pixel_auroc_uses_the_pasted_masks():
    vs = _vs(2, 2)
    maps = np.zeros((4, 4, 4), np.float32)
    maps[2:, 0, 0] = 1.0  # exactly on the defect pixel
    comps = fold_components(np.array([0.0, 0.1, 1.0, 2.0]), maps, vs, {}, 0.05)
    assert comps["pixel_auroc"] == pytest.approx(1.0)
    assert comps["nuisance_excess"] == 0.0


def test_every_model_has_a_valid_search_space_in_conf_base():
    from pathlib import Path

    import yaml

    from wood_anomaly.models.registry import MODEL_NAMES

    conf = Path(__file__).resolve().parents[1] / "conf" / "base"
    tuning = yaml.safe_load((conf / "parameters_tuning.yml").read_text())["tuning"]
    tuning_config(tuning)  # no unknown keys
    assert set(tuning["search_spaces"]) == set(MODEL_NAMES)
    for model in MODEL_NAMES:
        base = yaml.safe_load((conf / f"parameters_{model}.yml").read_text())[model]["model"]
        check_search_space(model, tuning["search_spaces"][model], base)
        types = {decl["type"] for decl in tuning["search_spaces"][model].values()}
        assert types & {"int", "float"}, model  # not only categoricals

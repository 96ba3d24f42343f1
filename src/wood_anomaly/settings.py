"""Kedro project settings for wood-anomaly."""

from kedro.config import OmegaConfigLoader

from wood_anomaly.hooks import ModelRunTagsHook, SparkHooks
from wood_anomaly.mlflow_ui import ExperimentUiHook
from wood_anomaly.run_log import RunLogHook

# kedro-mlflow registers its own hook (MLflow run per `kedro run`); ours add tags and a child run per
# model, tag the experiment for MLflow's UI, and log progress ([3/6] efficientad ...) and a closing summary.
# SparkHooks: the SparkSession for the batch_scoring pipeline (conf/<env>/spark.yml), started only for it.
HOOKS = (ModelRunTagsHook(), ExperimentUiHook(), RunLogHook(), SparkHooks())

# No telemetry: there is no network here, and users must never be prompted. (.telemetry says consent: false too.)
DISABLE_HOOKS_FOR_PLUGINS = ("kedro-telemetry",)

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # conf/<env> files only override what they name (conf/gpu: the long schedules), deep-merged over base.
    "merge_strategy": {"parameters": "soft"},
    "config_patterns": {
        "catalog": ["catalog*", "catalog*/**", "**/catalog*"],
        "parameters": ["parameters*", "parameters*/**", "**/parameters*"],
        "spark": ["spark*", "spark*/**"],
    },
}

"""Batch scoring on Spark: board image files (``binaryFile``) -> the registered pyfunc (``spark_udf``) -> rows.

Kedro-free; the ``batch_scoring`` pipeline calls these, with the SparkSession the project's hook
builds from ``conf/<env>/spark.yml`` (:func:`build_spark_session`).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from wood_anomaly.data.layout import IMAGE_SUFFIXES

logger = logging.getLogger(__name__)

#: what the pyfunc returns per row (columns of WoodAnomalyModel.predict), as a Spark struct
UDF_RESULT_TYPE = "score double, verdict string, threshold double, model string, version string, error string"
OUTPUT_COLUMNS = ["path", "score", "verdict", "threshold", "model_name", "model_version", "trained_version", "error"]


class BatchInputError(ValueError):
    """The images to score cannot be found, or the model is not registered."""


def build_spark_session(conf: dict[str, Any]) -> Any:
    """A SparkSession from a flat ``{"spark.master": "local[*]", ...}`` mapping (``conf/*/spark.yml``).

    Python workers run this interpreter (``PYSPARK_PYTHON``, unless set): the project's venv, with
    pandas, pyarrow, MLflow and the models.
    """
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    from pyspark import SparkConf
    from pyspark.sql import SparkSession

    settings = {str(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in (conf or {}).items()}
    settings.setdefault("spark.master", "local[*]")
    settings.setdefault("spark.app.name", "wood-anomaly")
    spark = SparkSession.builder.config(conf=SparkConf().setAll(list(settings.items()))).getOrCreate()
    spark.sparkContext.setLogLevel(settings.get("spark.log.level", "WARN"))
    logger.info("SparkSession on %s (Spark %s)", spark.sparkContext.master, spark.version)
    return spark


def image_path_regex() -> str:
    """Spark regex for the image file names this project reads (case-insensitive suffix)."""
    suffixes = sorted(s.lstrip(".") for s in IMAGE_SUFFIXES)
    return r"(?i)^[^.].*\.(" + "|".join(suffixes) + r")$"


def read_board_files(spark: Any, images: str, *, recursive: bool = True) -> Any:
    """``images`` (a folder, read recursively, or a glob like ``/boards/*/*.jpg``) -> DataFrame[path, content].

    Only image files (by suffix, not hidden) are kept; the path is Spark's URI of the file.
    """
    from pyspark.sql import functions as F

    if not images:
        raise BatchInputError(
            'batch.images is not set: kedro run --pipeline=batch_scoring --params="batch.model=patchcore,batch.images=<folder or glob>"'
        )
    reader = spark.read.format("binaryFile")
    is_glob = any(ch in str(images) for ch in "*?[{")
    if recursive and not is_glob:
        reader = reader.option("recursiveFileLookup", "true")
    try:
        frame = reader.load(str(images))
    except Exception as exc:  # AnalysisException: path does not exist
        raise BatchInputError(f"batch.images={images}: cannot list files ({str(exc).splitlines()[0]})") from exc
    name = F.element_at(F.split(F.col("path"), "/"), -1)
    return frame.where(name.rlike(image_path_regex())).select("path", "content")


def resolve_model_version(model: str, version: str | int | None = None) -> tuple[str, str]:
    """``(registered name, version)``: the pinned version, or the newest one in the registry."""
    from mlflow.tracking import MlflowClient

    from .register import registered_name

    name = registered_name(model)
    versions = [int(v.version) for v in MlflowClient().search_model_versions(f"name = '{name}'")]
    if not versions:
        raise BatchInputError(
            f"no registered model {name!r} in the MLflow registry: train it first with `kedro run --pipeline={model}`"
        )
    if version in (None, "", "latest", "null", "None"):
        return name, str(max(versions))
    if int(version) not in versions:
        raise BatchInputError(f"{name}: no version {version} in the registry (versions: {sorted(versions)})")
    return name, str(int(version))


def score_board_files(
    spark: Any,
    files: Any,
    model: str,
    *,
    version: str | int | None = None,
    partitions: int | None = None,
    threads_per_task: int | None = 1,
) -> Any:
    """Score DataFrame[path, content] with ``models:/wood-anomaly-<model>/<version>`` -> one row per file.

    Columns: :data:`OUTPUT_COLUMNS`. A file that is not a readable image gets verdict ``unreadable``
    and the reason in ``error`` (the pyfunc's ``on_error="row"``); the job goes on.
    """
    import mlflow.pyfunc
    from pyspark.sql import functions as F

    from .pyfunc import IMAGE_COLUMN, MAP_COLUMN, THREADS_ENV

    name, resolved = resolve_model_version(model, version)
    uri = f"models:/{name}/{resolved}"
    extra_env = {THREADS_ENV: str(int(threads_per_task))} if threads_per_task else None
    udf = mlflow.pyfunc.spark_udf(
        spark, uri, result_type=UDF_RESULT_TYPE, env_manager="local", params={"on_error": "row"}, extra_env=extra_env
    )
    partitions = int(partitions or spark.sparkContext.defaultParallelism)
    scored = (
        files.repartition(partitions)  # binaryFile packs small files into one partition: spread them over the cores
        .withColumn(IMAGE_COLUMN, F.base64("content"))  # needs spark.sql.chunkBase64String.enabled=false (spark.yml)
        # the optional return_map input is given (False): spark_udf would send a NaN column for it
        .withColumn("result", udf(F.struct(F.col(IMAGE_COLUMN), F.lit(False).alias(MAP_COLUMN))))
    )
    logger.info("Scoring with %s on %d partitions", uri, partitions)
    return scored.select(
        "path",
        F.col("result.score").alias("score"),
        F.col("result.verdict").alias("verdict"),
        F.col("result.threshold").alias("threshold"),
        F.lit(name).alias("model_name"),
        F.lit(resolved).alias("model_version"),
        F.col("result.version").alias("trained_version"),
        F.expr("nullif(result.error, '')").alias("error"),  # null when the row was scored
    )

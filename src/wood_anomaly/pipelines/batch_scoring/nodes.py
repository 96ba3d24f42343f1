"""Batch-scoring nodes (thin): list the board files with Spark, score them with the registered pyfunc.

Usage::

    kedro run --pipeline=batch_scoring --params="batch.model=patchcore,batch.images=/archive/boards"

The SparkSession is the one ``hooks.SparkHooks`` built from ``conf/<env>/spark.yml``.
"""

from __future__ import annotations

import logging
from typing import Any

from wood_anomaly.serving.spark import read_board_files, score_board_files

logger = logging.getLogger(__name__)


def _spark() -> Any:
    from pyspark.sql import SparkSession

    spark = SparkSession.getActiveSession()
    if spark is None:  # e.g. nodes called outside `kedro run`: the same builder as the hook, defaults
        from wood_anomaly.serving.spark import build_spark_session

        spark = build_spark_session({})
    return spark


def list_board_files(batch: dict[str, Any]) -> Any:
    """``batch.images`` (folder, read recursively, or glob) -> Spark DataFrame[path, content]."""
    return read_board_files(_spark(), batch.get("images"), recursive=bool(batch.get("recursive", True)))


def score_boards(files: Any, batch: dict[str, Any]) -> Any:
    """Score every file with ``models:/wood-anomaly-<batch.model>/<batch.version or latest>``.

    Returns a Spark DataFrame (path, score, verdict, threshold, model_name, model_version,
    trained_version, error); unreadable files are rows with verdict ``unreadable`` and ``error`` set.
    """
    return score_board_files(
        _spark(), files, str(batch.get("model") or "patchcore"), version=batch.get("version"),
        partitions=batch.get("partitions"), threads_per_task=batch.get("threads_per_task", 1),
    )

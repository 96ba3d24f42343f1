"""Concurrent requests scored together: one model call for the images of every request waiting.

The served model is one object on a few cores. Scoring every request the moment it arrives would only
make the requests fight for the cores (and not every model is thread-safe); scoring them one by one
wastes what batching buys (the backbone and the k-NN search are cheaper per image in a batch of 4 than
one by one). :class:`CoalescingScorer` does both: at most ``lanes`` model calls run at once (1 for a
model that is not thread-safe); while they are busy, arriving requests queue, and the first waiting
caller to find a free lane takes every queued request (up to ``max_batch`` images), scores them in one
call, then hands each caller its own rows.

Scores do not depend on the company an image keeps in a batch beyond float rounding (the models score
each image independently); a model error fails exactly the requests that were in that batch.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

ScoreFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass
class _Job:
    images: np.ndarray
    done: bool = False
    scores: np.ndarray | None = None
    maps: np.ndarray | None = None
    error: BaseException | None = None


class CoalescingScorer:
    """Batched ``score_fn(images) -> (scores [n], maps [n, H, W])`` for many threads, at most ``lanes`` calls at once."""

    def __init__(self, score_fn: ScoreFn, max_batch: int, lanes: int = 1) -> None:
        if int(max_batch) < 1 or int(lanes) < 1:
            raise ValueError(f"CoalescingScorer: max_batch and lanes must be >= 1, got {max_batch!r} / {lanes!r}")
        self.score_fn = score_fn
        self.max_batch = int(max_batch)
        self.lanes = int(lanes)  # model calls allowed at the same time (each on its own threads)
        self._cv = threading.Condition()
        self._queue: deque[_Job] = deque()
        self._running = 0
        self.batches: list[int] = []  # images per model call (for tests and diagnostics; the last 1,000)

    def score(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores and maps of ``images`` ([n, H, W, 3], 1 <= n <= max_batch), in order."""
        images = np.asarray(images)
        if not 1 <= len(images) <= self.max_batch:
            raise ValueError(f"CoalescingScorer.score: 1 to {self.max_batch} images per call, got {len(images)}")
        job = _Job(images)
        with self._cv:
            self._queue.append(job)
            while not job.done:
                if self._running >= self.lanes or not self._queue:
                    self._cv.wait()
                    continue
                batch = [self._queue.popleft()]  # the oldest waiting request first (maybe not this one)
                count = len(batch[0].images)
                while self._queue and count + len(self._queue[0].images) <= self.max_batch and (
                    self._queue[0].images.shape[1:] == batch[0].images.shape[1:]
                ):
                    count += len(self._queue[0].images)
                    batch.append(self._queue.popleft())
                self._running += 1
                self._cv.release()
                try:
                    self._run(batch)
                finally:
                    self._cv.acquire()
                    self._running -= 1
                    self._cv.notify_all()
        if job.error is not None:
            raise job.error
        return job.scores, job.maps

    def _run(self, batch: list[_Job]) -> None:
        try:
            stacked = batch[0].images if len(batch) == 1 else np.concatenate([job.images for job in batch])
            scores, maps = self.score_fn(stacked)
            start = 0
            for job in batch:
                stop = start + len(job.images)
                job.scores, job.maps = scores[start:stop], maps[start:stop]
                start = stop
        except BaseException as exc:  # noqa: BLE001 - handed to every caller of this batch
            for job in batch:
                job.error = exc
        finally:
            self.batches = [*self.batches[-999:], sum(len(job.images) for job in batch)]
            for job in batch:
                job.done = True


def coalescing_scorer(model: Any, batch_size: int, threads: int | None = None, lanes: int = 1) -> CoalescingScorer:
    """A :class:`CoalescingScorer` over ``model.score(images, batch_size=batch_size)``; ``threads`` caps
    PyTorch's and FAISS's threads in whichever thread scores (OpenMP's cap is per thread)."""
    from wood_anomaly.models.base import set_cpu_threads

    def score(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        set_cpu_threads(threads)
        return model.score(images, batch_size=batch_size)

    return CoalescingScorer(score, batch_size, lanes)

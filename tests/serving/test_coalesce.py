"""CoalescingScorer: concurrent requests share model calls, each caller gets exactly its own rows."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from wood_anomaly.serving.coalesce import CoalescingScorer


class SlowModel:
    """score = the image's mean; maps = the first channel; records every call and overlapping calls."""

    def __init__(self, delay: float = 0.02, fail_on: float | None = None) -> None:
        self.delay, self.fail_on = delay, fail_on
        self.calls: list[int] = []
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            self.calls.append(len(images))
        time.sleep(self.delay)
        with self._lock:
            self.active -= 1
        means = images.reshape(len(images), -1).mean(1).astype(np.float32)
        if self.fail_on is not None and np.isclose(means, self.fail_on).any():
            raise RuntimeError("model failed on this batch")
        return means, images[..., 0].astype(np.float32)


def _image(value: int, n: int = 1) -> np.ndarray:
    return np.full((n, 4, 4, 3), value, np.uint8)


def _hammer(scorer: CoalescingScorer, values: list[int], n_per_call: int = 1) -> dict[int, object]:
    results: dict[int, object] = {}
    barrier = threading.Barrier(len(values))

    def client(v: int) -> None:
        barrier.wait()
        try:
            results[v] = scorer.score(_image(v, n_per_call))
        except Exception as exc:  # noqa: BLE001
            results[v] = exc

    threads = [threading.Thread(target=client, args=(v,)) for v in values]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return results


def test_concurrent_requests_are_batched_serialised_and_get_their_own_rows() -> None:
    model = SlowModel()
    scorer = CoalescingScorer(model, max_batch=4)
    values = list(range(10, 22))  # 12 concurrent single-image requests
    results = _hammer(scorer, values)
    for v in values:
        scores, maps = results[v]
        assert scores.shape == (1,) and scores[0] == pytest.approx(v)  # its own row, never a neighbour's
        assert maps.shape == (1, 4, 4) and np.all(maps == v)
    assert model.max_active == 1  # never two model calls at once
    assert sum(model.calls) == 12 and max(model.calls) <= 4
    assert len(model.calls) < 12  # requests that waited were scored together
    assert scorer.batches == model.calls


def test_multi_image_requests_respect_max_batch_and_order() -> None:
    model = SlowModel(delay=0.01)
    scorer = CoalescingScorer(model, max_batch=4)
    results = _hammer(scorer, [1, 2, 3, 4, 5], n_per_call=3)  # 3 + 3 > 4: never merged
    assert model.calls == [3] * 5
    assert all(np.allclose(results[v][0], v) for v in results)
    scores, maps = scorer.score(np.concatenate([_image(7), _image(9)]))  # a lone call: scored as is, in order
    assert scores.tolist() == [7.0, 9.0] and maps.shape == (2, 4, 4)
    with pytest.raises(ValueError, match="1 to 4 images"):
        scorer.score(_image(1, 5))
    with pytest.raises(ValueError, match="max_batch"):
        CoalescingScorer(model, 0)


def test_a_failing_batch_fails_only_its_requests_and_the_scorer_goes_on() -> None:
    model = SlowModel(fail_on=13.0)
    scorer = CoalescingScorer(model, max_batch=1)  # one request per call: only request 13 can fail
    results = _hammer(scorer, [11, 12, 13, 14])
    assert isinstance(results[13], RuntimeError)
    assert all(results[v][0][0] == v for v in (11, 12, 14))
    assert scorer.score(_image(20))[0][0] == 20.0  # still serving


def test_real_torch_models_score_the_same_in_concurrent_lanes(monkeypatch) -> None:
    """PatchCore and PaDiM in two lanes at once (the served default on 2 cores) = scored one by one."""
    from wood_anomaly.models.padim import Padim
    from wood_anomaly.models.patchcore import PatchCore
    from wood_anomaly.serving.coalesce import coalescing_scorer
    from wood_anomaly.serving.pyfunc import LANES_ENV, THREADS_ENV, scoring_lanes

    rng = np.random.default_rng(0)
    train = rng.integers(90, 160, (6, 64, 64, 3), dtype=np.uint8)
    test = rng.integers(90, 160, (8, 64, 64, 3), dtype=np.uint8)
    test[3, 20:30, 20:30] = 10
    for model in (
        PatchCore(coreset_ratio=0.3).fit(train, seed=0, device="cpu", progress=False),
        Padim(n_features=20).fit(train, seed=0, device="cpu", progress=False),
    ):
        assert model.concurrent_scoring
        serial = np.concatenate([model.score(test[i : i + 1], batch_size=1)[0] for i in range(len(test))])
        scorer = coalescing_scorer(model, 2, threads=1, lanes=2)
        results: dict[int, np.ndarray] = {}

        def client(i: int, scorer=scorer) -> None:
            results[i] = scorer.score(test[i : i + 1])[0]

        threads = [threading.Thread(target=client, args=(i,)) for i in range(len(test))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        np.testing.assert_allclose(np.concatenate([results[i] for i in range(len(test))]), serial, rtol=1e-4)
    monkeypatch.delenv(THREADS_ENV, raising=False)
    monkeypatch.delenv(LANES_ENV, raising=False)
    assert scoring_lanes(model, cpu_count=2) == (1, 2)  # torch models: one lane per core, one thread each
    assert scoring_lanes(object(), cpu_count=2) == (None, 1)  # the rest: one call at a time, all cores
    monkeypatch.setenv(LANES_ENV, "3")
    assert scoring_lanes(object(), cpu_count=2) == (None, 1)  # refused (logged) for models without concurrent_scoring
    monkeypatch.setenv(THREADS_ENV, "1")
    assert scoring_lanes(model, cpu_count=4) == (1, 3)

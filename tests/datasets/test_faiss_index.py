"""FaissIndexDataset specifics: index kinds, GPU indexes saved as CPU ones."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pytest

from wood_anomaly.datasets import FaissIndexDataset
from wood_anomaly.datasets import faiss_index as module


def test_non_flat_index_round_trip(tmp_path: Path) -> None:
    data = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    index = faiss.IndexHNSWFlat(4, 8)
    index.add(data)
    dataset = FaissIndexDataset(filepath=str(tmp_path / "h.faiss"))
    dataset.save(index)
    loaded = dataset.load()
    assert isinstance(loaded, faiss.IndexHNSWFlat) and loaded.ntotal == 50
    assert (loaded.search(data[:3], 1)[1].ravel() == [0, 1, 2]).all()


class GpuIndexFlatL2(faiss.IndexFlatL2):
    """Stands in for faiss.GpuIndexFlatL2 on a CPU-only faiss build."""


def test_gpu_index_is_converted_to_cpu_before_writing(tmp_path: Path, monkeypatch) -> None:
    gpu = GpuIndexFlatL2(3)
    gpu.add(np.eye(3, dtype=np.float32))
    calls = []

    def fake_gpu_to_cpu(index: faiss.Index) -> faiss.Index:
        calls.append(type(index).__name__)
        cpu = faiss.IndexFlatL2(index.d)
        cpu.add(index.reconstruct_n(0, index.ntotal))
        return cpu

    monkeypatch.setattr(module.faiss, "index_gpu_to_cpu", fake_gpu_to_cpu, raising=False)
    dataset = FaissIndexDataset(filepath=str(tmp_path / "g.faiss"))
    dataset.save(gpu)
    assert calls == ["GpuIndexFlatL2"]
    loaded = dataset.load()
    assert type(loaded) is faiss.IndexFlatL2 and loaded.ntotal == 3


def test_cpu_index_is_not_converted(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(module.faiss, "index_gpu_to_cpu",
                        lambda index: pytest.fail("converted a CPU index"), raising=False)
    FaissIndexDataset(filepath=str(tmp_path / "c.faiss")).save(faiss.IndexFlatL2(2))


def test_gpu_index_without_converter_is_a_clear_error(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delattr(module.faiss, "index_gpu_to_cpu", raising=False)
    with pytest.raises(Exception, match="GPU index"):
        FaissIndexDataset(filepath=str(tmp_path / "g.faiss")).save(GpuIndexFlatL2(2))

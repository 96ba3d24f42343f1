"""wood-anomaly: unsupervised defect detection on wood surfaces."""

import os

# TensorFlow reads these when it is first imported (by a Keras model, or by the catalog's Keras
# datasets): no C++ INFO/WARNING start-up lines (the oneDNN notice among them). A value set by the
# user wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# PyTorch's CPU allocator: 2 MB-aligned, transparent-huge-page backed buffers for large tensors.
# Without them a process that has also run TensorFlow (the default run trains Keras and torch models
# in one process) ran PatchCore's coreset and EfficientAD's steps about 2x slower (TLB misses on the
# big distance buffers; benchmarks/default_run.py). A value set by the user wins.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

from wood_anomaly import quiet  # noqa: E402

quiet.install()  # exactly the known harmless warnings of our dependencies (see quiet.py)

# Import order matters: `import tensorflow` followed by the first `import triton` (pulled in by
# torchvision.ops <- timm, i.e. every torch model here) segfaults the process (TF 2.21 + torch 2.14.1
# CUDA wheels; `python -c "import tensorflow, triton"`). A Kedro catalog imports TensorFlow as soon as
# it builds a Keras model dataset, before any torch model runs, so load triton first, whenever any
# part of the package is imported (about 0.4 s).
try:
    import triton  # noqa: F401
except ImportError:  # CPU-only torch builds have no triton: nothing to guard
    pass

__version__ = "0.1.0"

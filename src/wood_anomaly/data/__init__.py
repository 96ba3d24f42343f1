"""Kedro-free data layer: MVTec-layout scanning and loading, synthetic wood, augmentation."""

from wood_anomaly.data.augment import AugmentConfig, augment_batch, sample_grid
from wood_anomaly.data.layout import (
    CorruptImageError,
    DatasetError,
    DatasetNotFoundError,
    EmptyDatasetError,
    LayoutError,
    MissingMaskWarning,
    OrphanMaskError,
    load_image,
    load_mask,
    load_prepared_arrays,
    prepare_dataset,
    scan_dataset,
    select,
    split_train_val,
)
from wood_anomaly.data.synthetic import NotASyntheticSetError, generate_synthetic_wood

__all__ = [
    "AugmentConfig",
    "CorruptImageError",
    "DatasetError",
    "DatasetNotFoundError",
    "EmptyDatasetError",
    "LayoutError",
    "MissingMaskWarning",
    "NotASyntheticSetError",
    "OrphanMaskError",
    "augment_batch",
    "generate_synthetic_wood",
    "load_image",
    "load_mask",
    "load_prepared_arrays",
    "prepare_dataset",
    "sample_grid",
    "scan_dataset",
    "select",
    "split_train_val",
]

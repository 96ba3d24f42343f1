"""wood-anomaly: unsupervised defect detection on wood surfaces."""

__version__ = "0.1.0"

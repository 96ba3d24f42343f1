"""PaDiM: per-position Gaussian of pretrained features, Mahalanobis anomaly map."""

from wood_anomaly.models.padim.model import DEFAULTS, Padim

__all__ = ["DEFAULTS", "Padim"]

"""EfficientAD: student-teacher + autoencoder anomaly detection on a frozen pretrained teacher."""

from wood_anomaly.models.efficientad.model import DEFAULTS, EfficientAD

__all__ = ["DEFAULTS", "EfficientAD"]

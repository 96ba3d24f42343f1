"""PatchCore: nearest-neighbour distance of pretrained patch features to a coreset memory bank (FAISS)."""

from wood_anomaly.models.patchcore.model import DEFAULTS, PatchCore

__all__ = ["DEFAULTS", "PatchCore"]

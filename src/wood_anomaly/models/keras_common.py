"""Moved: the shared Keras code now lives in :mod:`wood_anomaly.models.keras` (split by concern).

Kept so that old imports (``from wood_anomaly.models.keras_common import ...``) still work.
"""

from wood_anomaly.models.keras import *  # noqa: F401,F403
from wood_anomaly.models.keras import __all__  # noqa: F401

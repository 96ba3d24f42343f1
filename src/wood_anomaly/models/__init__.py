"""Kedro-free anomaly models: each has fit/score on uint8 image arrays (see docs/design.md)."""

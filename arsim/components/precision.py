"""The float type of a simulation (``precision``): float64, or float32 neurons and matrices."""

from __future__ import annotations

from arsim.components.registry import Asks, Feature, register

SINGLE_PRECISION = register(
    Feature.SINGLE_PRECISION,
    "runs in single precision",
    Asks("precision", lambda m, p: p.precision == "single"),
    otherwise="precision = 'double'",
)

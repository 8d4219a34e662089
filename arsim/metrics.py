"""Comparisons between an AR update and exact backprop."""

from __future__ import annotations

import numpy as np


def angle_degrees(a: np.ndarray | list, b: np.ndarray | list) -> float:
    """Angle between two vectors (arrays are flattened and lists concatenated), in degrees."""
    a, b = _flat(a), _flat(b)
    cosine = float(a @ b) / (np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))))


def relative_error(actual: np.ndarray | list, expected: np.ndarray | list) -> float:
    """``|actual − expected| / |expected|`` with Euclidean norms over all entries."""
    actual, expected = _flat(actual), _flat(expected)
    return float(np.linalg.norm(actual - expected) / np.linalg.norm(expected))


def _flat(arrays: np.ndarray | list) -> np.ndarray:
    if isinstance(arrays, (list, tuple)):
        return np.concatenate([np.ravel(a) for a in arrays if a is not None])
    return np.ravel(arrays)

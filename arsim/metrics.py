"""Comparisons between an AR update and exact backprop."""

from __future__ import annotations

import numpy as np


def angle_degrees(a: np.ndarray | list, b: np.ndarray | list) -> float:
    """Angle between two vectors (arrays are flattened and lists concatenated), in degrees."""
    pairs = _pairs(a, b)
    dot = sum(float(np.vdot(x, y)) for x, y in pairs)
    norms = np.sqrt(sum(float(np.vdot(x, x)) for x, _ in pairs)) * np.sqrt(
        sum(float(np.vdot(y, y)) for _, y in pairs)
    )
    return float(np.degrees(np.arccos(np.clip(dot / norms, -1.0, 1.0))))


def relative_error(actual: np.ndarray | list, expected: np.ndarray | list) -> float:
    """``|actual − expected| / |expected|`` with Euclidean norms over all entries."""
    pairs = _pairs(actual, expected)
    difference = sum(float(np.vdot(x - y, x - y)) for x, y in pairs)
    return float(np.sqrt(difference / sum(float(np.vdot(y, y)) for _, y in pairs)))


def _pairs(a: np.ndarray | list, b: np.ndarray | list) -> list[tuple[np.ndarray, np.ndarray]]:
    """Matching flat pieces of ``a`` and ``b``, never forming the concatenated vectors.

    The pieces are the arrays of two lists (``None`` entries dropped) or the two arrays.
    """
    if not isinstance(a, (list, tuple)):
        return [(np.ravel(a), np.ravel(b))]
    a = [np.ravel(x) for x in a if x is not None]
    b = [np.ravel(y) for y in b if y is not None]
    if [x.size for x in a] != [y.size for y in b]:
        sizes = [x.size for x in a], [y.size for y in b]
        raise ValueError(f"mismatched pieces: sizes {sizes[0]} and {sizes[1]}")
    return list(zip(a, b, strict=True))


def per_sample_comparison(
    actual: list[tuple[np.ndarray, np.ndarray, bool]],
    expected: list[tuple[np.ndarray, np.ndarray, bool]],
) -> dict[str, np.ndarray]:
    """Angle and relative error between per-sample weight updates given as outer products.

    A sample's update of connection ``c`` is ``δ_c x_cᵀ`` (and ``δ_c`` for its bias), so inner
    products and norms follow from the factors without forming any matrix:
    ``⟨a bᵀ, c dᵀ⟩ = (a·c)(b·d)``.

    Parameters
    ----------
    actual, expected : list of (ndarray, ndarray, bool)
        Per connection: the post factor ``δ`` (samples, n_post), the pre factor ``x``
        (samples, n_pre) and whether the connection has a bias; ``expected`` is the reference
        (the backprop gradient of each sample).

    Returns
    -------
    dict of ndarray
        Per sample: ``angle_deg`` over all weights and biases, ``rel_error``
        (``|actual − expected| / |expected|``) and ``angle_deg_W<c>`` per connection.
    """
    total = {"inner": 0.0, "actual": 0.0, "expected": 0.0}
    result = {}
    for index, ((a, b, bias), (c, d, _)) in enumerate(zip(actual, expected, strict=True)):
        post, pre = np.einsum("sn,sn->s", a, c), np.einsum("sn,sn->s", b, d)
        norm_a, norm_c = np.einsum("sn,sn->s", a, a), np.einsum("sn,sn->s", c, c)
        inner = post * pre
        square_actual = norm_a * np.einsum("sn,sn->s", b, b)
        square_expected = norm_c * np.einsum("sn,sn->s", d, d)
        result[f"angle_deg_W{index}"] = _angle(inner, square_actual, square_expected)
        if bias:
            inner, square_actual, square_expected = (
                inner + post,
                square_actual + norm_a,
                square_expected + norm_c,
            )
        total["inner"] = total["inner"] + inner
        total["actual"] = total["actual"] + square_actual
        total["expected"] = total["expected"] + square_expected
    distance = np.maximum(total["actual"] + total["expected"] - 2 * total["inner"], 0.0)
    return {
        "angle_deg": _angle(total["inner"], total["actual"], total["expected"]),
        "rel_error": np.sqrt(distance / total["expected"]),
    } | result


def _angle(inner: np.ndarray, square_a: np.ndarray, square_b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        cosine = inner / np.sqrt(square_a * square_b)
    return np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0)))

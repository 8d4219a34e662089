"""Comparisons with exact backprop (updates, relaxed activity) and accuracy of a network."""

from __future__ import annotations

import numpy as np

from arsim import oracle
from arsim.activations import loss_value
from arsim.params import Params
from arsim.spec import ModelSpec, ProtocolSpec


def angle_degrees(a: np.ndarray | list, b: np.ndarray | list) -> float:
    """Angle between two vectors (arrays are flattened and lists concatenated), in degrees.

    NaN where either vector is zero.
    """
    pairs = _pairs(a, b)
    dot = sum(float(np.vdot(x, y)) for x, y in pairs)
    norms = np.sqrt(sum(float(np.vdot(x, x)) for x, _ in pairs)) * np.sqrt(
        sum(float(np.vdot(y, y)) for _, y in pairs)
    )
    if not norms > 0:
        return float("nan")
    return float(np.degrees(np.arccos(np.clip(dot / norms, -1.0, 1.0))))


def relative_error(actual: np.ndarray | list, expected: np.ndarray | list) -> float:
    """``|actual − expected| / |expected|`` with Euclidean norms over all entries.

    NaN where ``expected`` is zero (a network whose units are all silent has no gradient).
    """
    pairs = _pairs(actual, expected)
    difference = sum(float(np.vdot(x - y, x - y)) for x, y in pairs)
    reference = sum(float(np.vdot(y, y)) for _, y in pairs)
    return float(np.sqrt(difference / reference)) if reference > 0 else float("nan")


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


def batch_metrics(
    model: ModelSpec,
    before: Params,
    after: Params,
    inputs: np.ndarray,
    targets: np.ndarray,
    learning_rate: float,
) -> dict[str, float]:
    """Loss of a minibatch and its AR weight change compared with the backprop step.

    Parameters
    ----------
    model : ModelSpec
        The network.
    before, after : Params
        Weights before and after the minibatch's update.
    inputs : ndarray, shape (n, n_in)
        The samples the minibatch's sweep saw.
    targets : ndarray, shape (n, n_out)
        Their targets.
    learning_rate : float
        Weight learning rate η of the minibatch (per update, dimensionless).

    Returns
    -------
    dict of float
        ``loss`` (mean per-sample loss at ``before``); ``angle_deg`` (degrees) between
        ``−ΔW`` (all matrices and biases flattened into one vector) and the backprop gradient;
        ``update_rel_error``, ``|ΔW − (−η ∇L)| / |η ∇L|``; ``angle_deg_W<l>`` per weight
        matrix (NaN for a connection without weights).
    """
    grads = oracle.backprop(model, before, inputs, targets, input_layers=False)
    loss = loss_value(model.loss, grads.forward.xhat[-1], targets, model.loss_scale)
    descent = [b - a for a, b in zip(after.W, before.W, strict=True)]  # −ΔW, matrix by matrix
    descent += [b - a for a, b in zip(after.b, before.b, strict=True) if a is not None]
    gradient = list(grads.W) + [g for g in grads.b if g is not None]
    row = {
        "loss": float(loss.mean()),
        "angle_deg": angle_degrees(descent, gradient),
        # |ΔW − (−η∇L)| = |−ΔW − η∇L|
        "update_rel_error": relative_error(descent, [learning_rate * g for g in gradient]),
    }
    for layer, gradient_w in enumerate(grads.W):
        if not gradient_w.size:  # a maxpool has no weights: no angle
            row[f"angle_deg_W{layer}"] = float("nan")
            continue
        row[f"angle_deg_W{layer}"] = angle_degrees(descent[layer], gradient_w)
    return row


def sample_metrics(
    model: ModelSpec, before: Params, signals: list, inputs: np.ndarray, targets: np.ndarray
) -> dict[str, np.ndarray]:
    """Each sample's AR weight update against the backprop gradient of that sample alone.

    Parameters
    ----------
    model : ModelSpec
        The network.
    before : Params
        Weights before the minibatch (where backprop is evaluated).
    signals : list of (ndarray, ndarray, bool)
        The factors of the updates the network made (its ``batch_signals`` entry).
    inputs : ndarray, shape (n, n_in)
        The samples the sweep saw.
    targets : ndarray, shape (n, n_out)
        Their targets.

    Returns
    -------
    dict of ndarray
        Per-sample arrays of :func:`per_sample_comparison` (angles in degrees).
    """
    grads = oracle.backprop(model, before, inputs, targets)
    fwd = oracle.forward(model, before, inputs)
    factors = oracle.update_factors(model, fwd, grads.activity)
    expected = [
        (delta, presynaptic, has_bias)
        for (delta, presynaptic), (_, _, has_bias) in zip(factors, signals, strict=True)
    ]
    return per_sample_comparison(signals, expected)


def evaluate(
    model: ModelSpec,
    params: Params,
    images: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    block: int = 10000,
    dtype: type = np.float64,
) -> tuple[float, float]:
    """Accuracy and mean loss of the feedforward sweep on ``images`` (vectorised in blocks).

    The sweep computes in ``dtype`` (the weights and each block of images are cast to it).
    """
    correct, total_loss = 0, 0.0
    params = params.astype(dtype)
    with np.errstate(all="ignore"):
        for start in range(0, len(images), block):
            x, y = (
                images[start : start + block].astype(dtype, copy=False),
                labels[start : start + block],
            )
            output = oracle.forward(model, params, x, derivatives=False).xhat[-1]
            targets = np.eye(n_classes, dtype=dtype)[y]
            losses = loss_value(model.loss, output, targets, model.loss_scale)
            total_loss += float(losses.sum(dtype=np.float64))
            correct += int((output.argmax(axis=1) == y).sum())
    return correct / len(images), total_loss / len(images)


def relaxation_errors(
    model: ModelSpec, protocol: ProtocolSpec, params: Params, inputs, targets
) -> dict[str, float]:
    """Relative error of the relaxed activity of every hidden layer against backprop."""
    with np.errstate(all="ignore"):
        relaxed = oracle.relax_as(model, protocol, params, inputs, targets)
        exact = oracle.backprop(model, params, inputs, targets)
        return {
            f"relax_relerr_{layer.name}": relative_error(relaxed.x[index], exact.activity[index])
            for index, layer in enumerate(model.layers)
            if model.relaxes(layer.name)
        }

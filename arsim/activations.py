"""Activation functions and losses: the one place where their mathematics lives.

Each activation is given twice, as a NumPy function for the oracle and as a Brian2 expression
string for the neuron equations; both encode the same formula and are tested against each other
and against finite differences.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Array = np.ndarray


@dataclass(frozen=True)
class Activation:
    """A pointwise activation function f and its derivative f'.

    Attributes
    ----------
    name : str
        Name used in model files.
    f : callable
        NumPy implementation, ``f(a) -> x`` (dimensionless).
    fprime : callable
        NumPy implementation of the derivative, ``fprime(a) -> f'(a)``.
    f_expr : str
        Brian2 expression of ``f`` in terms of the pre-activation ``a``.
    fprime_expr : str
        Brian2 expression of ``f'`` in terms of ``a``.
    """

    name: str
    f: Callable[[Array], Array]
    fprime: Callable[[Array], Array]
    f_expr: str
    fprime_expr: str


def _sigmoid(a: Array) -> Array:
    return 1.0 / (1.0 + np.exp(-a))


SIGMOID_FPRIME_FROM = -40.0
"""Pre-activation below which the Brian2 form of the sigmoid's f' is taken as ``e^a``.

``e^{−a} / (1 + e^{−a})²`` overflows below ``a ≈ −88.7`` in float32 (NaN) and ``−709.8`` in
float64; the Brian2 expression evaluates it at ``max(a, −40)`` and multiplies by
``e^{a − max(a, −40)}`` (exactly 1 above −40, so the values there are those of the plain
formula to the last bit). Below −40 that is ``e^a (1 + e^{−40})^{−2}``, within ``2e−17`` of
the exact ``e^a / (1 + e^a)²``.
"""
_SIGMOID_A = f"clip(a, {SIGMOID_FPRIME_FROM}, inf)"


ACTIVATIONS: dict[str, Activation] = {
    "linear": Activation("linear", lambda a: a, np.ones_like, "a", "1.0"),
    "relu": Activation(
        "relu",
        lambda a: np.maximum(a, 0.0),
        lambda a: (a > 0).astype(a.dtype),
        "a * int(a > 0)",
        "1.0 * int(a > 0)",
    ),
    "tanh": Activation(
        "tanh", np.tanh, lambda a: 1.0 - np.tanh(a) ** 2, "tanh(a)", "1.0 - tanh(a)**2"
    ),
    "sigmoid": Activation(
        "sigmoid",
        _sigmoid,
        lambda a: _sigmoid(a) * (1.0 - _sigmoid(a)),
        "1.0 / (1.0 + exp(-a))",
        f"exp(-{_SIGMOID_A}) / (1.0 + exp(-{_SIGMOID_A}))**2 * exp(a - {_SIGMOID_A})",
    ),
}
"""Activations usable in hidden and output layers, by name."""

SOFTMAX = "softmax"
"""Output-only activation; requires the cross-entropy loss (its f' is folded into the loss)."""

LOSSES = ("mse", "cross-entropy")
"""Loss functions by name. See :func:`loss_value` and :func:`output_gradient`."""


def softmax(a: Array) -> Array:
    """Softmax over the last axis, shifted by the maximum for numerical safety."""
    shifted = np.exp(a - a.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


SOFTMAX_SHIFT_FROM = 50.0
"""Magnitude of a logit above which the Brian2 softmax shifts it (:data:`SOFTMAX_SHIFT_CODE`)."""

SOFTMAX_SHIFT_CODE = f"softmax_shift = a * int(abs(a) > {SOFTMAX_SHIFT_FROM})"
"""Brian2 code storing every output neuron's shift ``s_i``: its logit where that exceeds
:data:`SOFTMAX_SHIFT_FROM` in magnitude, else 0.

Neuron ``i`` computes ``p_i = e^{a_i − s_i} / Σ_j e^{a_j − s_i}`` (:data:`SOFTMAX_EXPR`; the
normaliser is a sum over the neurons, which a ``Synapses`` summed variable can compute, unlike
a maximum). The shift cancels, so ``p_i`` is the softmax for any ``s_i``: with ``s_i = 0`` it is
the plain formula (to the last bit, as before), and with ``s_i = a_i`` the numerator is 1 and
the sum at least 1, so no logit overflows or underflows into ``0/0``; a term that overflows
makes ``p_i`` 0, its limit. A stored variable, so that the shift has the float type of ``a``.
"""

SOFTMAX_EXPR = "exp(a - softmax_shift) / softmax_norm"
"""Brian2 form of the softmax of an output neuron's logit ``a`` (:data:`SOFTMAX_SHIFT_CODE`)."""


def softmax_normaliser(logits: Array) -> tuple[Array, Array]:
    """The shift and normaliser of :data:`SOFTMAX_EXPR` for every neuron, in NumPy.

    Parameters
    ----------
    logits : ndarray, shape (batch, n)
        Pre-activations ``a`` of the output layer (dimensionless).

    Returns
    -------
    shift, norm : ndarray, shape (batch, n) and (batch, n) or (batch, 1)
        ``s_i`` as :data:`SOFTMAX_SHIFT_CODE` stores it and ``Σ_j e^{a_j − s_i}``; where no
        logit of the batch is shifted the normaliser is one column, ``Σ_j e^{a_j}``.
    """
    shift = logits * (np.abs(logits) > SOFTMAX_SHIFT_FROM)
    if not shift.any():
        return shift, np.exp(logits).sum(axis=1, keepdims=True)
    return shift, np.exp(logits[:, None, :] - shift[:, :, None]).sum(axis=2)


def loss_value(loss: str, output: Array, target: Array, scale: float = 1.0) -> Array:
    """Loss of each sample.

    Parameters
    ----------
    loss : {'mse', 'cross-entropy'}
        ``mse``: ``scale * ½ Σ_i (x̂_i − T_i)²``. ``cross-entropy``: ``−scale Σ_i T_i log p_i``
        with ``p`` the softmax output.
    output : ndarray, shape (batch, n_out)
        Feedforward output activity ``x̂_L`` (for cross-entropy, the softmax probabilities).
    target : ndarray, shape (batch, n_out)
        Targets ``T``.
    scale : float
        Multiplies the loss (the paper's authors used ``Σ (x̂ − T)²``, i.e. ``scale = 2``).

    Returns
    -------
    ndarray, shape (batch,)
        Dimensionless loss per sample.
    """
    if loss == "mse":
        return scale * 0.5 * np.sum((output - target) ** 2, axis=-1)
    if loss == "cross-entropy":
        return -scale * np.sum(target * np.log(np.clip(output, 1e-300, None)), axis=-1)
    raise ValueError(f"unknown loss {loss!r}; expected one of {LOSSES}")


def output_gradient(loss: str, output: Array, target: Array, scale: float = 1.0) -> Array:
    """Value the top layer is clamped to: ``scale × (x̂_L − T)`` for both losses.

    For ``mse`` this is ``∂L/∂x̂_L``; for ``cross-entropy`` with a softmax output it is the
    gradient with respect to the logits, so the output layer's f' is taken as 1.
    """
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; expected one of {LOSSES}")
    return scale * (output - target)


OUTPUT_GRADIENT_EXPR = "loss_scale * (xhat - target)"
"""Brian2 form of :func:`output_gradient` (same for both losses)."""


def activate(model, layer: int, a: Array, derivative: bool = True) -> tuple[Array, Array | None]:
    """``(f(a), f'(a))`` of the activation of ``model.layers[layer]`` (softmax: its value, 1).

    Without ``derivative`` f' is not computed (None).
    """
    activation = model.layers[layer].activation
    if activation == SOFTMAX:
        return softmax(a), np.ones_like(a) if derivative else None
    spec = ACTIVATIONS[activation]
    return spec.f(a), spec.fprime(a) if derivative else None

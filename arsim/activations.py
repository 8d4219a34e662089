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
        "exp(-a) / (1.0 + exp(-a))**2",
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

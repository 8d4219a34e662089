"""Leaky forward dynamics, the state carried between samples, and the output's error unit.

With ``[feedforward] kind = "leaky"`` every non-input layer integrates
``τ_f dx̂/dt = −x̂ + f(a)`` (``a = Σ_parents W x̂_parent + b``) by forward Euler at
``η_f = dt/τ_f`` while its forward gate is open, with ``f' = f'(a)`` at the current ``a``;
``reset = false`` carries x̂, f' and x from one sample into the next. With ``error_tau`` the
output is an error unit, ``τ_e dx_L/dt = −x_L + ∂L/∂x̂_L``, instead of a clamp.
"""

from __future__ import annotations

from arsim.components.registry import Asks, Feature, register


def leaky_step(xp, value, target, rate):
    """``value + rate · (−value + target)``: one Euler step of a leaky integrator.

    Parameters
    ----------
    xp : module
        Array namespace (``numpy``).
    value, target : array, shape (batch, n)
        The integrated quantity and what it leaks toward (``f(a)`` for x̂).
    rate : float or array
        ``gain · dt/τ_f`` (dimensionless).
    """
    return value + rate * (-value + target)


def error_unit_step(xp, x, gradient, rate):
    """``x + rate · (∂L/∂x̂ − x)``: one Euler step of the output's error unit at ``dt/τ_e``."""
    return x + rate * (gradient - x)


XHAT_EXPR = "forward_on * (-xhat + f_a) / tau_f"
"""``dx̂/dt`` of a non-input layer under leaky forward dynamics (Brian2 form of
:func:`leaky_step`), before the memory's term."""

ERROR_UNIT_EXPR = "(-x + {gradient}) / tau_e"
"""``dx/dt`` of the output's error unit (Brian2 form of :func:`error_unit_step`)."""


_LEAKY = Asks("feedforward.kind", lambda m, p: p.forward.leaky)
_CARRY = Asks("feedforward.reset", lambda m, p: p.forward.leaky and not p.forward.reset)
_UNIT = Asks("feedforward.error_tau", lambda m, p: p.forward.leaky and p.forward.error_tau > 0)
LEAKY_FORWARD = register(Feature.LEAKY_FORWARD, "integrates the forward pass in time", _LEAKY)
CARRY_OVER = register(
    Feature.CARRY_OVER,
    "carries the state over between samples (a minibatch's replicas side by side)",
    _CARRY,
    otherwise="reset = true",
)
ERROR_UNIT = register(Feature.ERROR_UNIT, "integrates the output's error unit", _UNIT)

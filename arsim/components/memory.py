"""The memory of a hidden layer's x̂ and f' while its forward pass is not running.

``[memory] kind``: ``"ideal"`` holds them; ``"trace"`` lets both decay, ``τ_m dx̂/dt = −x̂``
and ``τ_m df'/dt = −f'`` (eligibility traces); ``"two-compartment"`` lets the soma's x̂ leak
toward the apical compartment's x, ``τ_m dx̂/dt = x − x̂``.
"""

from __future__ import annotations

from arsim.components.registry import Asks, Feature, register

HOLDS = {
    "ideal": ("xhat : 1", "fp : 1"),
    "trace": ("dxhat/dt = -xhat / memory_tau : 1", "dfp/dt = -fp / memory_tau : 1"),
    "two-compartment": ("dxhat/dt = (x - xhat) / memory_tau : 1", "fp : 1"),
}
"""Brian2 equations of x̂ and f' of a hidden layer under each memory kind (no forward pass)."""

WHILE_FORWARD_OFF = {
    "ideal": "",
    "trace": " - (1 - forward_on) * xhat / memory_tau",
    "two-compartment": " + (1 - forward_on) * (x - xhat) / memory_tau",
}
"""The memory's term in ``dx̂/dt`` of leaky forward dynamics (acting while the forward gate is
closed, ``forward_on`` 0)."""

FP_WHILE_FORWARD_OFF = {"trace": "dfp/dt = -(1 - forward_on) * fp / memory_tau : 1"}
"""f' of a hidden layer with leaky forward dynamics where the memory changes it."""


def hold(xp, kind: str, xhat, fp, x, rate: float):
    """x̂ and f' after one step of ``dt`` with the forward gate closed.

    Parameters
    ----------
    xp : module
        Array namespace (``numpy``).
    kind : {'ideal', 'trace', 'two-compartment'}
        The memory.
    xhat, fp, x : array, shape (batch, n)
        Stored x̂ and f' and the relaxing x at the step's start.
    rate : float
        ``dt/τ_m`` (dimensionless).

    Returns
    -------
    (array, array)
        x̂ and f' at the step's end (the same arrays where they hold).
    """
    if kind == "trace":
        return xhat * (1.0 - rate), fp * (1.0 - rate)
    if kind == "two-compartment":
        return xhat + rate * (x - xhat), fp
    return xhat, fp


_KIND = Asks("memory.kind", lambda m, p: m.memory.kind != "ideal", of="model")
MEMORY = register(Feature.MEMORY, "lets x̂ and f' decay", _KIND, module=__name__)

"""The leaky relaxation of the hidden layers, its noise and its stop at convergence.

``τ dx/dt = −x + fb`` with ``fb`` the summed top-down input, integrated by forward Euler at
``η_x = dt/τ`` while the layer's relaxation gain is open; with ``noise`` σ the Euler–Maruyama
step adds ``σ √η_x N(0, 1)``; with a ``tolerance`` a sample stops relaxing once every hidden
neuron has ``|−x + fb| < tolerance``.
"""

from __future__ import annotations

from arsim.components.registry import Asks, Feature, register

DRIVE_EXPR = "-x + fb"
"""The right-hand side of ``τ dx/dt`` (Brian2 form of :func:`drive`)."""


def drive(xp, x, top_down):
    """``−x + fb``: the right-hand side of ``τ dx/dt`` (``xp``: the array namespace).

    Parameters
    ----------
    xp : module
        Array namespace (``numpy``).
    x, top_down : array, shape (batch, n)
        Relaxing activity and summed top-down input (dimensionless).
    """
    return -x + top_down


def euler_step(xp, x, rate, drive_value):
    """``x + rate · drive``: a forward-Euler step at ``rate = gain · dt/τ`` (dimensionless)."""
    return x + rate * drive_value


def x_equations(noise: bool, stoppable: bool, drive: str = DRIVE_EXPR) -> list[str]:
    """Brian2 equations of a hidden layer's relaxing ``x`` (``relaxing`` is its gain).

    With ``stoppable`` the gain is multiplied by ``active`` (0 once the sample converged);
    with ``noise`` the state updater is Euler–Maruyama with amplitude ``noise_sigma``;
    ``drive`` is the right-hand side (:data:`DRIVE_EXPR`, with a layer's own drive added).
    """
    lines = ["tau : second (shared, constant)"]
    if stoppable:  # relaxation until converged: active is 0 once the sample converged
        lines += ["active : 1", "relaxing_now = relaxing * active : 1"]
    else:
        lines.append("relaxing_now = relaxing : 1")
    if noise:  # Euler–Maruyama: x += η(−x + fb) + σ √η N(0, 1)
        lines.append(f"dx/dt = relaxing_now * (({drive}) / tau + noise_sigma * xi * tau**-0.5) : 1")
    else:
        lines.append(f"dx/dt = relaxing_now * ({drive}) / tau : 1")
    return lines


UNCONVERGED_EXPR = f"1 - int(abs({DRIVE_EXPR}) < tolerance)"
"""Brian2 form of the ``tolerance`` check of one neuron: 1 unless ``|−x + fb| < tolerance``
(a non-finite drive has not converged)."""


def convergence_equations(layers) -> str:
    """Brian2 model of the one neuron that decides when a sample has converged.

    ``unconverged_<k>`` is the count of hidden layer ``k``'s neurons with
    :data:`UNCONVERGED_EXPR` (a summed variable); ``active`` is 1 while the sample relaxes and
    ``stop`` 1 at the step at which it stops; ``first_step`` and ``in_span`` say whether a step
    is the relaxation span's first, and in it. ``layers`` are the indices ``k``.
    """
    counts = [f"unconverged_{k}" for k in layers]
    lines = [f"{name} : 1" for name in counts]
    lines += [f"unconverged = {' + '.join(counts)} : 1", "active : 1", "stop : 1"]
    step = "t_in_timesteps % steps_per_sample"
    lines.append(f"first_step = int({step} == relax_start) : 1")
    lines.append(f"in_span = int({step} >= relax_start) * int({step} < relax_stop) : 1")
    return "\n".join(lines)


CONVERGENCE_CODE = """active = first_step + (1 - first_step) * active
stop = in_span * active * int(unconverged < 0.5)
active = active * (1 - stop)"""
"""Brian2 code of the convergence neuron at the start of every step, once the counts are in.

Within the relaxation span (steps ``[relax_start, relax_stop)`` of the period), the sample is
active again at the span's first step and stops (``stop`` 1, ``active`` 0) at the first step at
which no hidden neuron is unconverged."""


RELAXATION = register(Feature.RELAXATION, "relaxes the hidden layers", module=__name__)
NOISE = register(Feature.NOISE, "draws noise", Asks("noise", lambda m, p: p.noise > 0))
TOLERANCE = register(
    Feature.TOLERANCE,
    "relaxes until converged",
    Asks("phases.tolerance", lambda m, p: p.tolerance > 0),
)
_TOP_DOWN = Asks("relaxation.order", lambda m, p: p.relaxation_order != "parallel")
TOP_DOWN_ORDER = register(
    Feature.TOP_DOWN_ORDER,
    "updates the layers from the top down within a step",
    _TOP_DOWN,
    otherwise="order = 'parallel'",
)
_INPUT = Asks("relaxation.input", lambda m, p: p.relaxation_input != "clamped")
INPUT_RELAXES = register(
    Feature.INPUT_RELAXES, "relaxes the input layers", _INPUT, otherwise="input = 'clamped'"
)

"""The connections' maps (dense, conv, maxpool: :mod:`arsim.operators`) and feedback delays.

With ``[feedback_delay]`` a layer receives, during the relaxation, the top-down signal of a
connection as it was that many steps earlier (:func:`delayed`).
"""

from __future__ import annotations

from arsim.components.registry import Asks, Feature, register


def delayed(xp, buffer, signal, step: int):
    """The signal of ``len(buffer) − 1`` steps ago, through a ring buffer (written in place).

    Step ``n`` of the relaxation writes slot ``n mod (d+1)`` and reads slot
    ``(n + 1) mod (d+1)``, written at step ``n − d``; at the first step every slot is filled
    with the current signal, so the first ``d`` steps read the first signal.
    """
    slots = len(buffer)
    if step == 0:
        buffer[:] = signal
    else:
        buffer[step % slots] = signal
    return buffer[(step + 1) % slots]


def _operation(kind: str):
    def where(model, protocol) -> list[str]:
        connections = model.connections if model is not None else ()
        found = next((c for c in connections if c.operation == kind), None)
        return (
            []
            if found is None
            else [f"{model.source}: connection {found.source} -> {found.target}"]
        )

    return where


_DELAY = Asks("feedback_delay", lambda m, p: any(delay > 0 for _, delay in p.feedback_delay))
FEEDBACK_DELAY = register(Feature.FEEDBACK_DELAY, "delays the top-down signal", _DELAY)
CONV = register(
    Feature.CONV,
    "runs conv connections",
    Asks("operation", lambda c: c.operation == "conv", of="connection"),
    module="arsim.operators",
)
MAXPOOL = register(
    Feature.MAXPOOL,
    "runs maxpool connections",
    Asks("operation", lambda c: c.operation == "maxpool", of="connection"),
    module="arsim.operators",
)

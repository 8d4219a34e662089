"""Neuron terms a model declares itself: extra state variables and a drive of the relaxation.

A hidden layer of a model file may carry ``equations`` (extra state variables in Brian2's
syntax, integrated by forward Euler at every step like the layer's own) and ``drive`` (a term
added to the right-hand side of its relaxation, ``τ dx/dt = −x + fb + drive``). They run in
every backend that runs Brian2 neuron equations; the period oracle does not state them. A
model file with equations is code: run only files you trust.
"""

from __future__ import annotations

from brian2 import Equations

from arsim.components.registry import Asks, Feature, register
from arsim.components.relaxation import DRIVE_EXPR


def drive_expression(drive: str) -> str:
    """The right-hand side of ``τ dx/dt`` in Brian2 form, with a layer's own drive.

    :data:`~arsim.components.relaxation.DRIVE_EXPR`, plus ``(drive)`` where there is one (the
    terms are checked by :func:`arsim.spec.terms.parse`).
    """
    return f"{DRIVE_EXPR} + ({drive})" if drive else DRIVE_EXPR


def presentation_code(equations: str, carry_over: bool) -> list[str]:
    """Statements that start a layer's own state variables from 0 at every presentation.

    A sample starts from rest in them as in x (one replica per sample or samples in turn give
    the same numbers); with ``carry_over`` (``[feedforward] reset = false``) they carry on.
    """
    if not equations or carry_over:
        return []
    return [f"{name} = 0" for name in sorted(Equations(equations).diff_eq_names)]


_DECLARED = Asks(
    "layers[].equations",
    lambda m, p: any(layer.equations or layer.drive for layer in m.layers),
    of="model",
)
NEURON_TERMS = register(Feature.NEURON_TERMS, "runs a layer's own equations", _DECLARED)

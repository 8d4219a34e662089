"""A hidden layer's own neuron terms (``equations``, ``drive``), checked by Brian2's parser.

The terms are built by :mod:`arsim.components.neuron_terms`; a model file with equations is
code: run only files you trust.
"""

from __future__ import annotations

from brian2 import Equations
from brian2.utils.stringtools import get_identifiers

LAYER_VARIABLES = frozenset(
    {"x", "xhat", "fp", "delta", "fb", "a", "b", "db", "t_bad", "tau", "relaxing"}
    | {"relaxing_now", "active", "chunk_start", "apply_at", "eta_bias", "target"}
)
"""Names of a layer's own variables: a user equation may read them but not declare them."""


def parse(equations: str, drive: str) -> Equations:
    """The user ``equations`` as ``brian2.Equations``, checked with ``drive``.

    Raises ValueError (one line) where Brian2's parser refuses either, where an equation
    declares one of :data:`LAYER_VARIABLES`, or where the drive is not dimensionless.
    """
    try:
        parsed = Equations(equations)
    except Exception as error:  # Brian2 raises several kinds; the message is what matters
        raise ValueError(f"Brian2 cannot parse the equations: {_first_line(error)}") from None
    clash = sorted(set(parsed.names) & LAYER_VARIABLES)
    if clash:
        raise ValueError(f"declares the layer's own variable(s) {clash}; choose other names")
    if drive:
        try:
            Equations(f"user_drive = {drive} : 1")
        except Exception as error:  # as above
            raise ValueError(f"Brian2 cannot parse the drive: {_first_line(error)}") from None
        if "user_drive" in get_identifiers(drive):
            raise ValueError("the drive may not name user_drive")
    return parsed


def declared_names(equations: str) -> list[str]:
    """The variables ``equations`` declares (state variables, subexpressions, parameters).

    ``equations`` has passed :func:`parse`; empty: none.
    """
    return sorted(Equations(equations).names) if equations else []


def _first_line(error: Exception) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]

"""Where the f' that multiplies a connection's top-down signal is taken.

``derivative_at = "stored"``: f' at the feedforward pre-activation, stored with x̂ (the
paper's AR); ``"current"``: at the pre-activation computed from the parents' current relaxing
activities; ``"upper"``: of the upper layer's own current activity, ``f'(x_{l+1})``. A
connection with ``derivative = false`` drops f' from its signal.
"""

from __future__ import annotations

from brian2 import Equations

from arsim.activations import ACTIVATIONS, SOFTMAX, activate
from arsim.components.registry import Asks, Feature, register
from arsim.operators import pre_activation


def fprime(xp, where: str, model, ops, params, target: int, activities, stored):
    """F' of layer ``target`` for its connections' top-down signal ``x ⊙ f'``.

    Parameters
    ----------
    xp : module
        Array namespace (``numpy``).
    where : {'stored', 'current', 'upper'}
        The connection's ``derivative_at``.
    model : ModelSpec
        The network.
    ops : list of arsim.operators.Operator
        The connections' linear maps.
    params : Params
        Weights (read for ``"current"``).
    target : int
        The layer whose f' it is.
    activities : list of array, shape (batch, n)
        Every layer's current activity (an input layer's: its stimulus).
    stored : array
        The target's stored f'.
    """
    if where == "current":
        a = pre_activation(model, ops, params, target, activities)
        return activate(model, target, a)[1]
    if where == "upper":
        return activate(model, target, activities[target])[1]
    return stored


RELAXATION_SIGNAL = {"stored": "delta", "current": "delta_current", "upper": "delta_upper"}
"""Brian2 name of a layer's ``x ⊙ f'`` with f' taken where a connection's ``derivative_at``
says, as its top-down signal reads it (``delta``: the stored f')."""
UPDATE_SIGNAL = {"stored": "delta", "current": "delta_current_end", "upper": "delta_upper"}
"""Brian2 name of a layer's ``x ⊙ f'`` as a weight update reads it (``update_derivative_at``);
``"current"`` from the pre-activation summed at the plasticity (``a_end``), not at the step's
start (``a_now``)."""
PRE_ACTIVATION = {"current": "a_now", "current_end": "a_end"}
"""Brian2 names of the pre-activation from the parents' current activities: summed at the start
of every step (``a_now``, for the top-down signal) and at the plasticity (``a_end``)."""


def fprime_expression(activation: str, at: str) -> str:
    """Brian2 expression of f' of ``activation`` at the pre-activation named ``at``.

    The activation's own f' (:data:`arsim.activations.ACTIVATIONS`, written in ``a``) with
    ``a`` renamed by ``brian2.Equations`` (a softmax output's f' is 1, folded into its loss).
    """
    if activation == SOFTMAX:
        return "1.0"
    written = Equations(f"fprime = {ACTIVATIONS[activation].fprime_expr} : 1", a=at)
    return str(written["fprime"].expr)


def signal_equations(activation: str, incoming, relaxation: set, update: set):
    """Brian2 equations of a layer's ``x ⊙ f'`` with f' away from the stored pre-activation.

    Parameters
    ----------
    activation : str
        The layer's activation.
    incoming : sequence of int
        Indices ``k`` of the connections into the layer: a pre-activation from the current
        activities is ``b + Σ_k a_now_c<k>``, each term a summed variable of connection ``k``.
    relaxation, update : set of str
        The ``derivative_at`` its connections' top-down signals and the
        ``update_derivative_at`` their weight updates ask of the layer.

    Returns
    -------
    brian2.Equations
        ``delta_upper = x · f'(x)``, ``delta_current = x · f'(a_now)`` and
        ``delta_current_end = x · f'(a_end)`` (those asked for), and the pre-activations.
    """
    lines = []
    if "upper" in relaxation | update:
        lines.append(f"delta_upper = x * ({fprime_expression(activation, 'x')}) : 1")
    kinds = [("current", "delta_current")] * ("current" in relaxation)
    kinds += [("current_end", "delta_current_end")] * ("current" in update)
    for kind, name in kinds:
        a = PRE_ACTIVATION[kind]
        lines += [f"{a}_c{k} : 1" for k in incoming]
        lines.append(f"{a} = b + {' + '.join(f'{a}_c{k}' for k in incoming)} : 1")
        lines.append(f"{name} = x * ({fprime_expression(activation, a)}) : 1")
    return Equations("\n".join(lines))


_AT = Asks("derivative_at", lambda c: c.derivative_at != "stored", of="connection")
DERIVATIVE_AT = register(
    Feature.DERIVATIVE_AT, "evaluates f' away from the stored pre-activation", _AT
)
_UPDATE_AT = Asks(
    "update_derivative_at", lambda c: c.update_derivative_at != "stored", of="connection"
)
UPDATE_DERIVATIVE_AT = register(
    Feature.UPDATE_DERIVATIVE_AT,
    "evaluates the weight update's f' away from the stored pre-activation",
    _UPDATE_AT,
)

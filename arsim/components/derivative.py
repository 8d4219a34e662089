"""Where the f' that multiplies a connection's top-down signal is taken.

``derivative_at = "stored"``: f' at the feedforward pre-activation, stored with x̂ (the
paper's AR); ``"current"``: at the pre-activation computed from the parents' current relaxing
activities; ``"upper"``: of the upper layer's own current activity, ``f'(x_{l+1})``. A
connection with ``derivative = false`` drops f' from its signal.
"""

from __future__ import annotations

from arsim.activations import activate
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

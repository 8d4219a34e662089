"""The plasticity rule of W, ψ and the biases, and when it acts.

``W −= η Σ_batch δ pᵀ`` with ``δ = x_target ⊙ f'_target`` and ``p`` the source's stored x̂
(``update_uses = "stored"``) or its current activity (``"current"``); a learned ψ takes the same
change transposed, a bias ``−η Σ δ``. It acts once per minibatch at the plasticity step (the
sample period's end, or an oscillation's plasticity phase), or, with ``[plasticity]
continuous``, by ``η/K`` at the end of every step of a window of ``K`` steps.
"""

from __future__ import annotations

from arsim import operators
from arsim.components.registry import Asks, Feature, register
from arsim.spec.schedule import Schedule


def presynaptic(uses: str, x, xhat):
    """The presynaptic factor ``p``: ``x̂`` (``"stored"``) or the current activity ``x``.

    An input layer's x is its stimulus, so both are the same there.
    """
    return x if uses == "current" else xhat


def apply_rule(xp, op, weights, feedback, bias, delta, pre, rate, feedback_rate, scratch=None):
    """Apply the rule to one connection in place; returns its factor ``Σ_batch δ pᵀ``.

    Parameters
    ----------
    xp : module
        Array namespace (``numpy``).
    op : arsim.operators.Operator
        The connection's linear map (:meth:`~arsim.operators.Operator.weight_gradient`).
    weights : array
        ``W``, changed in place by ``−rate · Σ δ pᵀ``.
    feedback : array or None
        A learned ψ, changed in place by ``−feedback_rate`` times the transposed factor.
    bias : array or None
        The bias, changed in place by ``−rate · Σ δ``.
    delta, pre : array, shape (batch, n_target) and (batch, n_source)
        ``δ = x ⊙ f'`` of the target and the presynaptic factor (:func:`presynaptic`).
    rate, feedback_rate : float
        Learning rates for this application (a fraction of the minibatch's for continuous
        plasticity), as the arrays' float type.
    scratch : array, optional
        An array of W's shape and float type: a dense connection without a learned ψ then
        computes ``Σ δ pᵀ`` and its product with ``rate`` in it (no new arrays, the same
        numbers) and returns None.
    """
    if scratch is not None and feedback is None and op.kind == "dense":
        xp.matmul(delta.T, pre, out=scratch)
        xp.multiply(scratch, rate, out=scratch)
        xp.subtract(weights, scratch, out=weights)
        if bias is not None:
            bias -= rate * op.bias_gradient(delta)
        return None
    change = op.weight_gradient(delta, pre)
    weights -= rate * change
    if feedback is not None:
        feedback -= feedback_rate * operators.as_feedback(change)
    if bias is not None:
        bias -= rate * op.bias_gradient(delta)
    return change


FORWARD_LEARN = "dw += {delta}_post * {pre}_pre\nw -= {apply} * eta * dw\ndw = dw * (1 - {apply})"
"""Brian2 form of the rule on a forward synapse, accumulated per sample, applied when
``apply`` (1 at the minibatch's end); ``delta`` names the target's ``x ⊙ f'`` and ``pre`` the
source's presynaptic factor (:func:`presynaptic_variable`)."""
FEEDBACK_LEARN = (
    "dpsi += {pre}_post * {delta}_pre\npsi -= {apply} * eta * dpsi\ndpsi = dpsi * (1 - {apply})"
)
"""Brian2 form of the rule on a learned feedback synapse (ψ: pre is the upper layer)."""


def presynaptic_variable(uses: str, source_relaxes: bool) -> str:
    """Brian2 name of the presynaptic factor (:func:`presynaptic`): ``xhat``, or ``x``.

    A source that does not relax (an input layer) has only its stimulus, ``xhat``.
    """
    return "x" if uses == "current" and source_relaxes else "xhat"


BIAS_LEARN = "db += {delta}\nb -= {apply} * eta_bias * db\ndb = db * (1 - {apply})"
"""Brian2 form of the rule on a layer's bias (``delta``: its ``x ⊙ f'`` as the update reads it)."""


def _early(model, protocol) -> bool:
    schedule = Schedule(model, protocol)
    return schedule.plasticity_step != schedule.sample_steps


PLASTICITY = register(Feature.PLASTICITY, "learns")
EARLY_PLASTICITY = register(
    Feature.EARLY_PLASTICITY,
    "changes the weights before the cycle's end",
    Asks("oscillation.plasticity", _early),
    otherwise="plasticity = '360 deg'",
)
_CONTINUOUS = Asks("plasticity.continuous", lambda m, p: p.plasticity.continuous)
CONTINUOUS_PLASTICITY = register(
    Feature.CONTINUOUS_PLASTICITY, "changes the weights at every relaxation step", _CONTINUOUS
)
_USES = Asks("update_uses", lambda c: c.update_uses != "stored", of="connection")
UPDATE_USES = register(Feature.UPDATE_USES, "updates weights from the current activity", _USES)

"""Builders of the synapses mode for the components beyond its core, from their Brian2 forms.

- f' away from the stored pre-activation (``derivative_at``, ``update_derivative_at``): the
  layer's ``x ⊙ f'`` variants of :func:`arsim.components.derivative.signal_equations`, the
  pre-activations from the current activities as summed variables of the forward synapses
  (:func:`schedule_pre_activations`);
- relaxation until converged (``[phases] tolerance``): one neuron counts the hidden neurons
  that are not converged (:data:`arsim.components.relaxation.UNCONVERGED_EXPR`, summed over
  synapses from every hidden layer), decides (:data:`~arsim.components.relaxation.CONVERGENCE_CODE`)
  and sends ``active`` back (:func:`convergence_watch`).

``update_uses`` is in the synapse models (:func:`arsim.equations.synapse_model`); single
precision and the jittered phase boundary need no object of their own.
"""

from __future__ import annotations

import brian2 as b2

from arsim.components import derivative, relaxation
from arsim.equations import LEARN_ORDER

NOW_ORDER = -1
"""Order, in the 'before_groups' slot, of the sums ``a_now``: before the top-down input (0)."""
CONVERGENCE_ORDERS = {"count": 1, "decide": 2, "send": 3}
"""Orders, in the 'before_groups' slot, of the convergence check: after the top-down input."""


def layer_signals(model) -> dict[int, tuple[set[str], set[str]]]:
    """Where each layer's f' is asked away from its stored value.

    Returns ``{layer index: (derivative_at of its connections' top-down signals,
    update_derivative_at of their updates)}``, "stored" left out; layers asked nothing are
    absent.
    """
    signals: dict[int, tuple[set[str], set[str]]] = {}
    for connection in model.connections:
        relax, update = signals.setdefault(model.index(connection.target), (set(), set()))
        if connection.derivative and connection.derivative_at != "stored":
            relax.add(connection.derivative_at)
        if connection.update_derivative_at != "stored":
            update.add(connection.update_derivative_at)
    return {k: sides for k, sides in signals.items() if sides[0] | sides[1]}


def extra_layer_equations(model, role) -> b2.Equations:
    """The ``x ⊙ f'`` variants layer ``role`` is asked for (:func:`layer_signals`)."""
    relax, update = layer_signals(model).get(role.index, (set(), set()))
    if not relax | update:
        return b2.Equations("")
    return derivative.signal_equations(role.spec.activation, role.incoming, relax, update)


def bias_signal(model, role) -> str:
    """Brian2 name of the ``x ⊙ f'`` a layer's bias learns from.

    That of the ``update_derivative_at`` of the first biased connection into it (the bias
    the pre-activation adds, :func:`arsim.operators.pre_activation`).
    """
    biased = next(c for c in role.incoming if model.connections[c].bias)
    return derivative.UPDATE_SIGNAL[model.connections[biased].update_derivative_at]


def pre_activation_sums(model, target: int) -> tuple[str, ...]:
    """The pre-activations from the current activities layer ``target`` needs.

    ``a_now`` and ``a_end``: each a sum every connection into the layer adds a term to.
    """
    relax, update = layer_signals(model).get(target, (set(), set()))
    wanted = [("current", "current" in relax), ("current_end", "current" in update)]
    return tuple(derivative.PRE_ACTIVATION[kind] for kind, asked in wanted if asked)


def schedule_pre_activations(synapses, index: int, sums, step_clock, sample_clock) -> None:
    """Time the summed pre-activation terms of connection ``index``'s forward ``synapses``.

    ``a_now`` at the start of every step, before the top-down input reads it (and after a
    presentation or onset changed an activity); ``a_end`` at the sample tick, before the
    plasticity (:data:`~arsim.equations.LEARN_ORDER`) reads the activities the period ended
    with.
    """
    for name in sums:
        updater = synapses.summed_updaters[f"{name}_c{index}_post"]
        # Brian2 gives a summed-variable updater its target's clock and no public way to
        # choose another: its private ``_clock`` is the only handle
        if name == derivative.PRE_ACTIVATION["current"]:
            updater._clock, updater.when, updater.order = step_clock, "before_groups", NOW_ORDER
        else:
            updater._clock, updater.when, updater.order = sample_clock, "start", LEARN_ORDER - 1


def convergence_watch(network) -> tuple[list, b2.SpikeMonitor]:
    """The objects of the relaxation until converged, and the monitor of the stops.

    ``network`` is the :class:`~arsim.synapses.SynapsesNetwork` being built (its groups
    made). The convergence neuron "spikes" at the step at which a sample stops (the step's
    start time).
    """
    network.namespace["tolerance"] = network.protocol.tolerance
    hidden = [role for role in network.roles if role.relaxes]
    common = {"namespace": network.namespace, "dtype": network.dtype}
    watch = b2.NeuronGroup(
        1,
        relaxation.convergence_equations([role.index for role in hidden]),
        threshold="stop > 0.5",
        clock=network.step_clock,
        name="convergence",
        **common,
    )
    watch.active = 1
    orders = CONVERGENCE_ORDERS
    watch.run_regularly(
        relaxation.CONVERGENCE_CODE, when="before_groups", order=orders["decide"], name="decide"
    )
    per_synapse = b2.Equations(f"u = {relaxation.UNCONVERGED_EXPR} : 1", x="x_pre", fb="fb_pre")
    objects = [watch]
    for role in hidden:
        group = network.groups[role.index]
        counted = f"unconverged_{role.index}"
        count = b2.Synapses(
            group,
            watch,
            f"{counted}_post = {per_synapse['u'].expr} : 1 (summed)",
            name=f"count_{group.name}",
            **common,
        )
        count.connect()
        count.summed_updaters[f"{counted}_post"].when = "before_groups"
        count.summed_updaters[f"{counted}_post"].order = orders["count"]
        sent = "active_post = active_pre : 1 (summed)"
        send = b2.Synapses(watch, group, sent, name=f"send_{group.name}", **common)
        send.connect()
        send.summed_updaters["active_post"].when = "before_groups"
        send.summed_updaters["active_post"].order = orders["send"]
        objects += [count, send]
    stops = b2.SpikeMonitor(watch, name="convergence_stops")
    return [*objects, stops], stops

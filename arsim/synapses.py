"""The ``synapses`` execution mode: W and ψ as Brian2 ``Synapses`` with per-synapse plasticity.

Every connection is all-to-all ``Synapses`` whose models come from
:func:`arsim.equations.synapse_model`: the sweep and the top-down input are summed variables,
the plasticity runs once per sample. Samples are presented one after another, one replica.
"""

from __future__ import annotations

import brian2 as b2
import numpy as np

from arsim import synapse_components as built
from arsim.activations import SOFTMAX, SOFTMAX_SHIFT_CODE
from arsim.components import CORE, Feature
from arsim.equations import LEARN_ORDER, layer_slot, synapse_model
from arsim.network import ARNetwork
from arsim.params import Params
from arsim.spec import ConnectionSpec


def _sum_before_the_step(synapses: b2.Synapses) -> None:
    """Sum the top-down input at the start of a step, from the δ the previous step left.

    That is what the parallel Euler scheme needs, and it keeps the sample tick's sweep (which
    clamps a new output) from reaching the input of a step whose update is gated off.
    """
    for updater in synapses.summed_updaters.values():
        updater.when, updater.order = "before_groups", 0


def all_to_all(n_pre: int, n_post: int, major: str) -> tuple[np.ndarray, np.ndarray]:
    """Pre and post indices of all-to-all synapses, ``major`` = 'pre' or 'post' varying slowest.

    A summed variable loops over the synapses in this order; it is fastest when consecutive
    synapses write different target neurons (no read-modify-write chain on one neuron), so the
    order is chosen against the side that is summed into.
    """
    if major == "post":
        return np.tile(np.arange(n_pre), n_post), np.repeat(np.arange(n_post), n_pre)
    return np.repeat(np.arange(n_pre), n_post), np.tile(np.arange(n_post), n_pre)


class SynapsesNetwork(ARNetwork):
    """The neuromorphic reference: W and ψ are Brian2 ``Synapses`` with per-synapse plasticity.

    Samples are presented one after another; a chunk is one minibatch.

    Attributes
    ----------
    forward_synapses, feedback_synapses : list
        One ``Synapses`` per connection (``feedback_synapses[c]`` is None for a transposed ψ).
    """

    mode = "synapses"
    builds = CORE | {
        Feature.NOISE,
        Feature.LEAKY_FORWARD,
        Feature.ERROR_UNIT,
        Feature.MEMORY,
        Feature.GATING,
        Feature.NEURON_TERMS,
        Feature.DERIVATIVE_AT,
        Feature.UPDATE_DERIVATIVE_AT,
        Feature.UPDATE_USES,
        Feature.SINGLE_PRECISION,
        Feature.TOLERANCE,
        Feature.PHASE_JITTER,
    }
    _stops = None  # the monitor of the relaxation's stops ([phases] tolerance)
    _stops_reported = 0  # its stops already handed out in a ChunkResult

    @property
    def ticks_per_minibatch(self) -> int:
        """A minibatch's samples: they are presented one after another."""
        return self.protocol.batch_size

    def _minibatches_done(self) -> int:
        return self.ticks_done // self.protocol.batch_size

    def _layer_extras(self, role):
        """The layer's ``x ⊙ f'`` away from the stored f' (:mod:`arsim.synapse_components`)."""
        return built.extra_layer_equations(self.model, role)

    def _bias_signal(self, role) -> str:
        """The ``x ⊙ f'`` of the update variant of the layer's biased connection."""
        return built.bias_signal(self.model, role)

    def _converged_since(self, first: int) -> dict[int, int]:
        """Sample → steps it relaxed, for the tolerance stops from the ``first``-th on.

        The monitor keeps every stop of ``protocol.tolerance`` since the network started.
        """
        times = np.asarray(self._stops.t[first:]) / float(self.dt)
        steps = np.rint(times).astype(int)
        start, period = self._relaxation_span()[0], self.steps_per_sample
        return {int(step // period): int(step % period - start) for step in steps}

    def _stimulus_rows(self) -> int:
        return self.protocol.batch_size + 1

    def _make_connections(self) -> list:
        self.forward_synapses, self.feedback_synapses = [], []
        for index, connection in enumerate(self.model.connections):
            self._make_synapses(index, connection)
        objects = [*self.forward_synapses, *(s for s in self.feedback_synapses if s is not None)]
        if self.model.output.activation == SOFTMAX:
            objects.append(self._make_softmax_norm())
        if self.protocol.tolerance > 0:
            watch, self._stops = built.convergence_watch(self)
            objects += watch
        return objects

    def _make_synapses(self, index: int, connection: ConnectionSpec) -> None:
        source_index, target_index = (
            self._group_index(connection.source),
            self._group_index(connection.target),
        )
        source, target = self.groups[source_index], self.groups[target_index]
        sums = built.pre_activation_sums(self.model, target_index)
        models = synapse_model(connection, index, self.roles[source_index].relaxes, sums)
        name = f"W_{connection.source}_{connection.target}"
        # the top-down input is summed into the pre layer: post-major order (see all_to_all)
        forward = self._all_to_all(source, target, models["forward"], name, major="post")
        built.schedule_pre_activations(forward, index, sums, self.step_clock, self.sample_clock)
        # the sweep (a summed variable: no two threads write one target) once per sample,
        # before the target layer computes x̂ (order layer_slot + 3); with leaky forward
        # dynamics at every step, from the x̂ of the step's start
        sweep = forward.summed_updaters[f"a_c{index}_post"]
        # Brian2 gives a summed-variable updater its target's clock and no public way to
        # choose another: its private ``_clock`` is the only handle
        if self.schedule.leaky_forward:
            sweep._clock, sweep.when, sweep.order = self.step_clock, "before_groups", 0
        else:
            sweep._clock = self.sample_clock
            sweep.when, sweep.order = "groups", layer_slot(target_index)
        self._learn(forward, models["forward_learn"])
        self.forward_synapses.append(forward)
        if "feedback" not in models:
            self.feedback_synapses.append(None)
            return
        name = f"psi_{connection.target}_{connection.source}"
        # ψ sums into its post (lower) layer: pre-major order
        feedback = self._all_to_all(target, source, models["feedback"], name, major="pre")
        if "feedback_learn" in models:
            self._learn(feedback, models["feedback_learn"])
        self.feedback_synapses.append(feedback)

    def _all_to_all(self, pre, post, equations: str, name: str, major: str) -> b2.Synapses:
        """All-to-all ``Synapses`` from ``pre`` to ``post`` in ``major`` order (:func:`all_to_all`).

        Their summed variables are summed before the step (:func:`_sum_before_the_step`).
        """
        synapses = b2.Synapses(
            pre, post, equations, namespace=self.namespace, name=name, dtype=self.dtype
        )
        i, j = all_to_all(pre.N, post.N, major=major)
        synapses.connect(i=i, j=j)
        _sum_before_the_step(synapses)
        return synapses

    def _learn(self, synapses: b2.Synapses, code: str) -> None:
        """Run the plasticity ``code`` of ``synapses`` once per sample, first at the tick."""
        synapses.run_regularly(
            code,
            when="start",
            order=LEARN_ORDER,
            name=f"{synapses.name}_learn",
            clock=self.sample_clock,
        )

    def _make_softmax_norm(self) -> b2.Synapses:
        """The output's softmax normaliser ``Σ_j e^{a_j − s_i}``, after its shifts ``s_i``.

        The shifts (:data:`~arsim.activations.SOFTMAX_SHIFT_CODE`) are stored after the sweep
        into the output and before the normaliser sums (each sweep's order plus one and two).
        """
        output = self.groups[-1]
        norm = b2.Synapses(
            output,
            output,
            "softmax_norm_post = exp(a_pre - softmax_shift_post) : 1 (summed)",
            namespace=self.namespace,
            name="softmax_norm",
            dtype=self.dtype,
        )
        norm.connect()
        updater = norm.summed_updaters["softmax_norm_post"]
        if self.schedule.leaky_forward:  # after the step's sweep, before the state updaters
            clock, when, order = self.step_clock, "before_groups", 1
            # the updater's clock has no public setter (see _make_synapses)
            updater._clock, updater.when, updater.order = clock, when, order + 1
        else:  # the normaliser sums at the group's order − 1 = layer_slot + 2
            clock, when, order = self.sample_clock, "groups", layer_slot(len(self.groups) - 1) + 1
        output.run_regularly(
            SOFTMAX_SHIFT_CODE, clock=clock, when=when, order=order, name="softmax_shift"
        )
        return norm

    # -- parameters --------------------------------------------------------------------------
    def set_params(self, params: Params) -> None:
        """Load weights, biases and ψ into the synapses and groups (and clear accumulators)."""
        for index, connection in enumerate(self.model.connections):
            forward = self.forward_synapses[index]
            forward.w[:] = params.W[index][forward.j[:], forward.i[:]]
            forward.dw[:] = 0
            target = self.groups[self._group_index(connection.target)]
            if params.b[index] is not None:
                target.b[:] = params.b[index]
                target.db[:] = 0
            feedback = self.feedback_synapses[index]
            if feedback is not None:
                # feedback synapse: pre = upper-layer neuron j, post = lower-layer neuron i
                feedback.psi[:] = params.psi[index][feedback.j[:], feedback.i[:]]
                feedback.dpsi[:] = 0

    def get_params(self) -> Params:
        """Current weights, biases and ψ as NumPy arrays."""
        weights, biases, feedbacks = [], [], []
        for index, connection in enumerate(self.model.connections):
            n_in, n_out = (
                self.model.layer(connection.source).size,
                self.model.layer(connection.target).size,
            )
            forward = self.forward_synapses[index]
            weight = np.empty((n_out, n_in))
            weight[forward.j[:], forward.i[:]] = forward.w[:]
            weights.append(weight)
            target = self.groups[self._group_index(connection.target)]
            biases.append(np.array(target.b[:]) if connection.bias else None)
            feedback = self.feedback_synapses[index]
            if feedback is None:
                feedbacks.append(None)
                continue
            psi = np.empty((n_in, n_out))
            psi[feedback.j[:], feedback.i[:]] = feedback.psi[:]
            feedbacks.append(psi)
        return Params(weights, biases, feedbacks)

    def locate(self, rows, steps, layer_size):
        """See :meth:`ARNetwork.locate`: one replica, the network time is sequential."""
        return steps // self.steps_per_sample, rows, steps

    def _after_chunk(self) -> list[Params]:
        if self._stops is not None:  # the chunk's converged samples
            self._relaxation_steps = self._converged_since(self._stops_reported)
            self._stops_reported = len(self._stops.t)
        return [self.get_params()]

    def _fill_stimulus(self, inputs, targets, next_input, next_target) -> int:
        count = len(inputs)
        rate, feedback_rate = self.schedule.learning_rates(count)
        for synapses in self.forward_synapses:
            synapses.eta = rate
        for synapses in self.feedback_synapses:
            if synapses is not None:
                synapses.eta = feedback_rate
        for group, role in zip(self.groups, self.roles, strict=True):
            if not role.is_input:
                group.eta_bias = rate
        self.stimulus.values[:] = 0
        self.targets.values[:] = 0
        self.stimulus.values[:count] = inputs
        self.targets.values[:count] = targets
        if next_input is not None:
            self.stimulus.values[count] = next_input[0]
            self.targets.values[count] = next_target[0]
        return count

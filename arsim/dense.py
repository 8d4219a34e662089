"""The ``dense`` execution mode: Brian2 neurons, BLAS connections.

Every layer is still a Brian2 ``NeuronGroup`` that integrates the leaky-integrator dynamics,
with the same equations and phase code as the ``synapses`` mode (:mod:`arsim.equations`), but it
holds one replica per sample of the minibatch, so a whole minibatch relaxes side by side in one
sample period. The connection products — the feedforward sweep, the summed top-down input and
the plasticity — are matrix products on NumPy arrays done by BLAS in ``NetworkOperation``s,
and W, ψ and the biases are matrices updated by the same rules.
"""

from __future__ import annotations

from typing import NamedTuple

import brian2 as b2
import numpy as np

from arsim import operators
from arsim.activations import SOFTMAX, output_gradient, softmax_normaliser
from arsim.components import Feature, connections, derivative, plasticity, relaxation
from arsim.components.spikes import SpikeChannels
from arsim.equations import (
    LEARN_ORDER,
    PRESENT_ORDER,
    RELAX_ORDER,
    LayerRole,
    layer_roles,
    layer_slot,
)
from arsim.network import ARNetwork
from arsim.params import Params
from arsim.recording import chunk_values_cap
from arsim.spec.schedule import Schedule
from arsim.tracebuffer import TraceBuffer


class FeedbackPlan(NamedTuple):
    """What :meth:`DenseNetwork._feedback` does at every relaxation step.

    Attributes
    ----------
    stores : list of tuple
        Per relaxing layer ``(role, x)``: x is watched for divergence (δ is stored by the
        layer's state update).
    products : list of tuple
        ``(signal, B, fb)``: ``fb = signal B`` by one matrix product.
    general : list of tuple
        ``(connection, stored signal, fb)`` of the other connections (convolutions, delays,
        f' taken at the current or upper activity).
    """

    stores: list
    products: list
    general: list


class DenseNetwork(ARNetwork):
    """A minibatch of replicas relaxing in parallel; connections by matrix products.

    Parameters and attributes are those of :class:`arsim.network.ARNetwork`; in addition
    ``W``, ``b`` and ``psi`` hold the current matrices (``psi[c]`` None for a transposed ψ).
    """

    mode = "dense"
    builds = frozenset(Feature)
    per_step_code_in_brian = False
    """δ is stored by each hidden layer's state update (:class:`~arsim.equations.EulerThen`);
    the divergence watch is one BLAS dot product per layer before the step's products, cheaper
    than the watch's element-wise statement in the numpy target."""

    batches_per_chunk = 32
    chunk_samples_at_least = 2048
    """Small minibatches: as many per Brian2 ``run()`` as make this many samples, because
    every ``run()`` costs about 0.1–0.5 s of preparation (at batch 1 a sixth of the time)."""
    trace_buffer: TraceBuffer | None = None
    """Records the layers' arrays at every step (None: nothing recorded, or state monitors for
    a recording ``interval`` longer than dt or a recorded subexpression such as ``fb``, which
    has no array of its own)."""
    spike_log = None
    """Receives the spikes of spiking feedback (a :class:`arsim.spiketrains.SpikeLog`)."""

    def __init__(self, model, protocol, params, record=True, batches_per_chunk=None):
        self.replicas = protocol.batch_size
        self._top_down = protocol.relaxation_order == "top-down"
        # a relaxing input is simulated only where something reads its current activity
        self._input_relaxes = protocol.relaxation_input == "relaxes" and any(
            (c.derivative and c.derivative_at == "current")
            or "current" in (c.update_uses, c.update_derivative_at)
            for c in model.connections
        )
        if batches_per_chunk is None:
            batches_per_chunk = max(
                self.batches_per_chunk, -(-self.chunk_samples_at_least // protocol.batch_size)
            )
            if record:  # one chunk of recorded values is held at a time
                cap = chunk_values_cap(model, protocol, self.replicas)
                batches_per_chunk = min(batches_per_chunk, cap)
        self.batches_per_chunk = batches_per_chunk
        self._batches = []  # (mask of real samples, rates) per minibatch of the running chunk
        self._chunk_start = 0.0
        self._views = {}
        if Schedule(model, protocol).jitter_steps:  # each minibatch has its own phase boundary
            self.batches_per_chunk = 1
        super().__init__(model, protocol, params, record)
        self._relaxing_roles = [role for role in self.roles if role.relaxes]
        self._delays = self.schedule.delay_steps
        self._delay_buffers = {
            c: np.zeros(
                (delay + 1, self.replicas, model.layer(model.connections[c].target).size),
                dtype=self.dtype,
            )
            for c, delay in enumerate(self._delays)
            if delay
        }
        self._step_counter = self.step_clock.variables["timestep"].get_value()
        # the output's x̂ holds the sweep's until the plasticity (not so under leaky forward
        # dynamics, which move it, or a stream, which shows other samples than the loop's)
        self._keeps_output = not self.schedule.leaky_forward and protocol.dwell == 0
        self._plasticity_step = self.schedule.plasticity_step  # once, not per step
        self._plan: FeedbackPlan | None = None
        self._spikes: SpikeChannels | None = None  # made at the first relaxation step
        self._ones: dict[int, np.ndarray] = {}  # size → ones, for the divergence watch
        self._scratches: dict[int, np.ndarray] = {}  # connection → its plasticity's scratch
        self._input_x = {  # input layer → its relaxing activity (replicas, size)
            role.index: np.zeros((self.replicas, role.spec.size), dtype=self.dtype)
            for role in self.roles
            if role.is_input and self._input_relaxes
        }

    def apply_schedule(self, schedule: Schedule) -> None:
        """:meth:`ARNetwork.apply_schedule`, and the timing the dense operations read."""
        super().apply_schedule(schedule)
        self._relax_start = self.namespace["relax_start"]
        self._relax_span = self.namespace["relax_stop"] - self._relax_start
        self._continuous = schedule.continuous_steps
        self._input_timing = {  # relaxing input layer → (onset step, gains, η_x)
            role.index: (
                schedule.onset_step(role.spec.name),
                schedule.gate(role.spec.name),
                schedule.eta_x_of(role.spec.name),
            )
            for role in layer_roles(self.model)
            if role.is_input and self._input_relaxes
        }
        self._forward_windows = [
            (role, schedule.forward_window(role.spec.name))
            for role in layer_roles(self.model)
            if not role.is_input
        ]

    # -- construction ----------------------------------------------------------------------------
    def _stimulus_rows(self) -> int:
        return self.batches_per_chunk + 1  # this chunk's minibatches, the next chunk's first

    def _view(self, layer: int, variable: str) -> np.ndarray:
        """The group's own array of ``variable`` as (replicas, size); writes go to Brian2."""
        key = (layer, variable)
        if key not in self._views:
            flat = self.groups[layer].variables[variable].get_value()
            self._views[key] = flat.reshape(self.replicas, self.model.layers[layer].size)
        return self._views[key]

    def _relax_order(self, role: LayerRole) -> int:
        """Order of a layer's state updater: bottom up, or top down with the top-down order.

        A top-down layer's input is computed just before its state updater
        (:meth:`_layer_feedback_operation`).
        """
        if not self._top_down:
            return super()._relax_order(role)
        return RELAX_ORDER + 2 * (len(self.roles) - role.index)

    def _make_connections(self) -> list:
        self._connections = []  # (source index, target index, connection spec)
        # the linear maps (a maxpool's stores the argmax of the last sweep, per replica)
        self._ops = operators.build(self.model)
        for connection in self.model.connections:
            source = self._group_index(connection.source)
            target = self._group_index(connection.target)
            self._connections.append((source, target, connection))
        operations = []
        if self._input_relaxes:
            operations.append(self._step_operation(self._start_inputs, "before_groups", 1))
        if self.schedule.leaky_forward:  # every step of the forward phase, from the last x̂
            operations.append(self._step_operation(self._forward_step, "before_groups"))
        for role in self.roles if not self.schedule.leaky_forward else ():
            if role.is_input:
                continue
            operations.append(
                b2.NetworkOperation(
                    self._sweep_operation(role),
                    clock=self.sample_clock,
                    when="groups",
                    order=layer_slot(role.index),
                    name=f"sweep_into_{role.spec.name}",
                )
            )
        if self._top_down:
            for role in self.roles:
                if role.relaxes or (role.is_input and self._input_relaxes):
                    operations.append(self._layer_feedback_operation(role))
        else:
            operations.append(self._step_operation(self._feedback, "groups"))
        at_tick = self.schedule.plasticity_step == self.steps_per_sample
        operations.append(
            b2.NetworkOperation(
                self._plasticity,
                clock=self.sample_clock if at_tick else self.step_clock,
                when="start",
                order=LEARN_ORDER,
                name="plasticity",
            )
        )
        if self._continuous is not None:
            operations.append(
                self._step_operation(
                    self._continuous_step, "after_groups", 1, "continuous_plasticity"
                )
            )
        if self.protocol.dwell > 0:
            operations.append(
                self._step_operation(
                    self._show_stream, "start", PRESENT_ORDER + 1, "stimulus_stream_op"
                )
            )
        return operations

    def _step_operation(
        self, method, when: str, order: int = 0, name: str = ""
    ) -> b2.NetworkOperation:
        """A ``NetworkOperation`` calling ``method`` at every step, named after it by default."""
        name = name or method.__name__.lstrip("_")
        return b2.NetworkOperation(method, clock=self.step_clock, when=when, order=order, name=name)

    # -- the connection products -------------------------------------------------------------
    def _sweep_operation(self, role: LayerRole):
        def sweep():
            self._sweep_into(role)

        return sweep

    def _sweep_into(self, role: LayerRole) -> None:
        """``a_c = x̂_source Wᵀ`` for every incoming connection (and the softmax normaliser)."""
        total = None
        for c in role.incoming:
            source = self._connections[c][0]
            a_c = self._view(role.index, f"a_c{c}")
            self._ops[c].forward(self._view(source, "xhat"), self.W[c], out=a_c)
            total = a_c.copy() if total is None else total + a_c
        if role.is_output and role.spec.activation == SOFTMAX:
            logits = total + self._view(role.index, "b")
            shift, norm = softmax_normaliser(logits)
            self._view(role.index, "softmax_shift")[:] = shift
            self._view(role.index, "softmax_norm")[:] = norm

    def _forward_step(self) -> None:
        """Pre-activations of the layers in their forward window, from the step's start."""
        step = int(self._step_counter[0]) % self.steps_per_sample
        for role, (start, stop) in self._forward_windows:
            if start <= step < stop:
                self._sweep_into(role)

    def _activity(self, layer: int) -> np.ndarray:
        """A layer's current activity: x; an input layer's relaxing x, or x̂ (its stimulus)."""
        if layer in self._input_x:
            return self._input_x[layer]
        return self._view(layer, "xhat" if self.roles[layer].is_input else "x")

    def _activities(self) -> list[np.ndarray]:
        """Every layer's current activity (:meth:`_activity`)."""
        return [self._activity(r.index) for r in self.roles]

    def _signal(self, c: int, stored: np.ndarray) -> np.ndarray:
        """Connection ``c``'s top-down signal ``x ⊙ f'`` with f' where the connection says.

        ``stored`` is the target's ``delta`` (f' as stored); ``current`` takes f' at the
        pre-activation from the parents' current activities, ``upper`` at the target's own x.
        """
        connection = self.model.connections[c]
        if not connection.derivative or connection.derivative_at == "stored":
            return stored
        return self._delta_at(self._connections[c][1], connection.derivative_at)

    def _delta_at(self, target: int, where: str) -> np.ndarray:
        """``x ⊙ f'`` of layer ``target``, f' where ``where`` says.

        ``'current'``: at the pre-activation from the parents' current activities; ``'upper'``:
        of the layer's own x.
        """
        params, activities = Params(self.W, self.b, self.psi), self._activities()
        fprime = derivative.fprime(
            np, where, self.model, self._ops, params, target, activities, None
        )
        return activities[target] * fprime

    def _connection_feedback(self, c: int) -> np.ndarray:
        """``B_c (x_c ⊙ f'_c)``, connection ``c``'s top-down input from its target's current x.

        δ is computed now, not read from the stored ``delta``.
        """
        target = self._connections[c][1]
        signal = self._view(target, "x")
        if self.model.connections[c].derivative:
            signal = self._signal(c, signal * self._view(target, "fp"))
        feedback = operators.as_feedback(self.W[c]) if self.psi[c] is None else self.psi[c]
        return self._ops[c].backward(signal, feedback)

    def _relaxation_step(self) -> int | None:
        """Index of the current step within the relaxation span, or None outside it."""
        step = int(self._step_counter[0])
        relaxation_step = step % self.steps_per_sample - self._relax_start
        return relaxation_step if 0 <= relaxation_step < self._relax_span else None

    def _start_inputs(self) -> None:
        """A relaxing input layer's x starts at its x̂ (the stimulus) at its onset step."""
        step = int(self._step_counter[0]) % self.steps_per_sample
        for index, (onset, _, _) in self._input_timing.items():
            if step == onset:
                self._input_x[index][:] = self._view(index, "xhat")

    def _relax_input(self, role: LayerRole) -> None:
        """One Euler step of a relaxing input layer, ``x ← x + g η_x (−x + fb)``.

        ``g`` is the gain of the layer's window at this step, ``η_x = dt/τ`` its own.
        """
        step = int(self._step_counter[0]) % self.steps_per_sample
        _, gains, eta_x = self._input_timing[role.index]
        if gains[step]:
            x = self._input_x[role.index]
            fb = sum(self._connection_feedback(c) for c in role.outgoing)
            x[:] = relaxation.euler_step(np, x, gains[step] * eta_x, relaxation.drive(np, x, fb))

    def _layer_feedback_operation(self, role: LayerRole) -> b2.NetworkOperation:
        """Top-down order: the layer's ``fb`` from its children's x of this step.

        It runs just before the layer's state updater; an input layer's does its whole Euler
        step.
        """

        def layer_feedback():
            relaxation_step = self._relaxation_step()
            if relaxation_step is None:
                return
            if role.is_input:
                self._relax_input(role)
                return
            self._watch(role, self._view(role.index, "x"), self._step_counter[0] * self.protocol.dt)
            for c in role.outgoing:
                self._view(role.index, f"fb_c{c}")[:] = self._connection_feedback(c)

        return b2.NetworkOperation(
            layer_feedback,
            clock=self.step_clock,
            when="groups",
            order=self._relax_order(role) - 1,
            name=f"feedback_into_{role.spec.name}",
        )

    def _feedback(self) -> None:
        """Summed top-down input ``fb_c = signal B_cᵀ`` of every relaxing layer.

        The products read the previous step's activities: ``delta = x · fp`` as each layer's
        state update stored it (:func:`~arsim.equations.relaxation_step_code`, fused into the
        Euler step), after every relaxing layer's x is watched for divergence.
        """
        step = int(self._step_counter[0])
        relaxation_step = step % self.steps_per_sample - self._relax_start
        if not 0 <= relaxation_step < self._relax_span:
            return  # the state updater multiplies fb by 0 outside the relaxation
        if self._plan is None:
            self._plan = self._feedback_plan()
        since = step * self.protocol.dt
        for role, x in self._plan.stores:
            self._watch(role, x, since)
        for signal, matrix, fb in self._plan.products:  # dense, stored signal, no delay
            np.matmul(signal, matrix, out=fb)
        for c, signal, fb in self._plan.general:
            signal = self._signal(c, signal)
            if self._delays[c]:
                signal = self._delayed(c, signal, relaxation_step)
            if self.protocol.spikes is not None:
                signal = self._spiked(c, signal, relaxation_step)
            feedback = operators.as_feedback(self.W[c]) if self.psi[c] is None else self.psi[c]
            self._ops[c].backward(signal, feedback, out=fb)
        for role in self.roles if self._input_x else ():  # from the previous step's activities
            if role.is_input:
                self._relax_input(role)
        if self.protocol.tolerance > 0:
            self._stop_converged(relaxation_step)

    def _feedback_plan(self) -> FeedbackPlan:
        """The arrays :meth:`_feedback` works on, looked up once per set of parameters.

        A product is a plain ``np.matmul`` where the connection is dense, reads the stored δ
        (or x without f') and has no delay; B is W itself for a transposed ψ (``signal W``) or
        the transposed view of ψ (``signal ψᵀ``), both updated in place by the plasticity.
        """
        products, general = [], []
        for c, (source, target, connection) in enumerate(self._connections):
            if not self.roles[source].relaxes:
                continue
            signal = self._view(target, "delta" if connection.derivative else "x")
            fb = self._view(source, f"fb_c{c}")
            stored = not connection.derivative or connection.derivative_at == "stored"
            plain = not self._delays[c] and self.protocol.spikes is None
            if self._ops[c].kind == "dense" and stored and plain:
                matrix = self.W[c] if self.psi[c] is None else self.psi[c].T
                products.append((signal, matrix, fb))
            else:
                general.append((c, signal, fb))
        stores = [(role, self._view(role.index, "x")) for role in self._relaxing_roles]
        return FeedbackPlan(stores, products, general)

    def _stop_converged(self, relaxation_step: int) -> None:
        """Freeze the replicas whose every hidden neuron has ``|−x + fb| < tolerance``."""
        active = self._view(self._relaxing_roles[0].index, "active")[:, 0] > 0.5
        if relaxation_step == 0:
            active[:] = True
        if not active.any():
            return
        worst = np.zeros(self.replicas)
        for role in self._relaxing_roles:
            fb = sum(self._view(role.index, f"fb_c{c}") for c in role.outgoing)
            np.maximum(worst, np.abs(fb - self._view(role.index, "x")).max(axis=1), out=worst)
        converged = active & (worst < self.protocol.tolerance)
        if converged.any():
            for role in self._relaxing_roles:
                self._view(role.index, "active")[converged] = 0.0
            tick = int(self._step_counter[0]) // self.steps_per_sample
            for replica in np.flatnonzero(converged):
                self._relaxation_steps[tick * self.replicas + int(replica)] = relaxation_step

    def _delayed(self, connection: int, signal: np.ndarray, step: int) -> np.ndarray:
        """The signal of ``connection`` as it was ``delay`` steps ago (see ``oracle.relax``).

        A ring buffer of ``delay + 1`` slots: step ``n`` writes slot ``n mod (d+1)`` and reads
        slot ``(n + 1) mod (d+1)``, written at step ``n − d``; at the relaxation's first step
        every slot is filled with the current signal.
        """
        return connections.delayed(np, self._delay_buffers[connection], signal, step)

    def _spiked(self, connection: int, signal: np.ndarray, step: int) -> np.ndarray:
        """The received signal of ``connection`` at relaxation step ``step``; ``signal`` is sent.

        Sent as spikes (:class:`~arsim.components.spikes.SpikeChannels`, seeded with
        :attr:`seed_key`).
        """
        if self._spikes is None:
            self._spikes = SpikeChannels.of(
                self.model, self.protocol.spikes, self.protocol.dt, self.seed_key
            )
            if self.spike_log is not None:
                self._spikes.listener = self._listen
        return self._spikes.send(connection, signal, step)

    def _listen(self, connection: int, _, spikes: np.ndarray) -> None:
        """Hand a step's spikes to :attr:`spike_log` with their samples and step."""
        tick, in_sample = divmod(int(self._step_counter[0]), self.steps_per_sample)
        batch = tick - round(self._chunk_start / self.protocol.dt) // self.steps_per_sample
        real = int(self._batches[batch][0].sum()) if 0 <= batch < len(self._batches) else None
        self.spike_log.add(connection, tick * self.replicas, in_sample, spikes, real)

    def spikes_clipped(self, batch: int) -> dict[str, int]:
        """``spikes_clipped_<layer>`` of minibatch ``batch`` (:meth:`SpikeChannels.clipped_in`).

        A last partial minibatch's padding replicas count too.
        """
        return {} if self._spikes is None else self._spikes.clipped_in(batch, self.model)

    def _watch(self, role: LayerRole, x: np.ndarray, since: float) -> None:
        """Mark the neurons of ``role`` whose x is non-finite as bad since ``since`` (s).

        "Non-finite" includes beyond the divergence limit; an earlier mark is kept. The watch
        is the sum of x (a BLAS dot product, the cheapest reduction): NaN, infinite or huge
        as soon as one neuron is.
        """
        flat = x.reshape(-1)
        ones = self._ones.get(flat.size)
        if ones is None:
            ones = self._ones[flat.size] = np.ones(flat.size, dtype=flat.dtype)
        limit = self.namespace["divergence_limit"]
        if abs(np.dot(flat, ones)) < limit:
            return
        t_bad = self.groups[role.index].variables["t_bad"].get_value()
        bad = ~(np.abs(flat) < limit)
        t_bad[bad] = np.minimum(t_bad[bad], since)

    def _plasticity(self) -> None:
        """At a minibatch's plasticity step: ``W -= η Σ δ x̂ᵀ``, ψ and biases likewise.

        That step is the next tick, or the oscillation's plasticity phase
        (``Schedule.plasticity_step``); the operation then runs every step and acts at that one.
        """
        step = int(self._step_counter[0])
        if step % self.steps_per_sample != self._plasticity_step % self.steps_per_sample:
            return
        since_chunk = step - round(self._chunk_start / self.protocol.dt)
        ended = (since_chunk - self._plasticity_step) // self.steps_per_sample
        if not 0 <= ended < len(self._batches):
            return  # the first tick of all: no minibatch has ended
        mask, rates = self._batches[ended]
        if self._keeps_output:  # the sweep's output x̂, for the minibatch's loss
            # a partial minibatch gets None: the loop's sweep of its samples alone is what a
            # float64 run always reported (BLAS rounds a product of fewer rows differently)
            output = self._view(len(self.roles) - 1, "xhat")
            self._batch_outputs.append(output.copy() if mask.all() else None)
        for role in self._relaxing_roles:  # δ is the state update's; x of the last step
            self._watch(role, self._view(role.index, "x"), step * self.protocol.dt)
        if self._continuous is None:
            delta_of = lambda target: self._view(target, "delta")  # noqa: E731
            signals = self._learn(mask, rates, delta_of, keep=self.model.all_dense)
            if self.model.all_dense:  # per-sample factors δ x̂ᵀ: outer products, dense only
                self._batch_signals.append(signals)
        self._batch_params.append(self.get_params())

    def _learn(self, mask, rates, delta_of, fraction: float = 1.0, keep: bool = True) -> list:
        """``W -= fraction · η Σ δ pᵀ`` (ψ, biases likewise) over the replicas in ``mask``.

        ``delta_of(target)`` gives a layer's δ; ``p`` is the source's x̂, or its current
        activity where the connection's ``update_uses`` says so. Returns each connection's
        factors ``(δ, p, has_bias)`` (copies; none without ``keep``). The products are made
        in one scratch matrix per connection, in the matrices' float type.
        """
        rate, feedback_rate = rates
        # as the matrices' float type, so that a float32 matrix is not updated in float64
        rate, feedback_rate = self.dtype(fraction * rate), self.dtype(fraction * feedback_rate)
        signals = []  # each sample's update as factors: δ of the target, x̂ of the source
        for c, (source, target, connection) in enumerate(self._connections):
            where = connection.update_derivative_at
            # copies (a boolean index copies), which the rule does not change: kept as they are
            delta = (delta_of(target) if where == "stored" else self._delta_at(target, where))[mask]
            pre = plasticity.presynaptic(
                connection.update_uses, self._activity(source), self._view(source, "xhat")
            )[mask]
            if keep:
                signals.append((delta, pre, self.b[c] is not None))
            plasticity.apply_rule(
                np,
                self._ops[c],
                self.W[c],
                self.psi[c] if connection.learns_feedback else None,
                self.b[c],
                delta,
                pre,
                rate,
                feedback_rate,
                self._scratch(c),
            )
            if self.b[c] is not None:
                self._view(target, "b")[:] = self._ops[c].bias_vector(self.b[c])
        return signals

    def _scratch(self, c: int) -> np.ndarray:
        """A scratch array of ``W[c]``'s shape and float type (made once)."""
        scratch = self._scratches.get(c)
        if scratch is None or scratch.shape != self.W[c].shape:
            scratch = self._scratches[c] = np.empty_like(self.W[c])
        return scratch

    def _continuous_step(self) -> None:
        """``η/K`` of the rule at the end of every step of the continuous-plasticity window.

        The rule reads the activities after the step.
        """
        step = int(self._step_counter[0])
        first, stop = self._continuous
        if not first <= step % self.steps_per_sample < stop:
            return
        since_chunk = step - round(self._chunk_start / self.protocol.dt)
        batch = since_chunk // self.steps_per_sample
        if not 0 <= batch < len(self._batches):
            return
        mask, rates = self._batches[batch]

        def delta_now(target: int) -> np.ndarray:
            return self._view(target, "x") * self._view(target, "fp")

        self._learn(mask, rates, delta_now, 1.0 / (stop - first), keep=False)

    def set_stream(self, inputs: np.ndarray, targets: np.ndarray) -> None:
        """The samples the stimulus stream shows (``Schedule.stream_samples``), in order."""
        self._stream = (inputs, targets)
        self._shown = None

    def _show_stream(self) -> None:
        """Show the stream's current samples: the input's x̂ and the output's target.

        Where the samples change outside a sweep the output keeps its x̂ and its clamp
        follows the new target, ``x = output_gradient(x̂_L, T)``.
        """
        step = int(self._step_counter[0])
        inputs, targets = self._stream
        shown = self.schedule.stream_samples(step, len(inputs))
        at_tick = step % self.steps_per_sample == 0
        if not at_tick and self._shown is not None and np.array_equal(shown, self._shown):
            return
        self._shown = shown
        for role in self.roles:
            if role.is_input:
                self._view(role.index, "xhat")[:] = inputs[shown][:, role.stimulus]
        output = len(self.roles) - 1
        self._view(output, "target")[:] = targets[shown]
        if not at_tick:  # at a tick the sweep that follows clamps the output
            x = self._view(output, "x")
            x[:] = output_gradient(
                self.model.loss, self._view(output, "xhat"), targets[shown], self.model.loss_scale
            )
            np.multiply(x, self._view(output, "fp"), out=self._view(output, "delta"))

    # -- parameters ------------------------------------------------------------------------------
    def set_params(self, params: Params) -> None:
        """Load weights, biases and ψ (copies, as the protocol's float type)."""
        copy = params.astype(self.dtype)
        self.W, self.b, self.psi = copy.W, copy.b, copy.psi
        self._plan = None  # it holds the matrices
        for c, (_, target, _) in enumerate(self._connections):
            if self.b[c] is not None:
                self._view(target, "b")[:] = self._ops[c].bias_vector(self.b[c])

    def get_params(self) -> Params:
        """Current weights, biases and ψ (float64 copies, whatever the precision)."""
        return Params(self.W, self.b, self.psi).astype(np.float64)

    # -- running ---------------------------------------------------------------------------------
    def locate(self, rows, steps, layer_size):
        """See :meth:`arsim.network.ARNetwork.locate`: tick ``c`` relaxes samples ``c·B + r``."""
        tick, step_in_sample = np.divmod(steps, self.steps_per_sample)
        replica, neuron = np.divmod(rows, layer_size)
        sample = tick * self.replicas + replica
        return sample, neuron, sample * self.steps_per_sample + step_in_sample

    def _make_monitors(self) -> dict:
        """The :class:`TraceBuffer` (or state monitors, see :attr:`trace_buffer`)."""
        interval = self.protocol.record.interval
        layers = self._recorded_layers()
        arrays = all(
            isinstance(self.groups[index].variables[v], b2.core.variables.ArrayVariable)
            for index, _, variables, _ in layers
            for v in variables
        )
        if (interval is not None and not np.isclose(interval, self.protocol.dt)) or not arrays:
            return super()._make_monitors()
        if not layers:
            return {}
        self.trace_buffer = TraceBuffer(self, layers)
        return {"arrays": self.trace_buffer.operation}

    def _fill_stimulus(self, inputs, targets, next_input, next_target) -> int:
        batch, rows = self.replicas, self.batches_per_chunk + 1
        stimulus = self.stimulus.values.reshape(rows, batch, -1)
        target_values = self.targets.values.reshape(rows, batch, -1)
        stimulus[:] = 0
        target_values[:] = 0
        self._batches = []
        for row, start in enumerate(range(0, len(inputs), batch)):
            count = min(batch, len(inputs) - start)
            stimulus[row, :count] = inputs[start : start + count]
            target_values[row, :count] = targets[start : start + count]
            if self.protocol.dwell > 0:  # the stream shows a full minibatch at every tick
                count = batch
            self._batches.append((np.arange(batch) < count, self.schedule.learning_rates(count)))
        if next_input is not None:
            count = min(batch, len(next_input))
            stimulus[len(self._batches), :count] = next_input[:count]
            target_values[len(self._batches), :count] = next_target[:count]
        self._chunk_start = self.ticks_done * self.steps_per_sample * self.protocol.dt
        if self.trace_buffer is not None:
            self.trace_buffer.start_chunk(len(self._batches))
        return len(self._batches)

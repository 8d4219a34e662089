"""The Brian2 network shared by the execution modes: one ``NeuronGroup`` per layer, the phases.

Everything happens inside one long simulation on two clocks: the *step clock* (``dt``) that
integrates the relaxation, and the *sample clock* (one tick per sample, ``P`` steps apart) that
drives what happens once per sample. With ``k`` the step within a sample:

=====================  ===========================================================================
step ``k``             what happens (Brian2 schedule slot)
=====================  ===========================================================================
0 (sample tick)        *start*: plasticity of the previous sample, ``dW += δ_post x̂_pre`` (ψ and
                       biases likewise), and at a minibatch's end ``W -= η dW``; then the input
                       layer takes the next stimulus and the output layer its target.
                       *groups*: the feedforward sweep runs through all layers within this one
                       step, each storing ``xhat = f(a)`` and ``fp = f'(a)``; hidden ``x`` starts
                       at ``xhat`` (or 0), the output ``x`` is clamped to the loss gradient.
``1 … n_ff − 1``       feedforward phase continues: activities hold.
``n_ff … n_ff+n_r−1``  relaxation: ``τ dx/dt = −x + fb`` by forward Euler in every hidden layer
                       in parallel (*groups*), ``fb`` the summed top-down input; ``delta = x · fp``
                       is stored by the same state updater after every step.
``n_ff + n_r … P−1``   update phase: activities hold until the plasticity at the next tick.
=====================  ===========================================================================

The only work done every step is the relaxation itself: one summed feedback product per
connection. Input and output layers live on the sample clock (they change once per sample).
The equation strings and the schedule's order numbers are in :mod:`arsim.equations`; the modes
(:mod:`arsim.synapses`, :mod:`arsim.dense`) make the connections.
"""

from __future__ import annotations

import gc
from contextlib import nullcontext

import brian2 as b2
import numpy as np

from arsim.backend import ChunkResult
from arsim.codecache import reuse_code_objects
from arsim.components import CORE, Feature, neuron_terms
from arsim.equations import (
    BIAS_ORDER,
    FORWARD_STEP_ORDER,
    PRESENT_ORDER,
    RELAX_ORDER,
    EulerThen,
    LayerRole,
    bias_code,
    feedforward_code,
    forward_step_code,
    gate_name,
    layer_equations,
    layer_roles,
    layer_slot,
    onset_code,
    presentation_reset_code,
    relaxation_step_code,
    stimulus_index,
)
from arsim.params import Params, SeedStream, phase_shift, seed_sequence
from arsim.session import BrianSession
from arsim.spec import ModelSpec, ProtocolSpec
from arsim.spec.schedule import Schedule

DIVERGENCE_LIMIT = 1e300
"""An activity that is NaN, infinite or beyond this magnitude counts as diverged."""
NEVER = 1e9
"""``t_bad`` of a neuron that never diverged, in seconds."""
FLOAT_DTYPES = {"double": np.float64, "single": np.float32}
"""NumPy dtype of each protocol ``precision``."""


def divergence_limit(dtype: type) -> float:
    """:data:`DIVERGENCE_LIMIT`, or the largest finite value of a narrower float type."""
    return min(DIVERGENCE_LIMIT, float(np.finfo(dtype).max))


def seed_noise(seed: int, *key: int) -> None:
    """Seed Brian2's random numbers (the noise ``xi``) from stream :attr:`SeedStream.NOISE`.

    Brian2's seed is the first word of the seed sequence ``[seed, SeedStream.NOISE, *key]``.
    """
    b2.seed(int(seed_sequence(seed, SeedStream.NOISE, *key).generate_state(1)[0]))


class ARNetwork:
    """Brian2 layers of a model under a protocol, ready to run minibatches (base of the modes).

    A layer is a ``NeuronGroup`` of ``replicas × size`` neurons (replica ``r``, neuron ``n`` at
    index ``r · size + n``); the modes differ in how connections are made and in how many
    samples one tick of the sample clock presents (``samples_per_tick``).

    Parameters
    ----------
    model : ModelSpec
        The network declaration.
    protocol : ProtocolSpec
        Timing and learning.
    params : Params
        Initial weights.
    record : bool
        Create the state monitors the protocol asks for.

    Attributes
    ----------
    network : brian2.Network
        All objects.
    groups : list of brian2.NeuronGroup
        One per layer, in layer order.
    monitors : dict
        ``layer name -> StateMonitor``.
    dtype : type
        NumPy float type of the groups' variables (the protocol's ``precision``).
    """

    mode = "base"
    """The ``--mode`` this class runs."""
    device = "runtime"
    """The Brian2 device this class runs on (``--device``)."""
    builds: frozenset[Feature] = CORE
    """The components (:mod:`arsim.components`) this class builds."""
    replicas = 1
    """Copies of every layer that relax side by side (one per sample of a minibatch)."""
    batches_per_chunk = 1
    """Minibatches simulated by one Brian2 ``run()`` (each call costs about 0.1 s)."""
    ticks_per_minibatch = 1
    """Sample ticks a full minibatch spans (one: the replicas present it at once)."""
    per_step_code_in_brian = True
    """Whether the divergence watch of a hidden layer's x runs as Brian2 code in its state
    update (:func:`arsim.equations.relaxation_step_code`) or is done by the mode itself;
    ``delta = x·fp`` is stored by the state update in every mode."""

    def __init__(
        self, model: ModelSpec, protocol: ProtocolSpec, params: Params, record: bool = True
    ):
        self.model, self.protocol = model, protocol
        self.dtype = FLOAT_DTYPES[protocol.precision]
        self.schedule = Schedule(model, protocol)
        self.roles = layer_roles(model)
        self.steps_per_sample = self.schedule.sample_steps
        self.dt = protocol.dt * b2.second
        self.ticks_done = 0
        # what the running chunk collects for its ChunkResult (see run_chunk)
        self._batch_params: list[Params] = []
        self._batch_signals: list[list] = []
        self._batch_outputs: list[np.ndarray | None] = []
        self._relaxation_steps: dict[int, int] = {}
        rows = self._stimulus_rows()
        sample_dt = self.steps_per_sample * self.dt
        # Per-chunk inputs, one row per sample tick; the last row is the next chunk's first.
        n_in, n_out = model.input_size * self.replicas, model.output.size * self.replicas
        self.stimulus = b2.TimedArray(np.zeros((rows, n_in)), dt=sample_dt, name="stimulus_stream")
        self.targets = b2.TimedArray(np.zeros((rows, n_out)), dt=sample_dt, name="target_stream")
        self.namespace = {
            "steps_per_sample": self.steps_per_sample,
            "loss_scale": model.loss_scale,
            "stimulus_stream": self.stimulus,
            "target_stream": self.targets,
            "divergence_limit": divergence_limit(self.dtype),
            "never": NEVER * b2.second,
            "step_dt": self.dt,
            "noise_sigma": protocol.noise,
            "memory_tau": (model.memory.tau or 1.0) * b2.second,
        }
        self._square_gates = protocol.oscillation is None or (
            protocol.oscillation.waveform == "square"
        )
        self.seed_key: tuple[int, ...] = (model.seed,)
        """``(seed, *key)`` of the per-minibatch phase-boundary shifts (:func:`phase_shift`)."""
        self.apply_schedule(self.schedule)
        self.step_clock = b2.Clock(dt=self.dt, name="step_clock")
        self.sample_clock = b2.Clock(dt=sample_dt, name="sample_clock")
        self.groups = [self._make_group(role) for role in self.roles]
        objects = [*self.groups, *self._make_connections()]
        self.record = record  # whether the protocol's recording is made
        self.monitors = self._make_monitors() if record else {}
        objects += list(self.monitors.values())
        self.network = b2.Network(*objects)
        if self.device == "runtime":  # a run() then regenerates only the code that changed
            reuse_code_objects(self.network, self.namespace)
        self.set_params(params)

    @classmethod
    def session(cls, protocol: ProtocolSpec) -> BrianSession:
        """The :class:`~arsim.session.BrianSession` a job of this class runs in.

        It sets Brian2's float type to the protocol's ``precision`` (the code generated for
        the groups then computes in it).
        """
        return BrianSession({"core.default_float_dtype": FLOAT_DTYPES[protocol.precision]})

    def apply_schedule(self, schedule: Schedule) -> None:
        """Time the next runs by ``schedule`` (phase windows, onsets, forward windows).

        The sample period must stay :attr:`steps_per_sample`; a jittered protocol applies each
        minibatch's :meth:`Schedule.shifted` before running it.
        """
        self.schedule = schedule
        start, stop = self._relaxation_span()
        self.namespace["relax_start"], self.namespace["relax_stop"] = start, stop
        for role in self.roles:
            if not role.relaxes:
                continue
            if self._square_gates:
                start, stop = schedule.window_steps(role.spec.name)
                self.namespace[f"relax_start_{role.index}"] = start
                self.namespace[f"relax_stop_{role.index}"] = stop
            else:  # one entry per step of the period, looked up at t = step · 1 s
                gain = schedule.gate(role.spec.name)
                self.namespace[gate_name(role)] = b2.TimedArray(gain, dt=b2.second)
            self.namespace[f"relax_onset_{role.index}"] = schedule.onset_step(role.spec.name)
        for role in self.roles:
            if not role.is_input:
                start, stop = schedule.forward_window(role.spec.name)
                self.namespace[f"forward_start_{role.index}"] = start
                self.namespace[f"forward_stop_{role.index}"] = stop

    def _apply_jitter(self, ticks: int) -> int:
        """Apply the next minibatch's shifted schedule (one minibatch per chunk when jittered).

        Returns the steps by which the phase boundary (the end of the feedforward phase) moved
        from the protocol's, as :attr:`ChunkResult.phase_shift` reports it.
        """
        base = Schedule(self.model, self.protocol)
        if base.jitter_steps == 0:
            return 0
        if ticks > self.ticks_per_minibatch:
            raise ValueError("a jittered protocol runs one minibatch per chunk")
        seed, *key = self.seed_key
        shift = phase_shift(seed, base.jitter_steps, *key, self._minibatches_done())
        self.apply_schedule(base.shifted(shift))
        nominal = Schedule(None, self.protocol).phase_steps["feedforward"]
        return int(self.schedule.phase_steps["feedforward"] - nominal)

    def _minibatches_done(self) -> int:
        """Minibatches run so far (a mode with one minibatch per tick: the ticks)."""
        return self.ticks_done

    def _bias_signal(self, role: LayerRole) -> str:
        """Name of the ``x ⊙ f'`` the bias of ``role``'s layer learns from (the stored one)."""
        return "delta"

    def _layer_extras(self, role: LayerRole) -> b2.Equations:
        """Equations a mode adds to the neuron model of ``role``'s layer (none here)."""
        return b2.Equations("")

    def _relaxation_span(self) -> tuple[int, int]:
        """First step of the earliest relaxation window and the step after the latest."""
        return self.schedule.relaxation_span()

    # -- a backend is a context manager (arsim.backend.Backend) ---------------------------------
    def close(self) -> None:
        """Release what the network holds (nothing here; a standalone build folder)."""

    def __enter__(self) -> ARNetwork:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- to be provided by a mode -----------------------------------------------------------
    def _stimulus_rows(self) -> int:
        raise NotImplementedError

    def _make_connections(self) -> list:
        raise NotImplementedError

    def set_params(self, params: Params) -> None:
        """Load weights, biases and ψ (and clear the accumulated changes)."""
        raise NotImplementedError

    def get_params(self) -> Params:
        """Current weights, biases and ψ as NumPy arrays."""
        raise NotImplementedError

    def locate(self, rows: np.ndarray, steps: np.ndarray, layer_size: int):
        """Sample, neuron and step of the sequential timeline for group rows at network steps.

        The sequential timeline is the one of the synapses mode: sample ``s`` occupies steps
        ``s·P … (s+1)·P − 1``, so traces and times agree between modes.
        """
        raise NotImplementedError

    # -- shared construction -------------------------------------------------------------------
    def _relax_order(self, role: LayerRole) -> int:
        """'groups'-slot order of a stepped layer's state updater: bottom up, after the sweep."""
        return RELAX_ORDER + role.index

    def _group_index(self, name: str) -> int:
        return [layer.name for layer in self.model.layers].index(name)

    def _bias_in_group(self, role: LayerRole) -> bool:
        """Whether the group learns its biases itself (one replica) or the mode does."""
        has_bias = any(self.model.connections[c].bias for c in role.incoming)
        return has_bias and self.replicas == 1

    def _make_group(self, role: LayerRole) -> b2.NeuronGroup:
        leaky = self.schedule.leaky_forward
        error_unit = leaky and self.schedule.eta_error is not None
        stepped = role.relaxes or (leaky and not role.is_input)
        group = b2.NeuronGroup(
            role.spec.size * self.replicas,
            layer_equations(
                role,
                self.protocol.noise,
                self.protocol.tolerance > 0,
                self.model.memory.kind,
                self._square_gates,
                leaky_forward=leaky,
                error_unit=error_unit,
            )
            + self._layer_extras(role),
            method=self._method(role),
            namespace=self.namespace,
            dtype=self.dtype,
            clock=self.step_clock if stepped else self.sample_clock,
            name=f"layer_{role.spec.name}",
            # hidden layers integrate after the whole sweep (which reads the x̂ it stores; with
            # trace memory the state updater decays x̂), the output right after its sweep
            order=self._relax_order(role) if stepped else layer_slot(role.index) + 3,
        )
        sample = {"clock": self.sample_clock}
        if role.is_input:
            column = stimulus_index(role, self.model.input_size)
            present = f"xhat = stimulus_stream(t - chunk_start, {column})"
            group.run_regularly(
                present, when="start", order=PRESENT_ORDER, name=f"{group.name}_present", **sample
            )
            return group
        group.t_bad = NEVER * b2.second
        if role.relaxes:
            group.tau = self.schedule.tau_of(role.spec.name) * b2.second
        present = [f"a_c{c} = 0" for c in role.incoming]
        carry_over = leaky and not self.protocol.forward.reset
        present += neuron_terms.presentation_code(role.spec.equations, carry_over)
        if role.is_output:
            present.append("target = target_stream(t - chunk_start, i)")
        if leaky:
            present.append(presentation_reset_code(role, self.protocol.forward.reset, error_unit))
        group.run_regularly(
            "\n".join(present),
            when="start",
            order=PRESENT_ORDER,
            name=f"{group.name}_present",
            **sample,
        )
        if leaky:
            self._add_leaky_forward_code(group, role, error_unit)
        else:
            code = feedforward_code(
                role, self.protocol.relaxation_start, self.protocol.tolerance > 0
            )
            # after the sweep into this layer (layer_slot) and the softmax normaliser (+ 2)
            group.run_regularly(
                code,
                when="groups",
                order=layer_slot(role.index) + 3,
                name=f"{group.name}_sweep",
                **sample,
            )
        if self._bias_in_group(role):
            group.run_regularly(
                bias_code(self._bias_signal(role)),
                when="start",
                order=BIAS_ORDER,
                name=f"{group.name}_bias",
                **sample,
            )
        return group

    def _method(self, role: LayerRole):
        """The state update of a layer: Euler, a hidden layer's fused with its δ and watch.

        Without leaky forward dynamics a hidden layer's ``delta = x · fp`` (and, with
        :attr:`per_step_code_in_brian`, its divergence watch) follows the Euler step in the
        state updater (:class:`~arsim.equations.EulerThen`): one code object per layer and
        step. Under leaky forward dynamics the forward step's code, which changes f' after the
        update, stores them (:func:`~arsim.equations.forward_step_code`).
        """
        if not role.relaxes or self.schedule.leaky_forward:
            return "euler"
        return EulerThen(relaxation_step_code(self.per_step_code_in_brian))

    def _add_leaky_forward_code(self, group: b2.NeuronGroup, role: LayerRole, error_unit: bool):
        """Per-step code of leaky forward dynamics: f' after the state update, the onset."""
        group.tau_f = self.schedule.tau_f_of(role.spec.name) * b2.second
        if error_unit and role.is_output:
            group.tau_e = self.protocol.forward.error_tau * b2.second
        group.run_regularly(
            forward_step_code(role, error_unit, self.per_step_code_in_brian),
            when="groups",
            order=FORWARD_STEP_ORDER + role.index,
            name=f"{group.name}_forward_step",
        )
        if role.relaxes:  # x starts at the start of the onset step, after a presentation
            group.run_regularly(
                onset_code(role, self.protocol.relaxation_start, self.protocol.tolerance > 0),
                when="start",
                order=PRESENT_ORDER + 5,
                name=f"{group.name}_onset",
            )

    def _recorded_layers(self) -> list[tuple[int, str, list[str], np.ndarray]]:
        """Group index, layer name, variables and neurons of every layer the protocol records."""
        record = self.protocol.record
        found = []
        for role, group in zip(self.roles, self.groups, strict=True):
            if record.layers is not None and role.spec.name not in record.layers:
                continue
            variables = [v for v in record.variables if v in group.variables]
            size = role.spec.size
            neurons = (  # summaries are over every neuron
                list(range(size))
                if record.neurons is None or record.summary
                else [n for n in record.neurons if n < size]
            )
            if variables and neurons:
                found.append((role.index, role.spec.name, variables, np.array(neurons)))
        return found

    def _make_monitors(self) -> dict[str, b2.StateMonitor]:
        monitors = {}
        for index, name, variables, neurons in self._recorded_layers():
            size = self.model.layers[index].size
            rows = [r * size + int(n) for r in range(self.replicas) for n in neurons]
            monitors[name] = b2.StateMonitor(
                self.groups[index],
                variables,
                record=rows,
                dt=(self.protocol.record.interval or self.protocol.dt) * b2.second,
                when="end",
                name=f"record_{self.groups[index].name}",
            )
        return monitors

    # -- running -------------------------------------------------------------------------------
    @property
    def chunk_samples(self) -> int:
        """Samples one :meth:`run_chunk` takes at most."""
        return self.protocol.batch_size * self.batches_per_chunk

    def run_chunk(
        self,
        inputs: np.ndarray,
        targets: np.ndarray,
        next_input: np.ndarray | None = None,
        next_target: np.ndarray | None = None,
        report=None,
    ) -> ChunkResult:
        """Simulate consecutive minibatches of ``len(inputs)`` samples, updating after each.

        The run ends just after the tick that follows the last minibatch, at which its last
        plasticity and its update happen; that tick also presents ``next_input`` (the next
        chunk's samples; zeros when None) so that the next chunk continues seamlessly.

        Parameters
        ----------
        inputs : ndarray, shape (n, n_in)
            Stimuli, one row per sample (n at most :attr:`chunk_samples`).
        targets : ndarray, shape (n, n_out)
            Targets.
        next_input, next_target : ndarray, shape (m, n_in) and (m, n_out), optional
            The next chunk's samples (the synapses mode needs only the first).
        report : callable, optional
            Called about once a second with the fraction of the chunk done.

        Returns
        -------
        ChunkResult
            The parameters after each minibatch and what else the chunk produced.
        """
        count = len(inputs)
        if not 0 < count <= self.chunk_samples:
            raise ValueError(f"a chunk holds 1 to {self.chunk_samples} samples, got {count}")
        self._batch_params, self._batch_signals, self._relaxation_steps = [], [], {}
        self._batch_outputs = []
        ticks = self._fill_stimulus(inputs, targets, next_input, next_target)
        shift = self._apply_jitter(ticks)
        sample_dt = self.steps_per_sample * self.dt
        end = (self.ticks_done + ticks) * sample_dt
        for group in self.groups:
            group.chunk_start = self.ticks_done * sample_dt
            group.apply_at = end
        progress = {}
        if report is not None:
            progress = {
                "report": lambda elapsed, done, start, duration: report(float(done)),
                "report_period": 1 * b2.second,
            }
        # Brian2 calls gc.collect() at every run(), which walks every object in the process
        # (0.1 s here); freezing the long-lived ones for the call makes it nearly free.
        gc.freeze()
        # After a run Brian2 compares every state variable with the float 1e50, which a float32
        # variable cannot hold: NumPy's cast of that constant overflows (harmlessly, to inf)
        single = np.errstate(over="ignore") if self.dtype == np.float32 else nullcontext()
        try:
            with single:
                self.network.run(end + self.dt - self.network.t, namespace={}, **progress)
        finally:
            gc.unfreeze()
        complete = bool(self.network.t > end + 0.5 * self.dt)  # a stop may cut it short
        self.ticks_done += ticks
        batch_params = self._after_chunk()
        return ChunkResult(
            tuple(self._batch_params if batch_params is None else batch_params),
            tuple(self._batch_signals),
            complete,
            dict(self._relaxation_steps),
            shift,
            tuple(self._batch_outputs),
        )

    def _after_chunk(self) -> list[Params] | None:
        """The parameters after each minibatch, or None if the mode collected them running."""
        return None

    def _fill_stimulus(self, inputs, targets, next_input, next_target) -> int:
        """Write the chunk's stimuli into the TimedArrays; returns the sample ticks it spans."""
        raise NotImplementedError

    def first_divergence(self) -> tuple[str, int, int, float] | None:
        """Earliest non-finite activity so far, or None.

        Returns ``(layer, neuron, sample, t)`` with ``t`` in seconds on the sequential timeline
        (the end of the step that produced the value).
        """
        found = None
        for role, group in zip(self.roles, self.groups, strict=True):
            if role.is_input:
                continue
            t_bad = np.asarray(group.t_bad[:])
            row = int(np.argmin(t_bad))
            if t_bad[row] >= NEVER:
                continue
            step = np.array([round(t_bad[row] / self.protocol.dt) - 1])
            sample, neuron, sequential = self.locate(np.array([row]), step, role.spec.size)
            t = float((sequential[0] + 1) * self.protocol.dt)
            if found is None or t < found[3]:
                found = (role.spec.name, int(neuron[0]), int(sample[0]), t)
        return found

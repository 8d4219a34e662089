"""The NumPy oracle of whole sample periods, step by step: forward dynamics, relaxation, plasticity.

:func:`arsim.oracle.relax` starts from an instantaneous feedforward sweep whose x̂ and f' are
then held. This module steps through a whole sample period of ``P`` steps of ``dt`` instead, so
that the feedforward pass can itself be a dynamical process and overlap the relaxation:

- **forward** ``"instant"``: the sweep of :func:`arsim.oracle.forward` at the start of step 0;
  ``"leaky"``: every non-input layer integrates ``τ_f dx̂/dt = −x̂ + f(a)``,
  ``a = Σ_parents W x̂_parent + b``, by Euler at ``η_f = dt/τ_f`` while its forward gate is open,
  and ``f' = f'(a)`` at the current ``a``; all layers read the previous step's values (parallel
  Euler), so the layer ``k`` hops above the input is reached after ``k`` steps;
- **relaxation**: every hidden layer (and the input layers where they relax)
  ``x ← x + g η_x (−x + Σ_c B_c (x_c ⊙ d_c))`` with the gain ``g`` of its window, all from the
  step's start (``order = "parallel"``) or one after the other from the top down, each reading
  the activities the layers above got in this step (``"top-down"``); it starts (``x = x̂``,
  or 0) at the start of its onset step, reading x̂ as the forward dynamics left it then;
  ``d_c`` is f' as stored (``"stored"``), f' at the pre-activation computed from the current
  relaxing activities of the layer's parents (``"current"``), or f' of the upper layer's own
  current activity (``"upper"``);
- **output**: clamped to the loss gradient of its current x̂ at every step, or an error unit
  ``τ_e dx_L/dt = −x_L + ∂L/∂x̂_L``;
- **memory** of the hidden layers while their forward gate is closed: ``"ideal"`` holds x̂ and
  f', ``"trace"`` decays both by ``1 − dt/τ_m`` per step, ``"two-compartment"`` moves x̂ by
  ``dt/τ_m (x − x̂)`` per step;
- **plasticity** ``W -= η Σ_batch δ pᵀ`` with ``δ = x_target ⊙ d'`` (``d'`` f' as stored, at the
  pre-activation from the parents' current activities, or of the target's current activity:
  ``update_derivative_at``) and ``p`` the source's stored x̂ (``"stored"``) or its current
  activity (``"current"``; a clamped input layer's is its stimulus): once at the
  plasticity step, or continuously, by ``η/K`` at the end of every step of a window of ``K``
  steps.

Every step reads the state at its start and writes the state at its end; an update at the
plasticity step acts at the start of that step, before the step's dynamics. A period's state
(x̂, f', x) carries into the next period unless ``reset``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from arsim import operators
from arsim.activations import Array, activate, output_gradient
from arsim.components import derivative, memory, plasticity, relaxation
from arsim.components import forward as forward_dynamics
from arsim.components.spikes import SpikeChannels
from arsim.operators import pre_activation
from arsim.oracle import forward, split_stimulus
from arsim.params import Params, phase_shift
from arsim.spec import ModelSpec, ProtocolSpec
from arsim.spec.schedule import Schedule


@dataclass(frozen=True)
class PeriodTiming:
    """What happens at every step of one sample period (dimensionless, in steps of ``dt``).

    Attributes
    ----------
    steps : int
        Steps ``P`` of the period.
    eta_x : ndarray, shape (n_layers,)
        ``dt/τ`` of every layer's relaxation.
    relax_gain : ndarray, shape (P, n_layers)
        Relaxation gain of every layer at every step (0 outside its window).
    onset : ndarray of int, shape (n_layers,)
        Step at whose start a hidden layer's ``x`` starts (``start``); with the instant sweep the
        start happens at the sweep, whatever this says.
    forward : {'instant', 'leaky'}
        Forward dynamics.
    eta_f : ndarray, shape (n_layers,), optional
        ``dt/τ_f`` of every layer (leaky forward dynamics).
    forward_gain : ndarray, shape (P, n_layers), optional
        Forward gate of every layer at every step (leaky forward dynamics; 0 holds x̂ and f').
    reset : bool
        Non-input x̂, f' and x start every period from rest (0); otherwise they carry over.
    start : {'feedforward', 'zero'}
        A hidden layer's x at its onset: its x̂ then, or 0.
    eta_error : float, optional
        ``dt/τ_e`` of the output's error unit; None clamps the output at every step.
    memory : {'ideal', 'trace', 'two-compartment'}
        What the hidden layers' x̂ and f' do while their forward gate is closed.
    eta_memory : float
        ``dt/τ_m`` of the trace or two-compartment memory.
    plasticity_step : int, optional
        Step at whose start the weights change (``P``: at the end of the period, the next
        sample's tick); None with continuous plasticity.
    continuous : (int, int), optional
        Steps ``[first, stop)`` at the end of each of which the weights change by ``η/K`` of the
        rule, ``K = stop − first``.
    order : {'parallel', 'top-down'}
        Whether a step updates the relaxing layers from the step's start, or from the top down
        reading the values the layers above got in the step.
    input_relaxes : bool
        The input layers relax like hidden layers (from the stimulus, their x̂).
    relax_span : (int, int)
        Steps ``[first, stop)`` from the earliest relaxation window's start to the latest's end;
        spiking feedback is sent at every step of it
        (:class:`~arsim.components.spikes.SpikeChannels`).
    """

    steps: int
    eta_x: Array
    relax_gain: Array
    onset: Array
    forward: str = "instant"
    eta_f: Array | None = None
    forward_gain: Array | None = None
    reset: bool = True
    start: str = "feedforward"
    eta_error: float | None = None
    memory: str = "ideal"
    eta_memory: float = 0.0
    plasticity_step: int | None = None
    continuous: tuple[int, int] | None = None
    order: str = "parallel"
    input_relaxes: bool = False
    relax_span: tuple[int, int] = (0, 0)


@dataclass
class PeriodState:
    """Activities of every layer (``ModelSpec.layers`` order), each ``(batch, n)``.

    Attributes
    ----------
    xhat, fp, x : list of ndarray
        Feedforward activity, stored f' (input layers: ones) and relaxing activity (input
        layers: the stimulus; output: the clamp or error unit).
    """

    xhat: list[Array]
    fp: list[Array]
    x: list[Array]

    def copy(self) -> PeriodState:
        """A deep copy."""
        return PeriodState(*([a.copy() for a in arrays] for arrays in (self.xhat, self.fp, self.x)))


@dataclass
class PeriodResult:
    """Outcome of :func:`run_period`.

    Attributes
    ----------
    params : Params
        Weights after the period's plasticity.
    state : PeriodState
        State at the end of the period.
    history : list of PeriodState
        ``history[k]``: the state at the start of step ``k`` (after the presentation, and the
        sweep of the instant kind), and ``history[P]`` at the end, when requested.
    changes : list of ndarray
        The weight change ``ΔW_c`` the period applied, per connection (summed over its steps).
    """

    params: Params
    state: PeriodState
    history: list[PeriodState] = field(default_factory=list)
    changes: list[Array] = field(default_factory=list)


def rest_state(model: ModelSpec, batch: int) -> PeriodState:
    """Every layer at rest: x̂, f' and x are 0 (a network that has seen nothing)."""
    zeros = [np.zeros((batch, layer.size)) for layer in model.layers]
    return PeriodState(zeros, [z.copy() for z in zeros], [z.copy() for z in zeros])


class _Period:
    """One sample period of a minibatch: the step loop of :func:`run_period`."""

    def __init__(self, model, params, inputs, targets, timing, rates, variants, channels=None):
        if any(layer.equations or layer.drive for layer in model.layers):
            raise ValueError(
                f"{model.source}: the period oracle does not state a layer's own equations"
            )
        self.model, self.timing, self.targets = model, timing, targets
        self.channels, self.spike_step = channels, None
        self.params = params.copy()
        self.rates = rates
        self.ops = operators.build(model)
        self.n_inputs = len(model.inputs)
        self.out = len(model.layers) - 1
        self.relaxing = [
            k
            for k, layer in enumerate(model.layers)
            if model.relaxes(layer.name) or (timing.input_relaxes and k < self.n_inputs)
        ]
        if timing.order == "top-down":  # the layers above first (reverse topological order)
            self.relaxing.reverse()
        self.sources = [model.index(c.source) for c in model.connections]
        self.target_of = [model.index(c.target) for c in model.connections]
        self.derivative_at, self.update_uses, self.update_derivative_at = variants
        self.inputs = inputs
        self.stimulus = split_stimulus(model, inputs)
        self.changes = [np.zeros_like(w) for w in params.W]

    # -- the pieces of one step ----------------------------------------------------------------
    def present(self, state: PeriodState) -> None:
        """Show the stimulus and target; the instant kind sweeps, and the hidden x start."""
        timing = self.timing
        for k, part in enumerate(self.stimulus):
            state.xhat[k], state.x[k], state.fp[k] = part, part, np.ones_like(part)
        if timing.forward == "instant":
            sweep = forward(self.model, self.params, self.inputs)
            for k in range(self.n_inputs, len(self.model.layers)):
                incoming = self.model.incoming(self.model.layers[k].name)
                state.xhat[k], state.fp[k] = sweep.xhat[k], sweep.fp[incoming[0]]
            for k in self.relaxing:
                state.x[k] = self._started(state, k)
        if timing.eta_error is None:
            state.x[self.out] = self._output_gradient(state.xhat[self.out])

    def show(self, state: PeriodState, inputs: Array, targets: Array) -> None:
        """A stimulus stream changes what is shown within the period.

        The input layers take the new stimulus; the output keeps its x̂ and its clamp
        follows the new target, ``x = output_gradient(x̂_L, T)`` (an error unit included).
        """
        self.inputs, self.targets = inputs, targets
        self.stimulus = split_stimulus(self.model, inputs)
        for k, part in enumerate(self.stimulus):
            state.xhat[k], state.x[k] = part, part
        state.x[self.out] = self._output_gradient(state.xhat[self.out])

    def _started(self, state: PeriodState, layer: int) -> Array:
        if self.timing.start == "feedforward":
            return state.xhat[layer].copy()
        return np.zeros_like(state.xhat[layer])

    def _output_gradient(self, xhat_out: Array) -> Array:
        model = self.model
        return output_gradient(model.loss, xhat_out, self.targets, model.loss_scale)

    def derivative(self, state: PeriodState, c: int) -> Array:
        """``d_c``: the f' that multiplies connection ``c``'s top-down signal."""
        target = self.target_of[c]
        return self._derivative_at(state, target, self.derivative_at[c])

    def _derivative_at(self, state: PeriodState, target: int, where: str) -> Array:
        """The f' of layer ``target``: stored, at the current pre-activation, or of its x."""
        return derivative.fprime(
            np, where, self.model, self.ops, self.params, target, state.x, state.fp[target]
        )

    def step(self, state: PeriodState, k: int) -> PeriodState:
        """The state at the end of step ``k`` from the state at its start."""
        timing, model = self.timing, self.model
        new = state.copy()
        forward_open = np.zeros(len(model.layers), dtype=bool)
        if timing.forward == "leaky":
            forward_open = timing.forward_gain[k] > 0
            for layer in range(self.n_inputs, len(model.layers)):
                if not forward_open[layer]:
                    continue
                a = pre_activation(model, self.ops, self.params, layer, state.xhat)
                value, derivative = activate(model, layer, a)
                rate = timing.forward_gain[k, layer] * timing.eta_f[layer]
                new.xhat[layer] = forward_dynamics.leaky_step(np, state.xhat[layer], value, rate)
                new.fp[layer] = derivative
            for layer in self.relaxing:
                if k == timing.onset[layer]:
                    state.x[layer] = new.x[layer] = self._started(state, layer)
        # top-down: a layer reads the x the layers above got in this step (new.x, filled in order)
        read = PeriodState(state.xhat, state.fp, new.x) if timing.order == "top-down" else state
        first, stop = timing.relax_span
        sending = self.channels is not None and first <= k < stop  # every step of the span
        self.spike_step = k - first if sending else None
        for layer in self.relaxing:
            gain = timing.relax_gain[k, layer]
            if gain or sending:
                top_down = self._top_down(read, layer)
            if gain:
                drive = relaxation.drive(np, state.x[layer], top_down)
                rate = gain * timing.eta_x[layer]
                new.x[layer] = relaxation.euler_step(np, state.x[layer], rate, drive)
            if not forward_open[layer] and layer >= self.n_inputs:
                self._remember(state, new, layer)
        if timing.eta_error is not None:
            gradient = self._output_gradient(state.xhat[self.out])
            new.x[self.out] = forward_dynamics.error_unit_step(
                np, state.x[self.out], gradient, timing.eta_error
            )
        else:
            new.x[self.out] = self._output_gradient(new.xhat[self.out])
        return new

    def _top_down(self, state: PeriodState, layer: int) -> Array:
        total = None
        for c in self.model.outgoing(self.model.layers[layer].name):
            signal = state.x[self.target_of[c]]
            if self.model.connections[c].derivative:
                signal = signal * self.derivative(state, c)
            if self.spike_step is not None:
                signal = self.channels.send(c, signal, self.spike_step)
            term = self.ops[c].backward(signal, self.params.feedback(c))
            total = term if total is None else total + term
        return total

    def _remember(self, state: PeriodState, new: PeriodState, layer: int) -> None:
        """Memory of a hidden layer whose forward gate is closed."""
        timing = self.timing
        if timing.memory != "ideal":
            new.xhat[layer], new.fp[layer] = memory.hold(
                np,
                timing.memory,
                state.xhat[layer],
                state.fp[layer],
                state.x[layer],
                timing.eta_memory,
            )

    def learn(self, state: PeriodState, fraction: float = 1.0) -> None:
        """``W -= fraction · η Σ δ pᵀ`` (learned ψ, biases likewise) from ``state``."""
        rate, feedback_rate = self.rates
        params = self.params
        for c, connection in enumerate(self.model.connections):
            target, source = self.target_of[c], self.sources[c]
            fprime = self._derivative_at(state, target, self.update_derivative_at[c])
            delta = state.x[target] * fprime
            pre = plasticity.presynaptic(self.update_uses[c], state.x[source], state.xhat[source])
            change = plasticity.apply_rule(
                np,
                self.ops[c],
                params.W[c],
                params.psi[c] if connection.learns_feedback else None,
                params.b[c],
                delta,
                pre,
                fraction * rate,
                fraction * feedback_rate,
            )
            self.changes[c] = self.changes[c] - fraction * rate * change


def run_period(
    model: ModelSpec,
    params: Params,
    inputs: Array,
    targets: Array,
    timing: PeriodTiming,
    rates: tuple[float, float],
    state: PeriodState | None = None,
    derivative_at: list[str] | None = None,
    update_uses: list[str] | None = None,
    update_derivative_at: list[str] | None = None,
    keep_history: bool = False,
    stream=None,
    channels=None,
) -> PeriodResult:
    """Simulate one sample period of a minibatch, from presentation to plasticity.

    Parameters
    ----------
    model : ModelSpec
        The network.
    params : Params
        Weights at the start of the period (not modified).
    inputs, targets : ndarray, shape (batch, n_in) and (batch, n_out)
        The minibatch, presented at the start of step 0 for the whole period.
    timing : PeriodTiming
        The steps of the period.
    rates : (float, float)
        Learning rates of W (and biases) and of a learned ψ for this minibatch (the batch
        reduction already applied, as ``Schedule.learning_rates``).
    state : PeriodState, optional
        The previous period's final state (ignored with ``timing.reset``; rest by default).
    derivative_at, update_uses, update_derivative_at : list of str, optional
        Per connection (:data:`~arsim.spec.schema.DERIVATIVE_AT`,
        :data:`~arsim.spec.schema.UPDATE_USES`,
        :data:`~arsim.spec.schema.UPDATE_DERIVATIVE_AT`); the model's connections' by default.
    keep_history : bool
        Keep the state at the start of every step.
    stream : callable, optional
        ``stream(k)``: the inputs and targets a stimulus stream shows from the start of step
        ``k ≥ 1`` on, or None where they do not change (:func:`simulate_periods`).
    channels : SpikeChannels, optional
        The spiking top-down signals (:class:`~arsim.components.spikes.SpikeChannels`),
        carried from one period to the next (their random streams go on).

    Returns
    -------
    PeriodResult
    """
    variants = (
        derivative_at or [c.derivative_at for c in model.connections],
        update_uses or [c.update_uses for c in model.connections],
        update_derivative_at or [c.update_derivative_at for c in model.connections],
    )
    period = _Period(model, params, inputs, targets, timing, rates, variants, channels)
    batch = len(inputs)
    state = rest_state(model, batch) if state is None or timing.reset else state.copy()
    period.present(state)
    history = [state.copy()] if keep_history else []
    first, stop = timing.continuous or (0, 0)
    for k in range(timing.steps):
        if k == timing.plasticity_step:
            period.learn(state)
        shown = stream(k) if stream is not None and k > 0 else None
        if shown is not None:
            period.show(state, *shown)
        state = period.step(state, k)
        if first <= k < stop:
            period.learn(state, 1.0 / (stop - first))
        if keep_history:
            history.append(state.copy())
    if timing.plasticity_step == timing.steps:
        period.learn(state)
    return PeriodResult(period.params, state, history, period.changes)


def timing_of(model: ModelSpec, protocol: ProtocolSpec, shift: int = 0) -> PeriodTiming:
    """The :class:`PeriodTiming` a protocol gives a model (:class:`~arsim.spec.Schedule`).

    ``shift`` moves the phase boundary by that many steps (:meth:`Schedule.shifted`).
    """
    schedule = Schedule(model, protocol).shifted(shift)
    continuous = schedule.continuous_steps
    memory_tau = model.memory.tau
    return PeriodTiming(
        steps=schedule.sample_steps,
        eta_x=np.array(schedule.eta_x_per_layer),
        relax_gain=schedule.gains,
        onset=np.array([schedule.onset_step(layer.name) for layer in model.layers]),
        forward=protocol.forward.kind,
        eta_f=np.array(schedule.eta_f_per_layer),
        forward_gain=schedule.forward_gains,
        reset=protocol.forward.reset,
        start=protocol.relaxation_start,
        eta_error=schedule.eta_error,
        memory=model.memory.kind,
        eta_memory=protocol.dt / memory_tau if memory_tau else 0.0,
        plasticity_step=None if continuous else schedule.plasticity_step,
        continuous=continuous,
        order=protocol.relaxation_order,
        input_relaxes=protocol.relaxation_input == "relaxes",
        relax_span=schedule.relaxation_span(),
    )


def simulate_periods(
    model: ModelSpec,
    protocol: ProtocolSpec,
    params: Params,
    inputs: Array,
    targets: Array,
    keep_history: bool = False,
    seed_key: tuple[int, ...] = (0,),
    spike_log=None,
) -> tuple[Params, list[PeriodResult]]:
    """Consecutive minibatches of ``protocol.batch_size`` samples, one sample period each.

    A period's final state carries into the next unless the forward dynamics reset it. The
    samples must fill whole minibatches. With ``[phases] jitter``, minibatch ``m`` has the
    phase boundary shifted by :func:`~arsim.params.phase_shift` of ``(*seed_key, m)``.
    With a stimulus stream (``[stimulus] dwell``) the periods follow the stream instead
    (:func:`_stream_periods`). ``spike_log`` (a :class:`arsim.spiketrains.SpikeLog`) receives
    the spikes of spiking feedback, as the dense mode's does. Returns the final weights and
    every period.
    """
    if protocol.dwell > 0:
        return _stream_periods(model, protocol, params, (inputs, targets), keep_history)
    schedule = Schedule(model, protocol)
    seed, *key = seed_key
    batch = protocol.batch_size
    if len(inputs) % batch:
        raise ValueError(f"{len(inputs)} samples do not fill minibatches of {batch}")
    results, state = [], None
    channels = SpikeChannels.of(model, protocol.spikes, protocol.dt, seed_key)
    where = [0, 0]  # the period's first sample and first relaxation step
    if channels is not None and spike_log is not None:
        channels.listener = lambda c, n, spikes: spike_log.add(c, where[0], where[1] + n, spikes)
    for start in range(0, len(inputs), batch):
        part = slice(start, start + batch)
        rates = schedule.learning_rates(batch)
        shift = phase_shift(seed, schedule.jitter_steps, *key, start // batch)
        timing = timing_of(model, protocol, shift)
        where[:] = start, timing.relax_span[0]
        result = run_period(
            model,
            params,
            inputs[part],
            targets[part],
            timing,
            rates,
            state,
            keep_history=keep_history,
            channels=channels,
        )
        results.append(result)
        params, state = result.params, result.state
    return params, results


def _stream_periods(model, protocol, params, samples, keep_history):
    """The sample periods of a run whose stimulus is a stream (``[stimulus] dwell``).

    ``samples`` are the inputs and targets; the stream shows them in order, a minibatch at a time
    (:meth:`~arsim.spec.Schedule.stream_samples`); every period presents what it shows at the
    period's first step and follows its changes step by step. The state carries from one
    period into the next unless the forward dynamics reset it. Returns the final weights and
    every period.
    """
    inputs, targets = samples
    schedule = Schedule(model, protocol)
    timing, period_steps = timing_of(model, protocol), schedule.sample_steps
    rates = schedule.learning_rates(protocol.batch_size)
    results, state = [], None
    for period in range(schedule.stream_periods(len(inputs))):
        start = period * period_steps
        shown = [schedule.stream_samples(start, len(inputs))]

        def stream(k: int, start=start, shown=shown):
            now = schedule.stream_samples(start + k, len(inputs))
            if np.array_equal(now, shown[0]):
                return None
            shown[0] = now
            return inputs[now], targets[now]

        first = shown[0]
        result = run_period(
            model,
            params,
            inputs[first],
            targets[first],
            timing,
            rates,
            state,
            keep_history=keep_history,
            stream=stream,
        )
        results.append(result)
        params, state = result.params, result.state
    return params, results

"""The NumPy oracle: exact backprop, and AR with the same Euler steps as the simulator.

Everything here works on a batch: activities have shape ``(batch, n)`` and the weight matrix
``W[c]`` of connection ``c`` has shape ``(n_target, n_source)``. The network is any directed
acyclic graph of layers (``ModelSpec.layers`` in topological order, ``ModelSpec.connections``
its edges); a chain is the special case where connection ``l`` joins layer ``l`` to ``l + 1``.
This is the reference that tests and metrics compare the Brian2 network against; it shares with
the simulator only the activation table, the connection operators and the parameters
(:mod:`arsim.params`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from arsim import operators
from arsim.activations import activate, loss_value, output_gradient
from arsim.params import Params, init_params  # noqa: F401  (init_params: oracle.init_params)
from arsim.spec import ModelSpec
from arsim.spec.schedule import Schedule

Array = np.ndarray


@dataclass
class Forward:
    """Result of the feedforward sweep.

    Attributes
    ----------
    xhat : list of ndarray
        Feedforward activities ``x̂`` of every layer (``ModelSpec.layers`` order),
        ``(batch, n)``; for the input layers, their slices of the stimulus.
    pre : list of ndarray
        Per connection ``c``: the pre-activation of its target,
        ``a = Σ_{incoming c'} W_c' x̂_source(c') + b`` (the same array for every connection into
        one layer; in a chain, ``pre[l]`` is layer ``l + 1``'s).
    fp : list of ndarray
        Per connection ``c``: ``f'`` of its target at that pre-activation (1 for a softmax
        output).
    ops : list or None
        The operators of the connections (:mod:`arsim.operators`) as the sweep left them (a
        max-pooling's argmax); None: fresh ones (enough for the weight gradients).
    """

    xhat: list[Array]
    pre: list[Array]
    fp: list[Array]
    ops: list | None = None


def split_stimulus(model: ModelSpec, stimuli: Array) -> list[Array]:
    """The activities of the input layers (the first layers) in a batch of stimuli.

    A stimulus is the input layers' activities concatenated in their order
    (``ModelSpec.input_slices``); with one input layer it is that layer's activity.
    """
    stimuli = np.asarray(stimuli)
    if not np.issubdtype(stimuli.dtype, np.floating):
        stimuli = stimuli.astype(float)
    slices = model.input_slices()
    return [stimuli] if len(slices) == 1 else [stimuli[:, part] for part in slices]


def forward(model: ModelSpec, params: Params, inputs: Array, derivatives: bool = True) -> Forward:
    """Feedforward sweep of a batch of stimuli ``(batch, n_in)`` in topological order.

    The stimulus is the input layers' activities concatenated (``ModelSpec.input_slices``);
    every other layer sums its parents' contributions ``W_c x̂_source`` (in connection order)
    and its bias (:func:`arsim.operators.pre_activation`). The arithmetic is the float type of
    the stimuli and the weights (float64 stimuli and weights: float64). Without
    ``derivatives`` the f' are not computed (None).
    """
    xhat: list[Array | None] = [None] * len(model.layers)
    for index, part in enumerate(split_stimulus(model, inputs)):
        xhat[index] = part
    pre: list[Array | None] = [None] * len(params.W)
    fp: list[Array | None] = [None] * len(params.W)
    ops = operators.build(model)
    for index, layer in enumerate(model.layers):
        incoming = model.incoming(layer.name)
        if not incoming:
            continue
        a = operators.pre_activation(model, ops, params, index, xhat)
        xhat[index], derivative = activate(model, index, a, derivatives)
        for c in incoming:
            pre[c], fp[c] = a, derivative
    return Forward(xhat, pre, fp, ops)


def loss(model: ModelSpec, params: Params, inputs: Array, targets: Array) -> Array:
    """Loss of each sample of the batch, shape ``(batch,)``."""
    output = forward(model, params, inputs, derivatives=False).xhat[-1]
    return loss_value(model.loss, output, targets, model.loss_scale)


@dataclass
class Gradients:
    """Gradients of the batch loss (summed over the batch).

    Attributes
    ----------
    activity : list of ndarray
        ``∂L/∂x̂`` for every layer (``ModelSpec.layers`` order; for a softmax output, the
        gradient w.r.t. the logits), each ``(batch, n)``.
    W : list of ndarray
        ``∂L/∂W_c`` per connection, shapes as ``Params.W``.
    b : list of ndarray or None
        ``∂L/∂b_c`` where the connection has a bias.
    forward : Forward or None
        The feedforward sweep they were computed from.
    """

    activity: list[Array]
    W: list[Array]
    b: list[Array | None]
    forward: Forward | None = None


def update_factors(
    model: ModelSpec, fwd: Forward, top_down: list[Array]
) -> list[tuple[Array, Array]]:
    """The two factors of every connection's weight update, per sample.

    For connection ``c`` from layer ``i`` to layer ``j``: ``(δ_j, x̂_i)`` with
    ``δ_j = x_j ⊙ f'_j``, where ``top_down[j]`` is the activity of layer ``j`` that plays
    ``∂L/∂x̂_j`` (the exact gradient for backprop, the relaxed activity for AR). The update is
    ``ΔW_c = −η Σ_batch δ_j x̂_iᵀ`` (:func:`weight_gradients`) for a dense connection; a
    convolution contracts the same factors over its windows (shared weights), so for models
    with conv or maxpool connections the per-sample outer-product comparison
    (``metrics.sample_metrics``) does not apply and is skipped.
    """
    factors = []
    for c, connection in enumerate(model.connections):
        target, source = model.index(connection.target), model.index(connection.source)
        factors.append((top_down[target] * fwd.fp[c], fwd.xhat[source]))
    return factors


def weight_gradients(
    model: ModelSpec, fwd: Forward, top_down: list[Array], params: Params
) -> tuple[list, list]:
    """Weight and bias gradients ``Σ_batch δ_j x̂_iᵀ`` and ``Σ_batch δ_j`` per connection.

    ``δ_j`` and ``x̂_i`` are the factors of :func:`update_factors`.
    """
    grads_w, grads_b = [], []
    ops = fwd.ops or operators.build(model)
    for c, (delta, presynaptic) in enumerate(update_factors(model, fwd, top_down)):
        grads_w.append(ops[c].weight_gradient(delta, presynaptic))
        grads_b.append(None if params.b[c] is None else ops[c].bias_gradient(delta))
    return grads_w, grads_b


def backprop(
    model: ModelSpec, params: Params, inputs: Array, targets: Array, input_layers: bool = True
) -> Gradients:
    """Exact gradients of the batch loss ``Σ_batch L`` by backpropagation (always with Wᵀ).

    In reverse topological order, ``∂L/∂x̂_i = Σ_{c: i → j} (∂L/∂x̂_j ⊙ f'_j) W_c``. Without
    ``input_layers`` the input layers' ``∂L/∂x̂`` (which no weight gradient needs) is left
    None.
    """
    fwd = forward(model, params, inputs)
    activity: list[Array | None] = [None] * len(model.layers)
    activity[-1] = output_gradient(model.loss, fwd.xhat[-1], targets, model.loss_scale)
    for index in range(len(model.layers) - 2, -1, -1):
        if not input_layers and not model.incoming(model.layers[index].name):
            continue
        for c in model.outgoing(model.layers[index].name):
            target = model.index(model.connections[c].target)
            signal = activity[target] * fwd.fp[c]
            term = fwd.ops[c].backward(signal, operators.as_feedback(params.W[c]))
            activity[index] = term if activity[index] is None else activity[index] + term
    grads_w, grads_b = weight_gradients(model, fwd, activity, params)
    return Gradients(activity, grads_w, grads_b, fwd)


@dataclass
class Relaxation:
    """Result of an AR relaxation.

    Attributes
    ----------
    forward : Forward
        The feedforward sweep the relaxation started from.
    x : list of ndarray
        Activities of every layer at the end of the relaxation (the input layers' are their
        stimuli, not relaxed; the output's the clamped loss gradient).
    history : list of list of ndarray or None
        ``history[n][l]``: activity of layer ``l`` after ``n`` steps (``n = 0`` is the start),
        when requested.
    W, b : list
        Weight and bias gradients the AR update uses, ``Σ_batch (x_j ⊙ f'_j) x̂_iᵀ`` per
        connection ``i → j``.
    steps : ndarray of int
        Steps each sample relaxed (fewer than asked where it converged to the tolerance).
    """

    forward: Forward
    x: list[Array]
    history: list[list[Array]] | None
    W: list[Array]
    b: list[Array | None]
    steps: Array


def relax(
    model: ModelSpec,
    params: Params,
    inputs: Array,
    targets: Array,
    steps: int,
    eta_x: float | list[float],
    keep_history: bool = False,
    start: str = "feedforward",
    delays: list[int] | None = None,
    tolerance: float = 0.0,
    trace: tuple[float, int, int] | None = None,
    gains: Array | None = None,
    stream: tuple[Array, Array, Array] | None = None,
    soma: tuple[float, int, int] | None = None,
) -> Relaxation:
    """AR relaxation by forward Euler, all layers in parallel.

    Every hidden layer ``i`` (neither input nor output) relaxes towards the summed top-down
    input of its children, ``x_i ← x_i + η_x (−x_i + Σ_{c: i → j} B_c (x_j ⊙ f'_j))``, where
    f' is dropped when connection ``c``'s ``derivative`` is false; the output layer is clamped
    to the loss gradient.

    Parameters
    ----------
    model : ModelSpec
        The network (activations, loss, per-connection derivative switch).
    params : Params
        Weights; ψ where the feedback is not the transpose.
    inputs, targets : ndarray, shape (batch, n_in) and (batch, n_out)
        The minibatch (stimuli: the input layers' activities concatenated).
    steps : int
        Number of Euler steps.
    eta_x : float or list of float
        ``dt / τ`` (dimensionless), or one value per layer (``Schedule.eta_x_per_layer``).
    keep_history : bool
        Keep every step's activities.
    start : {'feedforward', 'zero'}
        Hidden activities start at ``x̂`` (AR) or at 0.
    delays : list of int, optional
        Feedback delay of every connection in steps: at step ``n`` the source of connection
        ``c`` receives the signal of its target as it was after ``n − d_c`` steps (after 0
        steps while ``n < d_c``).
    tolerance : float
        When positive, a sample stops relaxing at the first step where every hidden neuron
        has ``|−x + input| < tolerance``.
    trace : (float, int, int), optional
        Eligibility-trace memory ``(ρ, offset, final)``: the hidden layers' stored x̂ and f'
        are multiplied by ρ = 1 − dt/τ_m every step since the sweep, so relaxation step ``n``
        uses f'·ρ^(offset + n) and the weight update x̂·ρ^final and f'·ρ^final (see
        :func:`trace_schedule`).
    gains : ndarray, shape (steps, n_layers), optional
        Relaxation gain of every layer at every step (an oscillation's gate,
        ``Schedule.gate``): step ``n`` of layer ``l`` moves by ``gains[n, l] · η_x``.
    stream : (ndarray, ndarray, ndarray), optional
        A stimulus stream that changes during the relaxation: ``(step_targets,
        update_inputs, update_targets)``; the output is clamped to the gradient for
        ``step_targets[n]`` at step ``n`` (its x̂ stays that of the sweep), and the weight
        update sees the input ``update_inputs`` and the clamp for ``update_targets``.
    soma : (float, int, int), optional
        Two-compartment memory ``(η_c, offset, final)``: a hidden layer's x̂ (the soma) moves
        by ``η_c (x − x̂)`` every step from the sweep to the plasticity, with ``x`` its start
        value for ``offset`` steps, then the relaxing activity, then its final value until step
        ``final``; the weight update reads that x̂ (see :func:`memory_schedule`).
    """
    fwd = forward(model, params, inputs)
    graph = _Graph(model)
    out = len(model.layers) - 1
    x = list(fwd.xhat)
    for k in graph.relaxing:
        x[k] = fwd.xhat[k].copy() if start == "feedforward" else np.zeros_like(fwd.xhat[k])
    x[out] = output_gradient(model.loss, fwd.xhat[out], targets, model.loss_scale)
    history = [list(x)] if keep_history else None
    feedback = [params.feedback(c) for c in range(len(params.W))]
    etas = list(eta_x) if np.ndim(eta_x) else [eta_x] * len(model.layers)
    decay, offset, _ = trace or (1.0, 0, 0)
    delays = delays or [0] * len(params.W)
    sent = [[] for _ in params.W]  # signals sent down each connection, step by step
    active = np.ones(len(fwd.xhat[out]), dtype=bool)
    taken = np.full(len(active), steps)
    somata = None if soma is None else _Somata(fwd, x, graph, soma)
    for step in range(steps):
        if somata is not None:
            somata.step(x)
        if stream is not None:
            x[out] = output_gradient(model.loss, fwd.xhat[out], stream[0][step], model.loss_scale)
        new = list(x)
        drive = _drives(
            model, graph, fwd, x, feedback, sent, delays, step, decay ** (offset + step)
        )
        if tolerance > 0 and drive:
            _stop_converged(drive, tolerance, step, active, taken)
        for layer, d in drive.items():
            gain = 1.0 if gains is None else gains[step, layer]
            new[layer] = x[layer] + gain * etas[layer] * d * active[:, None]
        x = new
        if keep_history:
            history.append(list(x))
    stored = fwd if somata is None else somata.settle(fwd, x, steps)
    if stream is not None:  # what the plasticity sees: the stream's input and clamp then
        shown = split_stimulus(model, stream[1])
        stored = Forward([*shown, *stored.xhat[len(shown) :]], fwd.pre, fwd.fp, fwd.ops)
        x[out] = output_gradient(model.loss, fwd.xhat[out], stream[2], model.loss_scale)
    if trace is not None:
        stored = _traced(graph, fwd, stored, trace)
    grads_w, grads_b = weight_gradients(model, stored, x, params)
    return Relaxation(fwd, x, history, grads_w, grads_b, taken)


class _Graph:
    """Indices of a model's graph that the relaxation loop reads at every step.

    Attributes
    ----------
    relaxing : list of int
        Layers that relax (neither input nor output), in topological order.
    outgoing : dict of int to tuple of int
        Connections out of each relaxing layer, ascending.
    target : list of int
        Target layer of every connection.
    into_hidden : list of bool
        Whether each connection's target relaxes (its stored f' is a hidden layer's).
    """

    def __init__(self, model: ModelSpec):
        names = [layer.name for layer in model.layers]
        self.relaxing = [k for k, name in enumerate(names) if model.relaxes(name)]
        self.outgoing = {k: model.outgoing(names[k]) for k in self.relaxing}
        self.target = [names.index(c.target) for c in model.connections]
        self.into_hidden = [target in self.relaxing for target in self.target]


def _drives(
    model: ModelSpec,
    graph: _Graph,
    fwd: Forward,
    x: list[Array],
    feedback: list[Array],
    sent: list[list[Array]],
    delays: list[int],
    step: int,
    memory: float,
) -> dict[int, Array]:
    """``−x_i + Σ_{c: i → j} B_c (x_j ⊙ f'_j)`` of every relaxing layer ``i`` at one step.

    ``sent[c]`` gets step ``step``'s signal of connection ``c`` appended, and the top-down input
    reads the one sent ``delays[c]`` steps before (the first while fewer were sent); ``memory``
    multiplies the stored f' of a hidden target (the trace's decay, 1 for ideal memory).
    """
    drive = {}
    for layer in graph.relaxing:
        top_down = None
        for c in graph.outgoing[layer]:
            signal = x[graph.target[c]]
            if model.connections[c].derivative:
                hidden = graph.into_hidden[c]
                signal = signal * fwd.fp[c] * (memory if hidden else 1)
            sent[c].append(signal)
            signal = sent[c][max(0, step - delays[c])]
            term = fwd.ops[c].backward(signal, feedback[c])
            top_down = term if top_down is None else top_down + term
        drive[layer] = -x[layer] + top_down
    return drive


def _stop_converged(
    drive: dict[int, Array], tolerance: float, step: int, active: Array, taken: Array
) -> None:
    """Stop the samples whose every hidden neuron has ``|drive| < tolerance`` at ``step``.

    ``active`` (bool per sample) and ``taken`` (steps relaxed per sample) are updated in place.
    """
    worst = np.max([np.abs(d).max(axis=1) for d in drive.values()], axis=0)
    converged = active & (worst < tolerance)
    taken[converged] = step
    active &= ~converged


class _Somata:
    """The somata's x̂ of the hidden layers under two-compartment memory (see :func:`relax`).

    Parameters
    ----------
    fwd : Forward
        The sweep (the somata start at its x̂).
    x : list of ndarray
        The activities the relaxation starts from.
    graph : _Graph
        The relaxing layers.
    soma : (float, int, int)
        ``(η_c, offset, final)`` as for :func:`relax`.
    """

    def __init__(self, fwd: Forward, x: list[Array], graph: _Graph, soma: tuple[float, int, int]):
        self.coupling, self.offset, self.final = soma
        before = min(self.offset, self.final)
        self.held = {k: _drift(fwd.xhat[k], x[k], self.coupling, before) for k in graph.relaxing}

    def step(self, x: list[Array]) -> None:
        """One Euler step of every soma toward the current activities ``x``."""
        self.held = {k: h + self.coupling * (x[k] - h) for k, h in self.held.items()}

    def settle(self, fwd: Forward, x: list[Array], steps: int) -> Forward:
        """The sweep with the somata's x̂ at the plasticity, after ``steps`` relaxation steps.

        The somata drift toward the final ``x`` until the plasticity.
        """
        rest = max(self.final - self.offset - steps, 0)
        somata = list(fwd.xhat)
        for k, h in self.held.items():
            somata[k] = _drift(h, x[k], self.coupling, rest)
        return Forward(somata, fwd.pre, fwd.fp, fwd.ops)


def _traced(graph: _Graph, fwd: Forward, stored: Forward, trace: tuple[float, int, int]) -> Forward:
    """What eligibility traces hold when the plasticity reads them (see :func:`relax`).

    The hidden layers' x̂ of the sweep ``fwd`` and the f' stored for a hidden target, decayed
    ``final`` times by ρ; the other layers' x̂ are those of ``stored``.
    """
    decay, _, final = trace
    factor = decay**final
    return Forward(
        [h * factor if k in graph.relaxing else stored.xhat[k] for k, h in enumerate(fwd.xhat)],
        fwd.pre,
        [fp * (factor if graph.into_hidden[c] else 1) for c, fp in enumerate(fwd.fp)],
        fwd.ops,
    )


def _drift(start: Array, toward: Array, rate: float, steps: int) -> Array:
    """``steps`` Euler steps of ``dh/dt ∝ toward − h`` with a constant ``toward``, exactly."""
    return toward + (start - toward) * (1.0 - rate) ** steps


def relax_as(
    model: ModelSpec, protocol, params: Params, inputs: Array, targets: Array, **options
) -> Relaxation:
    """:func:`relax` with everything the protocol declares, up to the plasticity.

    That is the steps the weight update sees (the relaxation, or its part before an
    oscillation's plasticity phase), dt/τ per layer and each step's gain, the start,
    feedback delays, the convergence tolerance and trace memory; ``options`` (such as
    ``keep_history``) go to :func:`relax`.
    """
    schedule = Schedule(model, protocol)
    first, steps = schedule.phase_steps["feedforward"], schedule.steps_before_plasticity
    gains = schedule.gains
    return relax(
        model,
        params,
        inputs,
        targets,
        steps,
        schedule.eta_x_per_layer,
        gains=gains[first : first + steps],
        start=protocol.relaxation_start,
        delays=schedule.delay_steps,
        tolerance=protocol.tolerance,
        trace=trace_schedule(model, protocol),
        soma=memory_schedule(model, protocol, "two-compartment"),
        **options,
    )


def relax_stream(
    model: ModelSpec,
    protocol,
    params: Params,
    inputs: Array,
    targets: Array,
    cycle: int,
    **options,
) -> Relaxation:
    """:func:`relax_as` for sample period ``cycle`` of a run whose stimulus is a stream.

    ``inputs`` and ``targets`` are the run's samples in order; the stream
    (``Schedule.stream_samples``) decides which ones the sweep sees, which target the output
    is clamped to at each relaxation step, and which input and clamp the plasticity sees.
    """
    schedule = Schedule(model, protocol)
    period, first = schedule.sample_steps, schedule.phase_steps["feedforward"]
    start = cycle * period
    shown = lambda step: schedule.stream_samples(step, len(inputs))  # noqa: E731
    steps = schedule.steps_before_plasticity
    step_targets = np.stack([targets[shown(start + first + n)] for n in range(max(steps, 1))])
    last = shown(start + schedule.plasticity_step - 1)
    swept = shown(start)
    stream = (step_targets, inputs[last], targets[last])
    swept_inputs, swept_targets = inputs[swept], targets[swept]
    return relax_as(model, protocol, params, swept_inputs, swept_targets, stream=stream, **options)


def trace_schedule(model: ModelSpec, protocol) -> tuple[float, int, int] | None:
    """``trace`` argument of :func:`relax` for a model and protocol (None: not trace memory).

    The simulator stores x̂ and f' at the sweep (step 0 of a sample) and decays them by
    ρ = 1 − dt/τ_m at every step from that one on; relaxation step ``n`` reads δ from the end
    of the step before, after ``n_ff + n`` decays, and the plasticity (at the next sample's
    first step, or at an oscillation's plasticity phase) after ``plasticity_step`` decays.
    """
    schedule = memory_schedule(model, protocol, "trace")
    return None if schedule is None else (1.0 - schedule[0], *schedule[1:])


def memory_schedule(model: ModelSpec, protocol, kind: str) -> tuple[float, int, int] | None:
    """``(dt/τ_m, n_ff, plasticity_step)`` when the model's memory is ``kind``, else None."""
    if model.memory.kind != kind:
        return None
    schedule = Schedule(model, protocol)
    return (
        protocol.dt / model.memory.tau,
        schedule.phase_steps["feedforward"],
        schedule.plasticity_step,
    )


def apply_update(
    model: ModelSpec,
    params: Params,
    relaxation: Relaxation,
    learning_rate: float,
    feedback_learning_rate: float,
) -> Params:
    """Parameters after one AR update (``W -= η Σ δ x̂ᵀ``; learned ψ by the transposed rule)."""
    new = params.copy()
    for layer, connection in enumerate(model.connections):
        new.W[layer] = params.W[layer] - learning_rate * relaxation.W[layer]
        if params.b[layer] is not None:
            new.b[layer] = params.b[layer] - learning_rate * relaxation.b[layer]
        if connection.learns_feedback:
            change = operators.as_feedback(relaxation.W[layer])
            new.psi[layer] = params.psi[layer] - feedback_learning_rate * change
    return new

"""The NumPy oracle: exact backprop, and AR with the same Euler steps as the simulator.

Everything here works on a batch: activities have shape ``(batch, n)`` and the weight matrix
``W[c]`` of connection ``c`` has shape ``(n_target, n_source)``. The network is any directed
acyclic graph of layers (``ModelSpec.layers`` in topological order, ``ModelSpec.connections``
its edges); a chain is the special case where connection ``l`` joins layer ``l`` to ``l + 1``.
This is the reference that tests and metrics compare the Brian2 network against; it shares only
the activation table with the simulator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from arsim import operators
from arsim.activations import ACTIVATIONS, SOFTMAX, loss_value, output_gradient, softmax
from arsim.spec import ModelSpec

Array = np.ndarray


@dataclass
class Params:
    """Weights of a network, one entry per connection (``ModelSpec.connections`` order).

    Attributes
    ----------
    W : list of ndarray
        Forward weights, ``W[c]`` of shape ``(n_target, n_source)``; for a convolution the
        kernel ``(C_out, C_in, k, k)``, for a max-pooling an empty array (no weights).
    b : list of ndarray or None
        Bias of connection ``c``'s target layer, shape ``(n_target,)`` (a convolution's:
        ``(C_out,)``), or None where the connection has none (a layer has at most one).
    psi : list of ndarray or None
        Feedback weights, ``psi[c]`` of shape ``(n_source, n_target)`` (a convolution's: the
        shape of its kernel, applied transposed), or None where the feedback is ``W[c]``
        itself (transposed).
    """

    W: list[Array]
    b: list[Array | None]
    psi: list[Array | None]

    def copy(self) -> Params:
        """A deep copy."""
        copy = lambda arrays: [None if a is None else a.copy() for a in arrays]  # noqa: E731
        return Params(copy(self.W), copy(self.b), copy(self.psi))

    def feedback(self, connection: int) -> Array:
        """``B_c`` (n_source, n_target): carries connection ``c``'s target signal to its source."""
        weights = self.W[connection]
        return (
            operators.as_feedback(weights) if self.psi[connection] is None else self.psi[connection]
        )

    def to_arrays(self) -> dict[str, Array]:
        """Flat dict ``W0, b0, psi0, …`` as saved in ``weights/*.npz`` (ψ = Wᵀ for transpose)."""
        arrays = {}
        for layer, weight in enumerate(self.W):
            arrays[f"W{layer}"] = weight
            if self.b[layer] is not None:
                arrays[f"b{layer}"] = self.b[layer]
            arrays[f"psi{layer}"] = self.feedback(layer).copy()
        return arrays


def init_params(model: ModelSpec, seed: int | None = None) -> Params:
    """Draw the initial weights of ``model``.

    W and ψ are drawn from N(mean, variance) of ``model.init`` with independent streams derived
    from the seed (``model.seed`` unless given), so that switching the feedback kind never changes
    the forward weights.
    """
    seed = model.seed if seed is None else seed
    std = np.sqrt(model.init.variance)
    weights, biases, feedbacks = [], [], []
    for layer, connection in enumerate(model.connections):
        n_in, n_out = model.layer(connection.source).size, model.layer(connection.target).size
        shape = operators.operator(model, connection).weight_shape()
        if connection.operation == "dense":
            feedback_shape = (n_in, n_out)
        else:  # a kernel (conv; its ψ has the kernel's shape) or nothing (maxpool)
            feedback_shape = shape
            n_out = shape[0] if connection.operation == "conv" else n_out  # one bias a channel
        forward_rng = np.random.default_rng([seed, 0, layer])
        weights.append(model.init.mean + std * forward_rng.standard_normal(shape))
        biases.append(np.full(n_out, model.init.bias) if connection.bias else None)
        if connection.transposed:
            feedbacks.append(None)
        else:
            feedback_rng = np.random.default_rng([seed, 1, layer])
            feedbacks.append(model.init.mean + std * feedback_rng.standard_normal(feedback_shape))
    return Params(weights, biases, feedbacks)


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
    stimuli = np.asarray(stimuli, dtype=float)
    slices = model.input_slices()
    return [stimuli] if len(slices) == 1 else [stimuli[:, part] for part in slices]


def forward(model: ModelSpec, params: Params, inputs: Array) -> Forward:
    """Feedforward sweep of a batch of stimuli ``(batch, n_in)`` in topological order.

    The stimulus is the input layers' activities concatenated (``ModelSpec.input_slices``);
    every other layer sums its parents' contributions ``W_c x̂_source`` (in connection order)
    and its bias.
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
        a = None
        for c in incoming:
            term = ops[c].forward(xhat[model.index(model.connections[c].source)], params.W[c])
            a = term if a is None else a + term
        biased = next((c for c in incoming if params.b[c] is not None), None)
        if biased is not None:
            a = a + ops[biased].bias_vector(params.b[biased])
        if layer.activation == SOFTMAX:
            xhat[index], derivative = softmax(a), np.ones_like(a)
        else:
            xhat[index] = ACTIVATIONS[layer.activation].f(a)
            derivative = ACTIVATIONS[layer.activation].fprime(a)
        for c in incoming:
            pre[c], fp[c] = a, derivative
    return Forward(xhat, pre, fp, ops)


def loss(model: ModelSpec, params: Params, inputs: Array, targets: Array) -> Array:
    """Loss of each sample of the batch, shape ``(batch,)``."""
    output = forward(model, params, inputs).xhat[-1]
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
    """

    activity: list[Array]
    W: list[Array]
    b: list[Array | None]


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
    (``run.sample_metrics``) does not apply and is skipped.
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


def backprop(model: ModelSpec, params: Params, inputs: Array, targets: Array) -> Gradients:
    """Exact gradients of the batch loss ``Σ_batch L`` by backpropagation (always with Wᵀ).

    In reverse topological order, ``∂L/∂x̂_i = Σ_{c: i → j} (∂L/∂x̂_j ⊙ f'_j) W_c``.
    """
    fwd = forward(model, params, inputs)
    activity: list[Array | None] = [None] * len(model.layers)
    activity[-1] = output_gradient(model.loss, fwd.xhat[-1], targets, model.loss_scale)
    for index in range(len(model.layers) - 2, -1, -1):
        for c in model.outgoing(model.layers[index].name):
            target = model.index(model.connections[c].target)
            signal = activity[target] * fwd.fp[c]
            term = fwd.ops[c].backward(signal, operators.as_feedback(params.W[c]))
            activity[index] = term if activity[index] is None else activity[index] + term
    grads_w, grads_b = weight_gradients(model, fwd, activity, params)
    return Gradients(activity, grads_w, grads_b)


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
        ``dt / τ`` (dimensionless), or one value per layer (``ProtocolSpec.eta_x_of``).
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
        ``ProtocolSpec.gate``): step ``n`` of layer ``l`` moves by ``gains[n, l] · η_x``.
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
    decay, offset, final = trace or (1.0, 0, 0)
    delays = delays or [0] * len(params.W)
    sent = [[] for _ in params.W]  # signals sent down each connection, step by step
    active = np.ones(len(fwd.xhat[out]), dtype=bool)
    taken = np.full(len(active), steps)
    held = None  # the somata's x̂ (two-compartment memory) of the hidden layers
    if soma is not None:
        coupling, offset_c, final_c = soma
        before = min(offset_c, final_c)
        held = {k: _drift(fwd.xhat[k], x[k], coupling, before) for k in graph.relaxing}
    for step in range(steps):
        if held is not None:
            held = {k: h + coupling * (x[k] - h) for k, h in held.items()}
        if stream is not None:
            x[out] = output_gradient(model.loss, fwd.xhat[out], stream[0][step], model.loss_scale)
        new, drive = list(x), {}
        for layer in graph.relaxing:
            top_down = None
            for c in graph.outgoing[layer]:
                signal = x[graph.target[c]]
                if model.connections[c].derivative:
                    hidden = graph.into_hidden[c]
                    signal = signal * fwd.fp[c] * (decay ** (offset + step) if hidden else 1)
                sent[c].append(signal)
                signal = sent[c][max(0, step - delays[c])]
                term = fwd.ops[c].backward(signal, feedback[c])
                top_down = term if top_down is None else top_down + term
            drive[layer] = -x[layer] + top_down
        if tolerance > 0 and drive:
            worst = np.max([np.abs(d).max(axis=1) for d in drive.values()], axis=0)
            converged = active & (worst < tolerance)
            taken[converged] = step
            active &= ~converged
        for layer, d in drive.items():
            gain = 1.0 if gains is None else gains[step, layer]
            new[layer] = x[layer] + gain * etas[layer] * d * active[:, None]
        x = new
        if keep_history:
            history.append(list(x))
    stored = fwd
    if held is not None:  # the somata drift toward the final x until the plasticity
        rest = max(final_c - offset_c - steps, 0)
        somata = list(fwd.xhat)
        for k, h in held.items():
            somata[k] = _drift(h, x[k], coupling, rest)
        stored = Forward(somata, fwd.pre, fwd.fp, fwd.ops)
    if stream is not None:  # what the plasticity sees: the stream's input and clamp then
        shown = split_stimulus(model, stream[1])
        stored = Forward([*shown, *stored.xhat[len(shown) :]], fwd.pre, fwd.fp, fwd.ops)
        x[out] = output_gradient(model.loss, fwd.xhat[out], stream[2], model.loss_scale)
    if trace is not None:  # what the traces hold when the plasticity reads them
        factor = decay**final
        stored = Forward(
            [h * factor if k in graph.relaxing else stored.xhat[k] for k, h in enumerate(fwd.xhat)],
            fwd.pre,
            [fp * (factor if graph.into_hidden[c] else 1) for c, fp in enumerate(fwd.fp)],
            fwd.ops,
        )
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
    first, steps = protocol.phase_steps["feedforward"], protocol.steps_before_plasticity
    gains = np.stack([protocol.gate(layer.name) for layer in model.layers], axis=1)
    return relax(
        model,
        params,
        inputs,
        targets,
        steps,
        protocol.eta_x_of(model),
        gains=gains[first : first + steps],
        start=protocol.relaxation_start,
        delays=protocol.delay_steps(model),
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
    (``protocol.stream_samples``) decides which ones the sweep sees, which target the output
    is clamped to at each relaxation step, and which input and clamp the plasticity sees.
    """
    period, first = protocol.sample_steps, protocol.phase_steps["feedforward"]
    start = cycle * period
    shown = lambda step: protocol.stream_samples(step, len(inputs))  # noqa: E731
    steps = protocol.steps_before_plasticity
    step_targets = np.stack([targets[shown(start + first + n)] for n in range(max(steps, 1))])
    last = shown(start + protocol.plasticity_step - 1)
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
    return (
        protocol.dt / model.memory.tau,
        protocol.phase_steps["feedforward"],
        protocol.plasticity_step,
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

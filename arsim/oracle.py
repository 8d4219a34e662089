"""The NumPy oracle: exact backprop, and AR with the same Euler steps as the simulator.

Everything here works on a batch: activities have shape ``(batch, n)`` and a weight matrix
``W[l]`` has shape ``(n_{l+1}, n_l)``. This is the reference that tests and metrics compare the
Brian2 network against; it shares only the activation table with the simulator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from arsim.activations import ACTIVATIONS, SOFTMAX, loss_value, output_gradient, softmax
from arsim.spec import ModelSpec

Array = np.ndarray


@dataclass
class Params:
    """Weights of a chain network.

    Attributes
    ----------
    W : list of ndarray
        Forward weights, ``W[l]`` of shape ``(n_{l+1}, n_l)``.
    b : list of ndarray or None
        Biases of layer ``l + 1``, shape ``(n_{l+1},)``, or None where the connection has none.
    psi : list of ndarray or None
        Feedback weights, ``psi[l]`` of shape ``(n_l, n_{l+1})``, or None where the feedback is
        the transpose of ``W[l]``.
    """

    W: list[Array]
    b: list[Array | None]
    psi: list[Array | None]

    def copy(self) -> Params:
        """A deep copy."""
        copy = lambda arrays: [None if a is None else a.copy() for a in arrays]  # noqa: E731
        return Params(copy(self.W), copy(self.b), copy(self.psi))

    def feedback(self, layer: int) -> Array:
        """Matrix ``B_l`` that carries layer ``l + 1``'s signal down to layer ``l``."""
        return self.W[layer].T if self.psi[layer] is None else self.psi[layer]

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
        forward_rng = np.random.default_rng([seed, 0, layer])
        weights.append(model.init.mean + std * forward_rng.standard_normal((n_out, n_in)))
        biases.append(np.full(n_out, model.init.bias) if connection.bias else None)
        if connection.feedback == "transpose":
            feedbacks.append(None)
        else:
            feedback_rng = np.random.default_rng([seed, 1, layer])
            feedbacks.append(model.init.mean + std * feedback_rng.standard_normal((n_in, n_out)))
    return Params(weights, biases, feedbacks)


@dataclass
class Forward:
    """Result of the feedforward sweep.

    Attributes
    ----------
    xhat : list of ndarray
        Feedforward activities ``x̂_l`` of every layer, ``(batch, n_l)``.
    pre : list of ndarray
        Pre-activations ``a_l = W_l x̂_l + b_l`` of layers ``1 … L``.
    fp : list of ndarray
        ``f'`` at the pre-activations of layers ``1 … L`` (1 for a softmax output).
    """

    xhat: list[Array]
    pre: list[Array]
    fp: list[Array]


def forward(model: ModelSpec, params: Params, inputs: Array) -> Forward:
    """Feedforward sweep of a batch of inputs ``(batch, n_0)``."""
    xhat, pre, fp = [np.asarray(inputs, dtype=float)], [], []
    for layer, weight in enumerate(params.W):
        a = xhat[-1] @ weight.T
        if params.b[layer] is not None:
            a = a + params.b[layer]
        activation = model.layers[layer + 1].activation
        pre.append(a)
        if activation == SOFTMAX:
            xhat.append(softmax(a))
            fp.append(np.ones_like(a))
        else:
            xhat.append(ACTIVATIONS[activation].f(a))
            fp.append(ACTIVATIONS[activation].fprime(a))
    return Forward(xhat, pre, fp)


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
        ``∂L/∂x̂_l`` for every layer (for a softmax output, the gradient w.r.t. the logits), each
        ``(batch, n_l)``.
    W : list of ndarray
        ``∂L/∂W_l``, shapes as ``Params.W``.
    b : list of ndarray or None
        ``∂L/∂b_l`` where the connection has a bias.
    """

    activity: list[Array]
    W: list[Array]
    b: list[Array | None]


def weight_gradients(fwd: Forward, top_down: list[Array], params: Params) -> tuple[list, list]:
    """Weight and bias gradients ``Σ_batch (x_{l+1} ⊙ f'_l) x̂_lᵀ`` from layer activities.

    ``top_down[l]`` is the activity of layer ``l`` that plays ``∂L/∂x̂_l`` (the exact gradient for
    backprop, the relaxed activity for AR).
    """
    grads_w, grads_b = [], []
    for layer in range(len(params.W)):
        delta = top_down[layer + 1] * fwd.fp[layer]
        grads_w.append(delta.T @ fwd.xhat[layer])
        grads_b.append(None if params.b[layer] is None else delta.sum(axis=0))
    return grads_w, grads_b


def backprop(model: ModelSpec, params: Params, inputs: Array, targets: Array) -> Gradients:
    """Exact gradients of the batch loss ``Σ_batch L`` by backpropagation (always with Wᵀ)."""
    fwd = forward(model, params, inputs)
    n_layers = len(params.W)
    activity = [None] * (n_layers + 1)
    activity[-1] = output_gradient(model.loss, fwd.xhat[-1], targets, model.loss_scale)
    for layer in range(n_layers - 1, -1, -1):
        activity[layer] = (activity[layer + 1] * fwd.fp[layer]) @ params.W[layer]
    grads_w, grads_b = weight_gradients(fwd, activity, params)
    return Gradients(activity, grads_w, grads_b)


@dataclass
class Relaxation:
    """Result of an AR relaxation.

    Attributes
    ----------
    forward : Forward
        The feedforward sweep the relaxation started from.
    x : list of ndarray
        Activities at the end of the relaxation (layer 0: the input, not relaxed).
    history : list of list of ndarray or None
        ``history[n][l]``: activity of layer ``l`` after ``n`` steps (``n = 0`` is the start),
        when requested.
    W, b : list
        Weight and bias gradients the AR update uses, ``Σ_batch (x_{l+1} ⊙ f'_l) x̂_lᵀ``.
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

    ``x_l ← x_l + η_x (−x_l + B_l (x_{l+1} ⊙ f'_l))`` for the hidden layers ``l = 1 … L-1``,
    where f' is dropped when the connection's ``derivative`` is false; the output layer is
    clamped to the loss gradient.

    Parameters
    ----------
    model : ModelSpec
        The network (activations, loss, per-connection derivative switch).
    params : Params
        Weights; ψ where the feedback is not the transpose.
    inputs, targets : ndarray, shape (batch, n_0) and (batch, n_L)
        The minibatch.
    steps : int
        Number of Euler steps.
    eta_x : float or list of float
        ``dt / τ`` (dimensionless), or one value per layer (``ProtocolSpec.eta_x_of``).
    keep_history : bool
        Keep every step's activities.
    start : {'feedforward', 'zero'}
        Hidden activities start at ``x̂`` (AR) or at 0.
    delays : list of int, optional
        Feedback delay of every connection in steps: at step ``n`` layer ``l`` receives the
        signal of layer ``l + 1`` as it was after ``n − d`` steps (after 0 steps while
        ``n < d``).
    tolerance : float
        When positive, a sample stops relaxing at the first step where every hidden neuron
        has ``|−x + input| < tolerance``.
    trace : (float, int, int), optional
        Eligibility-trace memory ``(ρ, offset, final)``: the hidden layers' stored x̂ and f'
        are multiplied by ρ = 1 − dt/τ_m every step since the sweep, so relaxation step ``n``
        uses f'·ρ^(offset + n) and the weight update x̂·ρ^final and f'·ρ^final (see
        :func:`trace_schedule`).
    gains : ndarray, shape (steps, n_layers + 1), optional
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
    n_layers = len(params.W)
    x = [fwd.xhat[0]]
    for layer in range(1, n_layers):
        x.append(
            fwd.xhat[layer].copy() if start == "feedforward" else np.zeros_like(fwd.xhat[layer])
        )
    x.append(output_gradient(model.loss, fwd.xhat[-1], targets, model.loss_scale))
    history = [list(x)] if keep_history else None
    feedback = [params.feedback(layer) for layer in range(n_layers)]
    etas = list(eta_x) if np.ndim(eta_x) else [eta_x] * (n_layers + 1)
    decay, offset, final = trace or (1.0, 0, 0)
    hidden = [layer < n_layers - 1 for layer in range(n_layers)]  # is fp[layer] a hidden f'?
    delays = delays or [0] * n_layers
    sent = [[] for _ in range(n_layers)]  # signals sent down each connection, step by step
    active = np.ones(len(fwd.xhat[0]), dtype=bool)
    taken = np.full(len(active), steps)
    held = None  # the somata's x̂ (two-compartment memory), hidden layers 1 … L−1
    if soma is not None:
        coupling, offset_c, final_c = soma
        before = min(offset_c, final_c)
        held = [_drift(fwd.xhat[k], x[k], coupling, before) for k in range(1, n_layers)]
    for step in range(steps):
        if held is not None:
            held = [h + coupling * (x[k] - h) for k, h in enumerate(held, start=1)]
        if stream is not None:
            x[-1] = output_gradient(model.loss, fwd.xhat[-1], stream[0][step], model.loss_scale)
        new, drive = list(x), {}
        for layer in range(1, n_layers):
            signal = x[layer + 1]
            if model.connections[layer].derivative:
                signal = signal * fwd.fp[layer] * (decay ** (offset + step) if hidden[layer] else 1)
            sent[layer].append(signal)
            signal = sent[layer][max(0, step - delays[layer])]
            drive[layer] = -x[layer] + signal @ feedback[layer].T
        if tolerance > 0 and n_layers > 1:
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
        held = [_drift(h, x[k], coupling, rest) for k, h in enumerate(held, start=1)]
        stored = Forward([fwd.xhat[0], *held, fwd.xhat[-1]], fwd.pre, fwd.fp)
    if stream is not None:  # what the plasticity sees: the stream's input and clamp then
        stored = Forward([stream[1], *stored.xhat[1:]], fwd.pre, fwd.fp)
        x[-1] = output_gradient(model.loss, fwd.xhat[-1], stream[2], model.loss_scale)
    if trace is not None:  # what the traces hold when the plasticity reads them
        factor = decay**final
        stored = Forward(
            [stored.xhat[0]] + [h * factor for h in fwd.xhat[1:-1]] + [fwd.xhat[-1]],
            fwd.pre,
            [fp * (factor if hidden[k] else 1) for k, fp in enumerate(fwd.fp)],
        )
    grads_w, grads_b = weight_gradients(stored, x, params)
    return Relaxation(fwd, x, history, grads_w, grads_b, taken)


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
    first, steps = protocol.phase_steps["feedforward"], protocol.phase_steps["relaxation"]
    steps = min(max(protocol.plasticity_step - first, 0), steps)
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
    steps = min(max(protocol.plasticity_step - first, 0), protocol.phase_steps["relaxation"])
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
        if connection.feedback == "learned":
            new.psi[layer] = params.psi[layer] - feedback_learning_rate * relaxation.W[layer].T
    return new

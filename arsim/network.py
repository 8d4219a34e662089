"""The Brian2 network: one ``NeuronGroup`` per layer, ``Synapses`` for W and ψ, and the phases.

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
                       is stored after every step (*after_groups*).
``n_ff + n_r … P−1``   update phase: activities hold until the plasticity at the next tick.
=====================  ===========================================================================

The only work done every step is the relaxation itself: one summed feedback product per
connection. Input and output layers live on the sample clock (they change once per sample).
The equation strings are built in :func:`layer_equations`, :func:`feedforward_code` and
:func:`synapse_model` and nowhere else.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass

import brian2 as b2
import numpy as np

from arsim.activations import ACTIVATIONS, OUTPUT_GRADIENT_EXPR, SOFTMAX
from arsim.params import Params, SeedStream, seed_sequence
from arsim.spec import ConnectionSpec, LayerSpec, ModelSpec, ProtocolSpec

DIVERGENCE_LIMIT = 1e300
"""An activity that is NaN, infinite or beyond this magnitude counts as diverged."""
NEVER = 1e9
"""``t_bad`` of a neuron that never diverged, in seconds."""

_RELAX_ORDER = 1000
"""Base order of the hidden layers' state updaters in the 'groups' slot: after every sweep."""

# Order of the once-per-sample work in the 'start' slot of a sample tick.
_LEARN, _BIAS, _PRESENT = 0, 1, 2


def seed_noise(seed: int, *key: int) -> None:
    """Seed Brian2's random numbers (the noise ``xi``) from stream :attr:`SeedStream.NOISE`.

    Brian2's seed is the first word of the seed sequence ``[seed, SeedStream.NOISE, *key]``.
    """
    b2.seed(int(seed_sequence(seed, SeedStream.NOISE, *key).generate_state(1)[0]))


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


def _slot(layer_index: int) -> int:
    """Base of the 'groups'-slot order numbers of layer ``layer_index``.

    Layers are in topological order (``ModelSpec.layers``), so the sweep reaches a layer
    after all its parents.
    """
    return 10 * (layer_index + 1)


@dataclass(frozen=True)
class LayerRole:
    """Where a layer sits in the network: input, hidden (relaxes) or output (clamped).

    Attributes
    ----------
    index : int
        Position in ``ModelSpec.layers`` (topological order).
    spec : LayerSpec
        The layer.
    incoming, outgoing : tuple of int
        Indices of the connections into and out of the layer.
    is_input, is_output : bool
        No incoming connection (takes its slice of the stimulus), or no outgoing one (the
        output, clamped to the loss gradient).
    stimulus : slice or None
        An input layer's columns in the stimulus vector (``ModelSpec.input_slices``).
    """

    index: int
    spec: LayerSpec
    incoming: tuple[int, ...]
    outgoing: tuple[int, ...]
    is_input: bool
    is_output: bool
    stimulus: slice | None = None

    @property
    def relaxes(self) -> bool:
        """True for layers whose activity relaxes (neither input nor output)."""
        return not (self.is_input or self.is_output)


def layer_roles(model: ModelSpec) -> list[LayerRole]:
    """The role of every layer in the model's graph, in ``ModelSpec.layers`` order."""
    roles = []
    slices = iter(model.input_slices())
    for index, layer in enumerate(model.layers):
        incoming, outgoing = model.incoming(layer.name), model.outgoing(layer.name)
        stimulus = None if incoming else next(slices)
        roles.append(
            LayerRole(index, layer, incoming, outgoing, not incoming, not outgoing, stimulus)
        )
    return roles


def stimulus_index(role: LayerRole, stimulus_size: int) -> str:
    """Column of the stimulus table an input layer's neuron ``i`` reads (a Brian2 expression).

    Replica ``r`` of the layer (neurons ``r·n … r·n + n − 1``) reads stimulus columns
    ``r·stimulus_size + start …``: each replica's row holds the whole stimulus vector, the
    input layers' activities concatenated.
    """
    size, start = role.spec.size, role.stimulus.start
    if size == stimulus_size:  # the only input layer
        return "i"
    return f"(i // {size}) * {stimulus_size} + {start} + i % {size}"


# ------------------------------------------------------------------------------------------------
# Equations: the one place where the neuron and synapse models are written.
# ------------------------------------------------------------------------------------------------
def _sum(terms: list[str]) -> str:
    return " + ".join(terms) if terms else "0"


_APPLY_NOW = "int(abs(t - apply_at) < 0.5 * dt)"
"""1 at the sample tick where a minibatch's accumulated changes are applied, else 0."""


def _first_bad(variable: str, when: str) -> str:
    """Statement keeping in ``t_bad`` the first time ``variable`` was non-finite or huge."""
    return (
        f"t_bad = clip({when} + never * int(abs({variable}) < divergence_limit), 0 * second, t_bad)"
    )


def gate_name(role: LayerRole) -> str:
    """Name of the TimedArray of a relaxing layer's gain over the sample period."""
    return f"gate_{role.index}"


def gate_expression(role: LayerRole, square: bool) -> str:
    """The relaxation gain of a hidden layer at this step (``ProtocolSpec.gate``).

    A square gate (0 or 1, one window) is two integer comparisons with the layer's window
    ``relax_start_<k>``, ``relax_stop_<k>``; any other is looked up in the TimedArray
    :func:`gate_name` over the sample period (which costs more per step in the numpy target).
    """
    step = "t_in_timesteps % steps_per_sample"
    if square:
        k = role.index
        return f"int({step} >= relax_start_{k}) * int({step} < relax_stop_{k})"
    return f"{gate_name(role)}(({step}) * second)"


def layer_equations(
    role: LayerRole,
    noise: float = 0.0,
    stoppable: bool = False,
    memory: str = "ideal",
    square_gate: bool = True,
) -> str:
    """Neuron model of one layer (Brian2 equations; activities are dimensionless).

    Variables: ``xhat`` feedforward activity, ``fp`` f' at the feedforward pre-activation,
    ``x`` relaxing activity, ``delta = x · fp``, ``fb`` summed top-down input, ``a`` the
    pre-activation (``a_c<k>`` per incoming connection ``k`` plus the bias ``b``); shared
    ``chunk_start`` and ``apply_at`` time the presentation and the minibatch update; ``t_bad``
    the first time an activity went non-finite. With ``memory`` 'trace' a hidden layer's stored
    x̂ and f' decay with time constant ``memory_tau``; with 'two-compartment' its x̂ (the soma)
    leaks toward x (the apical compartment) with that time constant. ``square_gate``: see
    :func:`gate_expression`.
    """
    lines = ["xhat : 1", "chunk_start : second (shared)", "apply_at : second (shared)"]
    if role.is_input:
        return "\n".join(lines)
    lines += ["fp : 1", "delta : 1", "b : 1", "db : 1", "eta_bias : 1 (shared)", "t_bad : second"]
    lines += [f"a_c{c} : 1" for c in role.incoming]
    lines.append(f"a = b + {_sum([f'a_c{c}' for c in role.incoming])} : 1")
    if role.is_output:
        lines += ["x : 1", "target : 1"]
        if role.spec.activation == SOFTMAX:
            lines.append("softmax_norm : 1")
    else:
        lines += [f"fb_c{c} : 1" for c in role.outgoing]
        lines.append(f"fb = {_sum([f'fb_c{c}' for c in role.outgoing])} : 1")
        # the relaxation gain of this step of the sample period (ProtocolSpec.gate)
        lines.append(f"relaxing = {gate_expression(role, square_gate)} : 1")
        lines.append("tau : second (shared, constant)")
        if stoppable:  # relaxation until converged: active is 0 once the sample converged
            lines.append("active : 1")
            lines.append("relaxing_now = relaxing * active : 1")
        else:
            lines.append("relaxing_now = relaxing : 1")
        if noise > 0:  # Euler–Maruyama: x += η(−x + fb) + σ √η N(0, 1)
            lines.append(
                "dx/dt = relaxing_now * ((-x + fb) / tau + noise_sigma * xi * tau**-0.5) : 1"
            )
        else:
            lines.append("dx/dt = relaxing_now * (-x + fb) / tau : 1")
        if memory == "two-compartment":  # the soma's x̂ leaks toward the apical x
            lines[lines.index("xhat : 1")] = "dxhat/dt = (x - xhat) / memory_tau : 1"
        if memory == "trace":  # eligibility traces instead of ideal memory
            lines[lines.index("xhat : 1")] = "dxhat/dt = -xhat / memory_tau : 1"
            lines[lines.index("fp : 1")] = "dfp/dt = -fp / memory_tau : 1"
    return "\n".join(lines)


def feedforward_code(role: LayerRole, relaxation_start: str, stoppable: bool = False) -> str:
    """Code a layer runs in the sweep: store x̂ and f', start (or clamp) x."""
    activation = role.spec.activation
    if activation == SOFTMAX:
        lines = ["xhat = exp(a) / softmax_norm", "fp = 1.0"]
    else:
        spec = ACTIVATIONS[activation]
        lines = [f"xhat = {spec.f_expr}", f"fp = {spec.fprime_expr}"]
    if role.is_output:
        lines.append(f"x = {OUTPUT_GRADIENT_EXPR}")
    else:
        lines.append("x = xhat" if relaxation_start == "feedforward" else "x = 0")
        if stoppable:
            lines.append("active = 1")
    lines.append("delta = x * fp")
    lines.append(_first_bad("xhat", "t + step_dt"))
    if role.is_output:
        lines.append(_first_bad("x", "t + step_dt"))
    return "\n".join(lines)


def relaxation_step_code() -> str:
    """Code a hidden layer runs after every Euler step: store δ, watch for divergence."""
    return "delta = x * fp\n" + _first_bad("x", "t + dt")


def bias_code() -> str:
    """Once-per-sample bias plasticity: accumulate δ, apply at the minibatch's end."""
    return f"db += delta\nb -= {_APPLY_NOW} * eta_bias * db\ndb = db * (1 - {_APPLY_NOW})"


def synapse_model(connection: ConnectionSpec, index: int, feeds_back: bool) -> dict[str, str]:
    """Synapse models of connection ``index``: forward ``W`` and, unless transposed, ``ψ``.

    Returns a dict with the forward model (``forward``; the sweep ``a_c<k>_post = Σ w x̂_pre``
    is its summed variable, which the mode runs once per sample) and its plasticity code
    (``forward_learn``) and, for ψ, ``feedback`` and, when learned,
    ``feedback_learn``. The top-down signal is ``delta = x · f'`` of the upper layer, or ``x``
    when the connection's relaxation drops the derivative. Without ``feeds_back`` (the source is
    the input layer, which does not relax) there is no top-down path, but a learned ψ still
    learns.
    """
    signal = "delta" if connection.derivative else "x"
    forward = [
        "w : 1",
        "dw : 1",
        "eta : 1 (shared)",
        f"a_c{index}_post = w * xhat_pre : 1 (summed)",
    ]
    apply_pre = _APPLY_NOW.replace("apply_at", "apply_at_pre")
    models = {
        "forward_learn": f"dw += delta_post * xhat_pre\nw -= {apply_pre} * eta * dw\n"
        f"dw = dw * (1 - {apply_pre})",
    }
    if connection.feedback == "transpose":
        if feeds_back:
            forward.append(f"fb_c{index}_pre = w * {signal}_post : 1 (summed)")
    else:
        feedback = ["psi : 1", "dpsi : 1", "eta : 1 (shared)"]
        if feeds_back:
            feedback.append(f"fb_c{index}_post = psi * {signal}_pre : 1 (summed)")
        models["feedback"] = "\n".join(feedback)
        if connection.feedback == "learned":
            models["feedback_learn"] = (
                f"dpsi += xhat_post * delta_pre\npsi -= {apply_pre} * eta * dpsi\n"
                f"dpsi = dpsi * (1 - {apply_pre})"
            )
    models["forward"] = "\n".join(forward)
    return models


# ------------------------------------------------------------------------------------------------
# The built network
# ------------------------------------------------------------------------------------------------
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
    """

    mode = "base"
    replicas = 1
    """Copies of every layer that relax side by side (one per sample of a minibatch)."""
    batches_per_chunk = 1
    """Minibatches simulated by one Brian2 ``run()`` (each call costs about 0.1 s)."""
    per_step_code_in_brian = True
    """Whether ``delta = x·fp`` and the divergence watch run as Brian2 code after every step
    (:func:`relaxation_step_code`) or are done by the mode itself."""

    def __init__(
        self, model: ModelSpec, protocol: ProtocolSpec, params: Params, record: bool = True
    ):
        self.model, self.protocol = model, protocol
        self.roles = layer_roles(model)
        steps = protocol.phase_steps
        self.steps_per_sample = protocol.sample_steps
        self.dt = protocol.dt * b2.second
        self.ticks_done = 0
        self.batch_params: list[Params] = []
        """Parameters after each minibatch of the last chunk (for per-batch metrics)."""
        self.batch_signals: list[list] = []
        """Per minibatch of the last chunk, where the mode keeps them (dense): each
        connection's ``(δ_post, x̂_pre, has_bias)`` per sample at the plasticity."""
        rows = self._stimulus_rows()
        sample_dt = self.steps_per_sample * self.dt
        # Per-chunk inputs, one row per sample tick; the last row is the next chunk's first.
        n_in, n_out = model.input_size * self.replicas, model.output.size * self.replicas
        self.stimulus = b2.TimedArray(np.zeros((rows, n_in)), dt=sample_dt, name="stimulus_stream")
        self.targets = b2.TimedArray(np.zeros((rows, n_out)), dt=sample_dt, name="target_stream")
        self.namespace = {
            "steps_per_sample": self.steps_per_sample,
            "relax_start": steps["feedforward"],
            "relax_stop": steps["feedforward"] + steps["relaxation"],
            "loss_scale": model.loss_scale,
            "stimulus_stream": self.stimulus,
            "target_stream": self.targets,
            "divergence_limit": DIVERGENCE_LIMIT,
            "never": NEVER * b2.second,
            "step_dt": self.dt,
            "noise_sigma": protocol.noise,
            "memory_tau": (model.memory.tau or 1.0) * b2.second,
        }
        self._square_gates = protocol.oscillation is None or (
            protocol.oscillation.waveform == "square"
        )
        for role in self.roles:
            if not role.relaxes:
                continue
            if self._square_gates:
                start, stop = protocol.window_steps(role.spec.name)
                self.namespace[f"relax_start_{role.index}"] = start
                self.namespace[f"relax_stop_{role.index}"] = stop
            else:  # one entry per step of the period, looked up at t = step · 1 s
                gain = protocol.gate(role.spec.name)
                self.namespace[gate_name(role)] = b2.TimedArray(gain, dt=b2.second)
        self.step_clock = b2.Clock(dt=self.dt, name="step_clock")
        self.sample_clock = b2.Clock(dt=sample_dt, name="sample_clock")
        self.groups = [self._make_group(role) for role in self.roles]
        objects = [*self.groups, *self._make_connections()]
        self.monitors = self._make_monitors() if record else {}
        objects += list(self.monitors.values())
        self.network = b2.Network(*objects)
        self.set_params(params)

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
    def _group_index(self, name: str) -> int:
        return [layer.name for layer in self.model.layers].index(name)

    def _bias_in_group(self, role: LayerRole) -> bool:
        """Whether the group learns its biases itself (one replica) or the mode does."""
        has_bias = any(self.model.connections[c].bias for c in role.incoming)
        return has_bias and self.replicas == 1

    def _make_group(self, role: LayerRole) -> b2.NeuronGroup:
        group = b2.NeuronGroup(
            role.spec.size * self.replicas,
            layer_equations(
                role,
                self.protocol.noise,
                self.protocol.tolerance > 0,
                self.model.memory.kind,
                self._square_gates,
            ),
            method="euler",
            namespace=self.namespace,
            clock=self.step_clock if role.relaxes else self.sample_clock,
            name=f"layer_{role.spec.name}",
            # hidden layers integrate after the whole sweep (which reads the x̂ it stores; with
            # trace memory the state updater decays x̂), the output right after its sweep
            order=_RELAX_ORDER + role.index if role.relaxes else _slot(role.index) + 3,
        )
        sample = {"clock": self.sample_clock}
        if role.is_input:
            column = stimulus_index(role, self.model.input_size)
            present = f"xhat = stimulus_stream(t - chunk_start, {column})"
            group.run_regularly(
                present, when="start", order=_PRESENT, name=f"{group.name}_present", **sample
            )
            return group
        group.t_bad = NEVER * b2.second
        if role.relaxes:
            group.tau = self.protocol.tau_of(role.spec.name) * b2.second
        present = [f"a_c{c} = 0" for c in role.incoming]
        if role.is_output:
            present.append("target = target_stream(t - chunk_start, i)")
        group.run_regularly(
            "\n".join(present), when="start", order=_PRESENT, name=f"{group.name}_present", **sample
        )
        code = feedforward_code(role, self.protocol.relaxation_start, self.protocol.tolerance > 0)
        # after the sweep into this layer (order _slot) and the softmax normaliser (_slot + 2)
        group.run_regularly(
            code, when="groups", order=_slot(role.index) + 3, name=f"{group.name}_sweep", **sample
        )
        if self._bias_in_group(role):
            group.run_regularly(
                bias_code(), when="start", order=_BIAS, name=f"{group.name}_bias", **sample
            )
        if role.relaxes and self.per_step_code_in_brian:
            group.run_regularly(
                relaxation_step_code(), when="after_groups", name=f"{group.name}_delta"
            )
        return group

    def _make_monitors(self) -> dict[str, b2.StateMonitor]:
        record = self.protocol.record
        monitors = {}
        for role, group in zip(self.roles, self.groups, strict=True):
            if record.layers is not None and role.spec.name not in record.layers:
                continue
            variables = [v for v in record.variables if v in group.variables]
            size = role.spec.size
            neurons = (
                list(range(size))
                if record.neurons is None
                else [n for n in record.neurons if n < size]
            )
            if not variables or not neurons:
                continue
            rows = [r * size + n for r in range(self.replicas) for n in neurons]
            monitors[role.spec.name] = b2.StateMonitor(
                group,
                variables,
                record=rows,
                dt=(record.interval or self.protocol.dt) * b2.second,
                when="end",
                name=f"record_{group.name}",
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
    ) -> None:
        """Simulate consecutive minibatches of ``len(inputs)`` samples, updating after each.

        The run ends just after the tick that follows the last minibatch, at which its last
        plasticity and its update happen; that tick also presents ``next_input`` (the next
        chunk's samples; zeros when None) so that the next chunk continues seamlessly.
        ``batch_params`` then holds the parameters after each minibatch.

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
        """
        count = len(inputs)
        if not 0 < count <= self.chunk_samples:
            raise ValueError(f"a chunk holds 1 to {self.chunk_samples} samples, got {count}")
        self.batch_params, self.batch_signals = [], []
        ticks = self._fill_stimulus(inputs, targets, next_input, next_target)
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
        try:
            self.network.run(end + self.dt - self.network.t, namespace={}, **progress)
        finally:
            gc.unfreeze()
        self.ticks_done += ticks
        self._after_chunk()

    def _after_chunk(self) -> None:
        """Collect ``batch_params`` if the mode did not while running."""

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


class SynapsesNetwork(ARNetwork):
    """The neuromorphic reference: W and ψ are Brian2 ``Synapses`` with per-synapse plasticity.

    Samples are presented one after another; a chunk is one minibatch.

    Attributes
    ----------
    forward_synapses, feedback_synapses : list
        One ``Synapses`` per connection (``feedback_synapses[c]`` is None for a transposed ψ).
    """

    mode = "synapses"

    def _stimulus_rows(self) -> int:
        return self.protocol.batch_size + 1

    def _make_connections(self) -> list:
        self.forward_synapses, self.feedback_synapses = [], []
        for index, connection in enumerate(self.model.connections):
            self._make_synapses(index, connection)
        objects = [*self.forward_synapses, *(s for s in self.feedback_synapses if s is not None)]
        if self.model.output.activation == SOFTMAX:
            objects.append(self._make_softmax_norm())
        return objects

    def _make_synapses(self, index: int, connection: ConnectionSpec) -> None:
        source_index, target_index = (
            self._group_index(connection.source),
            self._group_index(connection.target),
        )
        source, target = self.groups[source_index], self.groups[target_index]
        models = synapse_model(connection, index, feeds_back=self.roles[source_index].relaxes)
        sample = {"clock": self.sample_clock}
        name = f"W_{connection.source}_{connection.target}"
        forward = b2.Synapses(
            source, target, models["forward"], namespace=self.namespace, name=name
        )
        # the top-down input is summed into the pre layer: post-major order (see all_to_all)
        pre, post = all_to_all(source.N, target.N, major="post")
        forward.connect(i=pre, j=post)
        # the sweep (a summed variable: no two threads write one target) once per sample,
        # before the target layer computes x̂ (order _slot + 3)
        _sum_before_the_step(forward)
        sweep = forward.summed_updaters[f"a_c{index}_post"]
        sweep._clock, sweep.when, sweep.order = self.sample_clock, "groups", _slot(target_index)
        forward.run_regularly(
            models["forward_learn"], when="start", order=_LEARN, name=f"{name}_learn", **sample
        )
        self.forward_synapses.append(forward)
        if "feedback" not in models:
            self.feedback_synapses.append(None)
            return
        name = f"psi_{connection.target}_{connection.source}"
        feedback = b2.Synapses(
            target, source, models["feedback"], namespace=self.namespace, name=name
        )
        # ψ sums into its post (lower) layer: pre-major order
        pre, post = all_to_all(target.N, source.N, major="pre")
        feedback.connect(i=pre, j=post)
        _sum_before_the_step(feedback)
        if "feedback_learn" in models:
            feedback.run_regularly(
                models["feedback_learn"], when="start", order=_LEARN, name=f"{name}_learn", **sample
            )
        self.feedback_synapses.append(feedback)

    def _make_softmax_norm(self) -> b2.Synapses:
        output = self.groups[-1]
        norm = b2.Synapses(
            output,
            output,
            "softmax_norm_post = exp(a_pre) : 1 (summed)",
            namespace=self.namespace,
            name="softmax_norm",
        )
        norm.connect()
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

    def _after_chunk(self) -> None:
        self.batch_params = [self.get_params()]

    def _fill_stimulus(self, inputs, targets, next_input, next_target) -> int:
        count = len(inputs)
        rate, feedback_rate = self.protocol.learning_rates(count)
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

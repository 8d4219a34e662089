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

from dataclasses import dataclass

import brian2 as b2
import numpy as np

from arsim.activations import ACTIVATIONS, OUTPUT_GRADIENT_EXPR, SOFTMAX
from arsim.oracle import Params
from arsim.spec import ConnectionSpec, LayerSpec, ModelSpec, ProtocolSpec

DIVERGENCE_LIMIT = 1e300
"""An activity that is NaN, infinite or beyond this magnitude counts as diverged."""
NEVER = 1e9
"""``t_bad`` of a neuron that never diverged, in seconds."""

# Order of the once-per-sample work in the 'start' slot of a sample tick.
_LEARN, _BIAS, _PRESENT = 0, 1, 2


def _slot(layer_index: int) -> int:
    """Base of the 'groups'-slot order numbers of layer ``layer_index`` (the sweep goes up)."""
    return 10 * (layer_index + 1)


@dataclass(frozen=True)
class LayerRole:
    """Where a layer sits in the network: input, hidden (relaxes) or output (clamped)."""

    index: int
    spec: LayerSpec
    incoming: tuple[int, ...]
    outgoing: tuple[int, ...]
    is_input: bool
    is_output: bool

    @property
    def relaxes(self) -> bool:
        """True for layers whose activity relaxes (neither input nor output)."""
        return not (self.is_input or self.is_output)


def layer_roles(model: ModelSpec) -> list[LayerRole]:
    """Incoming and outgoing connection indices of every layer."""
    roles = []
    last = len(model.layers) - 1
    for index, layer in enumerate(model.layers):
        incoming = tuple(c for c, conn in enumerate(model.connections) if conn.target == layer.name)
        outgoing = tuple(c for c, conn in enumerate(model.connections) if conn.source == layer.name)
        roles.append(LayerRole(index, layer, incoming, outgoing, index == 0, index == last))
    return roles


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


def layer_equations(role: LayerRole) -> str:
    """Neuron model of one layer (Brian2 equations; activities are dimensionless).

    Variables: ``xhat`` feedforward activity, ``fp`` f' at the feedforward pre-activation,
    ``x`` relaxing activity, ``delta = x · fp``, ``fb`` summed top-down input, ``a`` the
    pre-activation (``a_c<k>`` per incoming connection ``k`` plus the bias ``b``); shared
    ``chunk_start`` and ``apply_at`` time the presentation and the minibatch update; ``t_bad``
    the first time an activity went non-finite.
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
        lines.append(
            "relaxing = int(t_in_timesteps % steps_per_sample >= relax_start)"
            " * int(t_in_timesteps % steps_per_sample < relax_stop) : 1"
        )
        lines.append("dx/dt = relaxing * (-x + fb) / tau : 1")
    return "\n".join(lines)


def feedforward_code(role: LayerRole, relaxation_start: str) -> str:
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

    Returns a dict with the forward model (``forward``), its sweep code (``sweep``) and
    plasticity code (``forward_learn``) and, for ψ, ``feedback`` and, when learned,
    ``feedback_learn``. The top-down signal is ``delta = x · f'`` of the upper layer, or ``x``
    when the connection's relaxation drops the derivative. Without ``feeds_back`` (the source is
    the input layer, which does not relax) there is no top-down path, but a learned ψ still
    learns.
    """
    signal = "delta" if connection.derivative else "x"
    forward = ["w : 1", "dw : 1", "eta : 1 (shared)"]
    apply_pre = _APPLY_NOW.replace("apply_at", "apply_at_pre")
    models = {
        "sweep": f"a_c{index}_post += w * xhat_pre",
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
    """Brian2 objects of a model under a protocol, ready to run minibatches.

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
    forward_synapses, feedback_synapses : list
        One ``Synapses`` per connection (``feedback_synapses[c]`` is None for a transposed ψ).
    monitors : dict
        ``layer name -> StateMonitor``.
    """

    def __init__(
        self, model: ModelSpec, protocol: ProtocolSpec, params: Params, record: bool = True
    ):
        self.model, self.protocol = model, protocol
        self.roles = layer_roles(model)
        steps = protocol.phase_steps
        self.steps_per_sample = protocol.sample_steps
        self.dt = protocol.dt * b2.second
        self.samples_done = 0
        batch = protocol.batch_size
        sample_dt = self.steps_per_sample * self.dt
        # Per-chunk inputs: row s is sample s of the chunk (row `batch` the next chunk's first).
        zeros = np.zeros
        self.stimulus = b2.TimedArray(
            zeros((batch + 1, model.input.size)), dt=sample_dt, name="stimulus"
        )
        self.targets = b2.TimedArray(
            zeros((batch + 1, model.output.size)), dt=sample_dt, name="targets"
        )
        self.namespace = {
            "steps_per_sample": self.steps_per_sample,
            "relax_start": steps["feedforward"],
            "relax_stop": steps["feedforward"] + steps["relaxation"],
            "tau": protocol.tau * b2.second,
            "loss_scale": model.loss_scale,
            "stimulus": self.stimulus,
            "targets": self.targets,
            "divergence_limit": DIVERGENCE_LIMIT,
            "never": NEVER * b2.second,
            "step_dt": self.dt,
        }
        self.step_clock = b2.Clock(dt=self.dt, name="step_clock")
        self.sample_clock = b2.Clock(dt=sample_dt, name="sample_clock")
        self.groups = [self._make_group(role) for role in self.roles]
        self.forward_synapses, self.feedback_synapses = [], []
        for index, connection in enumerate(model.connections):
            self._make_synapses(index, connection)
        objects = [*self.groups, *self.forward_synapses]
        objects += [s for s in self.feedback_synapses if s is not None]
        if model.output.activation == SOFTMAX:
            objects.append(self._make_softmax_norm())
        self.monitors = self._make_monitors() if record else {}
        objects += list(self.monitors.values())
        self.network = b2.Network(*objects)
        self.set_params(params)

    # -- construction ----------------------------------------------------------------------
    def _group_index(self, name: str) -> int:
        return [layer.name for layer in self.model.layers].index(name)

    def _make_group(self, role: LayerRole) -> b2.NeuronGroup:
        group = b2.NeuronGroup(
            role.spec.size,
            layer_equations(role),
            method="euler",
            namespace=self.namespace,
            clock=self.step_clock if role.relaxes else self.sample_clock,
            name=f"layer_{role.spec.name}",
            order=_slot(role.index) + (3 if role.is_output else 5),
        )
        sample = {"clock": self.sample_clock}
        if role.is_input:
            present = "xhat = stimulus(t - chunk_start, i)"
            group.run_regularly(
                present, when="start", order=_PRESENT, name=f"{group.name}_present", **sample
            )
            return group
        group.t_bad = NEVER * b2.second
        present = [f"a_c{c} = 0" for c in role.incoming]
        if role.is_output:
            present.append("target = targets(t - chunk_start, i)")
        group.run_regularly(
            "\n".join(present), when="start", order=_PRESENT, name=f"{group.name}_present", **sample
        )
        code = feedforward_code(role, self.protocol.relaxation_start)
        # after the sweep into this layer (order _slot) and the softmax normaliser (_slot + 2)
        group.run_regularly(
            code, when="groups", order=_slot(role.index) + 3, name=f"{group.name}_sweep", **sample
        )
        if any(self.model.connections[c].bias for c in role.incoming):
            group.run_regularly(
                bias_code(), when="start", order=_BIAS, name=f"{group.name}_bias", **sample
            )
        if role.relaxes:
            group.run_regularly(
                relaxation_step_code(), when="after_groups", name=f"{group.name}_delta"
            )
        return group

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
        forward.connect()
        forward.run_regularly(
            models["forward_learn"], when="start", order=_LEARN, name=f"{name}_learn", **sample
        )
        # the sweep into a layer runs before that layer computes x̂ (order _slot + 3)
        forward.run_regularly(
            models["sweep"],
            when="groups",
            order=_slot(target_index),
            name=f"{name}_sweep",
            **sample,
        )
        self.forward_synapses.append(forward)
        if "feedback" not in models:
            self.feedback_synapses.append(None)
            return
        name = f"psi_{connection.target}_{connection.source}"
        feedback = b2.Synapses(
            target, source, models["feedback"], namespace=self.namespace, name=name
        )
        feedback.connect()
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
            monitors[role.spec.name] = b2.StateMonitor(
                group,
                variables,
                record=neurons,
                dt=(record.interval or self.protocol.dt) * b2.second,
                when="end",
                name=f"record_{group.name}",
            )
        return monitors

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

    # -- running -----------------------------------------------------------------------------
    def run_chunk(
        self,
        inputs: np.ndarray,
        targets: np.ndarray,
        next_input: np.ndarray | None = None,
        next_target: np.ndarray | None = None,
        report=None,
    ) -> None:
        """Simulate one minibatch, ``len(inputs)`` samples, and apply its weight changes.

        The run ends just after the next sample's tick, at which the minibatch's last
        plasticity and its update happen; that tick also presents ``next_input`` (zeros when
        None) so the following chunk continues seamlessly.

        Parameters
        ----------
        inputs : ndarray, shape (n, n_in)
            Stimuli, one row per sample (n at most the protocol's batch size).
        targets : ndarray, shape (n, n_out)
            Targets.
        next_input, next_target : ndarray, optional
            First sample of the next minibatch.
        report : callable, optional
            Called about once a second with the fraction of the chunk done.
        """
        count = len(inputs)
        if not 0 < count <= self.protocol.batch_size:
            raise ValueError(f"a chunk holds 1 to {self.protocol.batch_size} samples, got {count}")
        self.stimulus.values[:] = 0
        self.targets.values[:] = 0
        self.stimulus.values[:count] = inputs
        self.targets.values[:count] = targets
        if next_input is not None:
            self.stimulus.values[count] = next_input
            self.targets.values[count] = next_target
        sample_dt = self.steps_per_sample * self.dt
        chunk_start = self.samples_done * sample_dt
        end = (self.samples_done + count) * sample_dt
        for group in self.groups:
            group.chunk_start = chunk_start
            group.apply_at = end
        accumulated = count if self.protocol.batch_reduction == "mean" else 1
        for synapses in self.forward_synapses:
            synapses.eta = self.protocol.learning_rate / accumulated
        for synapses in self.feedback_synapses:
            if synapses is not None:
                synapses.eta = self.protocol.feedback_learning_rate / accumulated
        for group, role in zip(self.groups, self.roles, strict=True):
            if not role.is_input:
                group.eta_bias = self.protocol.learning_rate / accumulated
        progress = {}
        if report is not None:
            progress = {
                "report": lambda elapsed, done, start, duration: report(float(done)),
                "report_period": 1 * b2.second,
            }
        self.network.run(end + self.dt - self.network.t, namespace={}, **progress)
        self.samples_done += count

    def first_divergence(self) -> tuple[str, int, float] | None:
        """Earliest non-finite activity so far: ``(layer, neuron, t in seconds)``, or None."""
        found = None
        for role, group in zip(self.roles, self.groups, strict=True):
            if role.is_input:
                continue
            t_bad = np.asarray(group.t_bad[:])
            neuron = int(np.argmin(t_bad))
            if t_bad[neuron] < NEVER and (found is None or t_bad[neuron] < found[2]):
                found = (role.spec.name, neuron, float(t_bad[neuron]))
        return found

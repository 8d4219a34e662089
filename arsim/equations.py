"""The one place where the Brian2 neuron and synapse models are written, and their schedule.

The builders return Brian2 equations and code strings for a layer by its role in the graph
(:class:`LayerRole`) and for a connection's synapses; the order constants place the
once-per-sample and per-step work in Brian2's schedule slots (see :mod:`arsim.network` for the
timeline of a sample). The neuron model is composed of the components' ``brian2.Equations``
fragments (:mod:`arsim.components`); nothing here builds a Brian2 object that runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from brian2 import Equations, StateUpdateMethod, euler
from brian2.utils.caching import CacheKey

from arsim.activations import ACTIVATIONS, OUTPUT_GRADIENT_EXPR, SOFTMAX, SOFTMAX_EXPR
from arsim.components import derivative, forward, neuron_terms, plasticity, relaxation
from arsim.components import memory as memory_component
from arsim.spec import ConnectionSpec, LayerSpec, ModelSpec

RELAX_ORDER = 1000
"""Base order of the hidden layers' state updaters in the 'groups' slot: after every sweep."""

FORWARD_STEP_ORDER = 2000
"""Base order, in the 'groups' slot, of the per-step code of leaky forward dynamics: after
every state updater."""

LEARN_ORDER, BIAS_ORDER, PRESENT_ORDER = 0, 1, 2
"""Order of the once-per-sample work in the 'start' slot of a sample tick: the plasticity, then
the biases' plasticity, then the presentation of the next stimulus."""


def layer_slot(layer_index: int) -> int:
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
    """The relaxation gain of a hidden layer at this step (``Schedule.gate``).

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
    leaky_forward: bool = False,
    error_unit: bool = False,
) -> Equations:
    """Neuron model of one layer, composed of its components' ``Equations`` (dimensionless).

    Variables: ``xhat`` feedforward activity, ``fp`` f' at the feedforward pre-activation,
    ``x`` relaxing activity, ``delta = x · fp``, ``fb`` summed top-down input, ``a`` the
    pre-activation (``a_c<k>`` per incoming connection ``k`` plus the bias ``b``); shared
    ``chunk_start`` and ``apply_at`` time the presentation and the minibatch update; ``t_bad``
    the first time an activity went non-finite. A hidden layer's x relaxes
    (:func:`arsim.components.relaxation.x_equations`, gated by ``square_gate``: see
    :func:`gate_expression`) and its x̂ and f' follow the ``memory``
    (:data:`arsim.components.memory.HOLDS`). With ``leaky_forward`` every non-input layer
    integrates ``τ_f dx̂/dt = −x̂ + f(a)`` while ``forward_on`` (the feedforward phase), and
    its memory acts only outside it; with ``error_unit`` the output integrates
    ``τ_e dx/dt = −x + ∂L/∂x̂``.
    """
    timing = Equations("chunk_start : second (shared)\napply_at : second (shared)")
    if role.is_input:
        return Equations("xhat : 1") + timing
    if leaky_forward:
        xhat, fp = _leaky_forward_holds(role, memory)
    else:
        xhat, fp = memory_component.HOLDS[memory if role.relaxes else "ideal"]
    lines = [fp, "delta : 1", "b : 1", "db : 1", "eta_bias : 1 (shared)", "t_bad : second"]
    lines += [f"a_c{c} : 1" for c in role.incoming]
    lines.append(f"a = b + {_sum([f'a_c{c}' for c in role.incoming])} : 1")
    if role.is_output:
        lines += [_output_x(leaky_forward and error_unit), "target : 1"]
        if role.spec.activation == SOFTMAX:
            lines += ["softmax_norm : 1", "softmax_shift : 1"]
    else:
        lines += [f"fb_c{c} : 1" for c in role.outgoing]
        lines.append(f"fb = {_sum([f'fb_c{c}' for c in role.outgoing])} : 1")
        # the relaxation gain of this step of the sample period (Schedule.gate)
        lines.append(f"relaxing = {gate_expression(role, square_gate)} : 1")
        drive = neuron_terms.drive_expression(role.spec.drive)
        lines += relaxation.x_equations(noise > 0, stoppable, drive)
    equations = Equations(xhat) + timing + Equations("\n".join(lines))
    if role.spec.equations:
        equations += Equations(role.spec.equations)
    if leaky_forward:
        equations += _leaky_forward_equations(role, error_unit)
    return equations


def forward_on_expression(role: LayerRole) -> str:
    """1 in the layer's forward window (``Schedule.forward_window``), else 0.

    Two integer comparisons with ``forward_start_<k>`` and ``forward_stop_<k>``.
    """
    step, k = "t_in_timesteps % steps_per_sample", role.index
    return f"int({step} >= forward_start_{k}) * int({step} < forward_stop_{k})"


def _leaky_forward_holds(role: LayerRole, memory: str) -> tuple[str, str]:
    """x̂ and f' of a non-input layer under leaky forward dynamics.

    x̂ integrates :data:`~arsim.components.forward.XHAT_EXPR`; a hidden layer's memory acts
    while the forward gate is closed (:data:`~arsim.components.memory.WHILE_FORWARD_OFF`).
    """
    kind = memory if role.relaxes else "ideal"
    term = memory_component.WHILE_FORWARD_OFF[kind]
    xhat = f"dxhat/dt = {forward.XHAT_EXPR}{term} : 1"
    return xhat, memory_component.FP_WHILE_FORWARD_OFF.get(kind, "fp : 1")


def _output_x(error_unit: bool) -> str:
    """The output's x: clamped by code, or an error unit integrating toward ∂L/∂x̂."""
    if not error_unit:
        return "x : 1"
    rhs = forward.ERROR_UNIT_EXPR.format(gradient=OUTPUT_GRADIENT_EXPR)
    return f"dx/dt = {rhs} : 1\ntau_e : second (shared, constant)"


def _leaky_forward_equations(role: LayerRole, error_unit: bool) -> Equations:
    """The forward drive ``f(a)``, the forward gate and τ_f of leaky forward dynamics."""
    activation = role.spec.activation
    f_a = SOFTMAX_EXPR if activation == SOFTMAX else ACTIVATIONS[activation].f_expr
    return Equations(
        f"f_a = {f_a} : 1\nforward_on = {forward_on_expression(role)} : 1\ntau_f : second (shared)"
    )


def forward_step_code(role: LayerRole, error_unit: bool, watch_x: bool = True) -> str:
    """Code a non-input layer runs after every step of leaky forward dynamics.

    ``f' = f'(a)`` while the forward phase lasts (held, or decaying by the memory's state
    updater, outside it); the output's clamp follows its current x̂ (unless it is an error unit);
    ``delta = x · f'`` is stored with the new f' (a hidden layer's too:
    :func:`relaxation_step_code`, whose watch of x only with ``watch_x``); non-finite
    activities are watched.
    """
    activation = role.spec.activation
    fprime = "1.0" if activation == SOFTMAX else ACTIVATIONS[activation].fprime_expr
    lines = [f"fp = forward_on * ({fprime}) + (1 - forward_on) * fp"]
    if role.is_output:
        if not error_unit:
            lines.append(f"x = {OUTPUT_GRADIENT_EXPR}")
        lines.append(DELTA_CODE)
        lines.append(_first_bad("x", "t + dt"))
    elif role.relaxes:
        lines.append(relaxation_step_code(watch_x))
    lines.append(_first_bad("xhat", "t + dt"))
    return "\n".join(lines)


def presentation_reset_code(role: LayerRole, reset: bool, error_unit: bool) -> str:
    """Code a non-input layer runs at a presentation under leaky forward dynamics.

    With ``reset`` the layer starts from rest (x̂, f', x and δ are 0); the output's clamp is
    then computed for the new target (an error unit keeps integrating).
    """
    lines = ["xhat = 0", "fp = 0", "x = 0", "delta = 0"] if reset else []
    if role.is_output and not error_unit:
        lines += [f"x = {OUTPUT_GRADIENT_EXPR}", "delta = x * fp"]
    return "\n".join(lines)


def onset_code(role: LayerRole, relaxation_start: str, stoppable: bool = False) -> str:
    """Code a hidden layer runs at the start of every step: x starts at its onset step.

    ``delta = x · f'`` follows, so that the top-down input of the onset step sees the start;
    ``stoppable`` (relaxation until converged): the sample relaxes again from its onset.
    """
    onset = f"int(t_in_timesteps % steps_per_sample == relax_onset_{role.index})"
    start = "xhat" if relaxation_start == "feedforward" else "0"
    code = f"x = {onset} * {start} + (1 - {onset}) * x\ndelta = x * fp"
    return code + (f"\nactive = {onset} + (1 - {onset}) * active" if stoppable else "")


def feedforward_code(role: LayerRole, relaxation_start: str, stoppable: bool = False) -> str:
    """Code a layer runs in the sweep: store x̂ and f', start (or clamp) x."""
    activation = role.spec.activation
    if activation == SOFTMAX:
        lines = [f"xhat = {SOFTMAX_EXPR}", "fp = 1.0"]
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


DELTA_CODE = "delta = x * fp"
"""The statement storing a layer's ``δ = x · f'`` (what the top-down products read)."""


def relaxation_step_code(watch: bool = True) -> str:
    """Code a hidden layer runs after every Euler step: store δ and (``watch``) mark non-finite x.

    It is fused into the layer's state update (:class:`EulerThen`), or under leaky forward
    dynamics appended to :func:`forward_step_code` (which changes f' after the update).
    """
    return DELTA_CODE + ("\n" + _first_bad("x", "t + dt") if watch else "")


class EulerThen(StateUpdateMethod, CacheKey):
    """Brian2's forward Euler (Euler–Maruyama with noise), then ``code`` in the same code object.

    The statements of ``code`` follow the update of the state variables, so they read the
    values after the step: a layer's ``delta = x · f'`` and its divergence watch are stored
    by its state updater instead of by one more code object per layer and step. Passed as the
    ``method`` of a ``NeuronGroup``; the integration itself is :data:`brian2.euler`'s.

    Parameters
    ----------
    code : str
        Brian2 abstract code (one statement a line) run after the Euler step.
    """

    def __init__(self, code: str):
        self.code = code

    def can_integrate(self, equations, variables, method_options=None) -> bool:
        """Whatever :data:`brian2.euler` integrates."""
        return euler.can_integrate(equations, variables, method_options)

    def __call__(self, equations, variables=None, method_options=None) -> str:
        """Euler's abstract code for ``equations``, then :attr:`code`."""
        return euler(equations, variables, method_options) + "\n" + self.code

    def __repr__(self) -> str:
        return f"EulerThen({self.code!r})"


def bias_code(delta: str = "delta") -> str:
    """Once-per-sample bias plasticity: accumulate δ, apply at the minibatch's end.

    ``delta`` names the layer's ``x ⊙ f'`` as the update reads it.
    """
    return plasticity.BIAS_LEARN.format(apply=_APPLY_NOW, delta=delta)


def synapse_model(
    connection: ConnectionSpec, index: int, feeds_back: bool, sums: tuple[str, ...] = ()
) -> dict[str, str]:
    """Synapse models of connection ``index``: forward ``W`` and, unless transposed, ``ψ``.

    Returns a dict with the forward model (``forward``; the sweep ``a_c<k>_post = Σ w x̂_pre``
    is its summed variable, which the mode runs once per sample) and its plasticity code
    (``forward_learn``) and, for ψ, ``feedback`` and, when learned,
    ``feedback_learn``. The top-down signal is the upper layer's ``x · f'``, f' where the
    connection's ``derivative_at`` says (:data:`~arsim.components.derivative.RELAXATION_SIGNAL`),
    or ``x`` when the connection's relaxation drops the derivative; the update reads the
    target's ``x · f'`` of ``update_derivative_at`` and the presynaptic factor of
    ``update_uses``. Without ``feeds_back`` (the source is the input layer, which does not
    relax) there is no top-down path, but a learned ψ still learns. ``sums`` are the target's
    pre-activations from the current activities (``a_now``, ``a_end``) this connection adds a
    term to, summed variables the mode schedules.
    """
    if connection.derivative:
        signal = derivative.RELAXATION_SIGNAL[connection.derivative_at]
    else:
        signal = "x"
    forward = [
        "w : 1",
        "dw : 1",
        "eta : 1 (shared)",
        f"a_c{index}_post = w * xhat_pre : 1 (summed)",
    ]
    now = "x" if feeds_back else "xhat"  # an input layer's current activity is its stimulus
    forward += [f"{a}_c{index}_post = w * {now}_pre : 1 (summed)" for a in sums]
    apply_pre = _APPLY_NOW.replace("apply_at", "apply_at_pre")
    update = {
        "apply": apply_pre,
        "delta": derivative.UPDATE_SIGNAL[connection.update_derivative_at],
        "pre": plasticity.presynaptic_variable(connection.update_uses, feeds_back),
    }
    models = {"forward_learn": plasticity.FORWARD_LEARN.format(**update)}
    if connection.transposed:
        if feeds_back:
            forward.append(f"fb_c{index}_pre = w * {signal}_post : 1 (summed)")
    else:
        feedback = ["psi : 1", "dpsi : 1", "eta : 1 (shared)"]
        if feeds_back:
            feedback.append(f"fb_c{index}_post = psi * {signal}_pre : 1 (summed)")
        models["feedback"] = "\n".join(feedback)
        if connection.learns_feedback:
            models["feedback_learn"] = plasticity.FEEDBACK_LEARN.format(**update)
    models["forward"] = "\n".join(forward)
    return models

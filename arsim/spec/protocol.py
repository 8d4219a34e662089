"""The protocol: timing, learning and recording of a simulation.

:func:`load_protocol` reads a protocol file (TOML) into a frozen, validated
:class:`ProtocolSpec`; :func:`check_compatible` checks what depends on a model and a protocol
together.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from arsim.spec import terms
from arsim.spec.forward import FeedforwardSpec, PlasticitySpec, read_feedforward, read_plasticity
from arsim.spec.model import ModelSpec
from arsim.spec.record import RecordSpec, read_record
from arsim.spec.schema import (
    BATCH_REDUCTIONS,
    PHASES,
    RECORDABLE,
    RELAXATION_INPUTS,
    RELAXATION_ORDERS,
    RELAXATION_STARTS,
    WAVEFORMS,
    SpecError,
    Table,
    is_multiple,
    parse_phase,
    phase_to_step,
    read_toml,
)
from arsim.spec.spikes import SpikesSpec, check_spikes_with, spikes_from_table

__all__ = [
    "PRECISIONS",
    "OscillationSpec",
    "ProtocolSpec",
    "RecordSpec",
    "check_compatible",
    "load_protocol",
    "protocol_from_dict",
]

PRECISIONS = ("double", "single")
"""Floating point of a simulation (the protocol's ``precision``): float64 or float32."""


@dataclass(frozen=True)
class OscillationSpec:
    """An oscillation whose phase gates the sweep, the relaxation and the plasticity.

    One cycle is one sample period: the feedforward sweep happens at phase 0, layers relax
    in a window of the cycle (each layer's window shifted by its phase offset) and the weights
    change at the plasticity phase.

    Attributes
    ----------
    frequency : float
        Cycles per second (Hz); the period 1/f is a whole number of steps.
    steps_per_cycle : int or None
        Steps of one cycle when the protocol gives them instead of dt
        (``oscillation.steps_per_cycle``; dt = 1/(f · steps_per_cycle)); None: dt was given.
    waveform : {'square', 'sine'}
        Relaxation gain across the window (see :data:`WAVEFORMS`).
    window : (float, float)
        Start and end phase of the relaxation window, degrees in (0, 360].
    plasticity : float
        Phase at which the weights change, degrees in (0, 360]; 360 is the cycle's end.
    phase_offset : tuple of (str, float)
        Lag of particular layers' windows in degrees (``[oscillation.phase_offset]``).
    feedforward : (float, float) or None
        Start and end phase of the forward window of leaky forward dynamics (each layer's
        shifted by its phase offset); None: from 0 deg until the earliest relaxation window.
    """

    frequency: float
    waveform: str = "square"
    window: tuple[float, float] = (0.0, 360.0)
    plasticity: float = 360.0
    phase_offset: tuple[tuple[str, float], ...] = ()
    feedforward: tuple[float, float] | None = None
    steps_per_cycle: int | None = None


@dataclass(frozen=True)
class ProtocolSpec:
    """Timing, learning and recording of a simulation protocol.

    Attributes
    ----------
    name : str
        Protocol name.
    dt : float
        Integration step in seconds.
    tau : float
        Time constant of the leaky-integrator neurons in seconds; ``η_x = dt / τ``.
    feedforward, relaxation, update : float
        Durations of the three phases of each sample in seconds (multiples of dt).
    learning_rate : float
        η of the forward weights and biases.
    feedback_learning_rate : float
        η of the learned feedback weights ψ.
    batch_size : int
        Samples whose weight changes accumulate before they are applied.
    batch_reduction : {'sum', 'mean'}
        Whether a batch's weight change is the sum of the per-sample changes or their mean.
    record : RecordSpec
        What to record.
    relaxation_start : {'feedforward', 'zero'}
        Where the hidden activities start the relaxation: at their feedforward values x̂ (AR) or
        at rest (0).
    layer_tau : tuple of (str, float)
        Time constants of particular layers in seconds (``[layer_tau]``), overriding ``tau``.
    noise : float
        Amplitude σ of additive white noise on the relaxation, ``τ dx/dt = −x + fb + σ √τ ξ``
        (dimensionless): with a fixed input, x fluctuates with variance σ²/2 (σ²/(2 − η_x)
        under Euler–Maruyama). Drawn from the run's seed.
    feedback_delay : tuple of (str, float)
        Transmission delay in seconds of the top-down signal of particular connections, keyed
        ``"source-target"`` (``[feedback_delay]``): during the relaxation a layer receives the
        signal of its child as it was that long ago (as it was at the relaxation's start, before
        that).
    tolerance : float
        Relaxation until converged: a sample stops relaxing at the first step where every
        hidden neuron has ``|−x + fb| = τ |dx/dt| < tolerance`` (activity units); the phase
        duration is then the longest it may take. 0 (default): always the full phase.
    jitter : float
        Largest shift of the boundary between the feedforward and relaxation phases in
        seconds (``[phases] jitter``): every minibatch draws a whole number of steps uniformly
        from ``[−jitter, +jitter]`` (seeded), lengthens its feedforward phase by it and
        shortens its relaxation by the same; the sample period and a plasticity window stay
        where they are in the period. 0 (default): the same phases for every minibatch.
    oscillation : OscillationSpec or None
        The oscillation that sets the phases (``[oscillation]``); the three phase durations
        are then derived from it: the feedforward phase lasts until the earliest window opens,
        the relaxation until the latest closes.
    dwell : float
        Stimulus stream (``[stimulus] dwell``): each stimulus is shown for this long in seconds,
        on its own clock, whatever the phase; 0 (default) shows one stimulus per sample period.
    forward : FeedforwardSpec
        The forward dynamics, relaxation onsets and output error unit (``[feedforward]``).
    plasticity : PlasticitySpec
        When the weights change (``[plasticity]``).
    relaxation_order : {'parallel', 'top-down'}
        How a relaxation step updates the layers (``[relaxation] order``): every layer from the
        previous step's activities (parallel Euler), or one after the other from the top down,
        each reading the activity the layer above got in the same step (a sequential sweep).
    relaxation_input : {'clamped', 'relaxes'}
        The input layers' activity x during the relaxation (``[relaxation] input``): the
        stimulus, or starting at the stimulus and relaxing with its top-down input like a hidden
        layer (τ of the layer, the relaxation window of the protocol); the stimulus stays in x̂.
    precision : {'double', 'single'}
        Floating point of the simulation: float64 (default) or float32 neurons, weights and
        matrix products (dense mode only; the NumPy oracle stays float64).
    spikes : SpikesSpec or None
        Signals that travel between layers as spikes (``[spikes]``); None: as rates.
    source : str
        File the protocol was read from.
    """

    name: str
    dt: float
    tau: float
    feedforward: float
    relaxation: float
    update: float
    learning_rate: float = 0.0005
    feedback_learning_rate: float = 0.0005
    batch_size: int = 64
    batch_reduction: str = "sum"
    record: RecordSpec = field(default_factory=RecordSpec)
    relaxation_start: str = "feedforward"
    layer_tau: tuple[tuple[str, float], ...] = ()
    noise: float = 0.0
    feedback_delay: tuple[tuple[str, float], ...] = ()
    tolerance: float = 0.0
    jitter: float = 0.0
    oscillation: OscillationSpec | None = None
    dwell: float = 0.0
    forward: FeedforwardSpec = field(default_factory=FeedforwardSpec)
    plasticity: PlasticitySpec = field(default_factory=PlasticitySpec)
    relaxation_order: str = "parallel"
    relaxation_input: str = "clamped"
    precision: str = "double"
    spikes: SpikesSpec | None = None
    source: str = "<spec>"

    def to_dict(self) -> dict:
        """Plain nested dict (for the run folder's resolved configuration)."""
        return asdict(self)


def protocol_from_dict(data: dict, source: str | Path = "<spec>") -> ProtocolSpec:
    """Validate a protocol declaration (the parsed TOML) into a :class:`ProtocolSpec`."""
    root = Table(data, source)
    name = root.safe_name(Path(str(source)).stem)
    tau, dt = _time_step(root)
    dt_text = data.get("dt") or f"{dt * 1e3:.10g} ms (1/oscillation.steps_per_cycle of 1/f)"
    layer_tau = _named_durations(
        root.table("layer_tau"),
        lambda value: value > 0 and dt < 2 * value,
        f"a time constant > dt/2 = {dt / 2:g} s (forward Euler is unstable below)",
    )
    feedback_delay = _named_durations(
        root.table("feedback_delay"),
        lambda value: value >= 0 and is_multiple(value, dt),
        f"a delay >= 0 that is a multiple of dt = {dt_text}",
    )
    oscillation, durations = _oscillation(root, dt, dt_text)
    phases = root.table("phases", required=oscillation is None)
    relaxation_start, tolerance = _phases(phases, oscillation, durations, dt, dt_text)
    jitter = _jitter(phases, oscillation, durations, dt, dt_text)
    noise = root.number("noise", ProtocolSpec.noise, low=0.0)
    precision = root.get("precision", str, ProtocolSpec.precision, choices=PRECISIONS)
    phases.finish()
    dwell = _stimulus(root.table("stimulus"), dt, dt_text)
    rate, feedback_rate, batch_size, reduction = _learning(root.table("learning"))
    record = read_record(root.table("record"), dt, dt_text)
    forward, plasticity = _dynamics(root, oscillation, durations, dt)
    relaxation_order, relaxation_input = _relaxation(
        root.table("relaxation"), tolerance > 0 or any(d > 0 for _, d in feedback_delay)
    )
    _check_jitter(phases, jitter, forward, plasticity, tolerance, dwell, feedback_delay)
    spikes = None
    if "spikes" in data:
        spikes = spikes_from_table(root.table("spikes"), dt)
        check_spikes_with(spikes, root.table("spikes"), {
            "relaxation.order": relaxation_order != "parallel",
            "relaxation.input": relaxation_input != "clamped",
            "phases.tolerance": tolerance > 0,
            "stimulus.dwell": dwell > 0,
            "feedback_delay": any(delay > 0 for _, delay in feedback_delay),
        })  # fmt: skip
    elif "spikes" in record.variables:
        raise root.table("record").error(
            "variables", "'spikes' records spiking feedback: expected a [spikes] table too"
        )
    root.finish()
    return ProtocolSpec(
        name=name,
        dt=dt,
        tau=tau,
        **durations,
        learning_rate=rate,
        feedback_learning_rate=feedback_rate,
        batch_size=batch_size,
        batch_reduction=reduction,
        record=record,
        relaxation_start=relaxation_start,
        layer_tau=layer_tau,
        noise=noise,
        feedback_delay=feedback_delay,
        tolerance=tolerance,
        jitter=jitter,
        oscillation=oscillation,
        dwell=dwell,
        forward=forward,
        plasticity=plasticity,
        relaxation_order=relaxation_order,
        relaxation_input=relaxation_input,
        precision=precision,
        spikes=spikes,
        source=str(source),
    )


def _dynamics(
    root: Table, oscillation: OscillationSpec | None, durations: dict, dt: float
) -> tuple[FeedforwardSpec, PlasticitySpec]:
    """The ``[feedforward]`` and ``[plasticity]`` tables, checked against the phases."""
    table = root.table("feedforward")
    forward = read_feedforward(table, dt, sum(durations.values()))
    if oscillation is not None and oscillation.feedforward is not None and not forward.leaky:
        raise SpecError(
            table.file, "oscillation.feedforward", "applies to [feedforward] kind = 'leaky' only"
        )
    if oscillation is not None:
        for key in ("relaxation_onset", "layer_onset"):
            if key in table.data:
                raise table.error(key, "the [oscillation] sets the relaxation windows")
    table = root.table("plasticity")
    plasticity = read_plasticity(table, dt, durations["relaxation"])
    if plasticity.continuous and oscillation is not None and oscillation.plasticity != 360.0:
        raise table.error(
            "continuous",
            "the weights change at every relaxation step; remove oscillation.plasticity "
            "(a plasticity phase) or set continuous = false",
        )
    return forward, plasticity


def _time_step(root: Table) -> tuple[float, float]:
    """The time constant τ and the step dt in seconds, dt in forward Euler's stable range."""
    tau = root.duration("tau")
    if tau <= 0:
        raise root.error("tau", f"expected a positive time constant, got {root.data['tau']!r}")
    dt = _cycle_step(root)
    if dt is None:
        dt = root.duration("dt")
    if dt <= 0:
        raise root.error("dt", f"expected a positive step, got {root.data['dt']!r}")
    if dt >= 2 * tau:
        raise root.error(
            "dt",
            f"forward Euler is unstable for dt >= 2 tau; got dt = {dt * 1e3:g} ms with tau = "
            f"{root.data['tau']} (dt/tau = {dt / tau:g}; 0.1 is the paper's value)",
        )
    return tau, dt


def _cycle_step(root: Table) -> float | None:
    """The step in seconds set by ``[oscillation] steps_per_cycle`` (a cycle in that many steps).

    None when the key is absent (the protocol gives ``dt``). An oscillation at 12 Hz has a
    period of 83.33… ms, no whole number of steps of a decimal dt: ``steps_per_cycle = 250``
    says what is meant, dt = 1/(12 Hz · 250) = 0.3333… ms.
    """
    oscillation = root.data.get("oscillation")
    if not isinstance(oscillation, dict) or "steps_per_cycle" not in oscillation:
        return None
    table = Table(oscillation, root.file, "oscillation")
    steps = table.integer("steps_per_cycle", low=2)
    if "dt" in root.data:
        raise root.error(
            "dt",
            "oscillation.steps_per_cycle sets dt = 1/(frequency · steps_per_cycle); "
            "remove one of dt and steps_per_cycle",
        )
    root.used.add("dt")
    frequency = table.frequency("frequency")
    if frequency <= 0:
        raise table.error(
            "frequency", f"expected a frequency > 0 Hz, got {oscillation['frequency']!r}"
        )
    return 1.0 / (frequency * steps)


def _phases(
    table: Table, oscillation: OscillationSpec | None, durations: dict, dt: float, dt_text
) -> tuple[str, float]:
    """The ``[phases]`` table: fills ``durations`` (seconds) unless an oscillation set them.

    Returns the relaxation start and the convergence tolerance.
    """
    for phase in PHASES if oscillation is not None else ():
        if phase in table.data:
            raise table.error(
                phase, "the [oscillation] sets the phase durations; remove this key or it"
            )
    for phase in PHASES if oscillation is None else ():
        minimum = 0 if phase == "relaxation" else dt
        value = table.duration(phase, dt if phase != "relaxation" else ...)
        if value < minimum - 1e-12 * dt or not is_multiple(value, dt):
            raise table.error(
                phase,
                f"expected a multiple of dt = {dt_text} that is at least "
                f"{'0' if phase == 'relaxation' else 'one step'}; "
                f"got {table.data.get(phase)!r}",
            )
        durations[phase] = value
    start = table.get("start", str, ProtocolSpec.relaxation_start, choices=RELAXATION_STARTS)
    tolerance = table.number("tolerance", ProtocolSpec.tolerance, low=0.0)
    return start, tolerance


def _relaxation(table: Table, stops_or_delays: bool) -> tuple[str, str]:
    """The ``[relaxation]`` table: the update order of a step and what the input layers do.

    ``stops_or_delays``: the protocol relaxes until converged or delays a top-down signal,
    which the top-down order does not run with.
    """
    order = table.get("order", str, ProtocolSpec.relaxation_order, choices=RELAXATION_ORDERS)
    if order == "top-down" and stops_or_delays:
        raise table.error(
            "order", "'top-down' does not run with phases.tolerance or feedback_delay yet"
        )
    inputs = table.get("input", str, ProtocolSpec.relaxation_input, choices=RELAXATION_INPUTS)
    table.finish()
    return order, inputs


def _jitter(
    table: Table, oscillation: OscillationSpec | None, durations: dict, dt: float, dt_text
) -> float:
    """``[phases] jitter`` in seconds: the largest shift of the phase boundary (0: none)."""
    jitter = table.duration("jitter", ProtocolSpec.jitter)
    if jitter == 0:
        return 0.0
    if oscillation is not None:
        raise table.error("jitter", "the [oscillation] fixes the phases; remove phases.jitter")
    shortest = min(durations["feedforward"], durations["relaxation"])
    if jitter < 0 or not is_multiple(jitter, dt) or jitter > shortest - dt + 1e-12 * dt:
        raise table.error(
            "jitter",
            f"expected a multiple of dt = {dt_text} from 0 to one step less than the shorter of "
            f"the feedforward and relaxation phases ({shortest - dt:g} s); "
            f"got {table.data['jitter']!r}",
        )
    return jitter


def _check_jitter(
    table: Table, jitter, forward, plasticity, tolerance, dwell, feedback_delay
) -> None:
    """Refuse what a per-minibatch phase boundary does not combine with, naming the key."""
    if jitter == 0:
        return
    others = {
        "feedforward.relaxation_onset": forward.relaxation_onset is not None,
        "feedforward.layer_onset": bool(forward.layer_onset),
        "phases.tolerance": tolerance > 0,
        "stimulus.dwell": dwell > 0,
        "feedback_delay": any(delay > 0 for _, delay in feedback_delay),
    }
    for key, present in others.items():
        if present:
            raise table.error("jitter", f"a jittered phase boundary does not run with {key}")
    if plasticity.window is not None and plasticity.window[0] < jitter - 1e-12:
        raise table.error(
            "jitter",
            f"the plasticity window must stay within the relaxation at every shift: its start "
            f"({plasticity.window[0]:g} s into the relaxation) must be at least the jitter "
            f"({jitter:g} s)",
        )


def _stimulus(table: Table, dt: float, dt_text) -> float:
    """The ``[stimulus]`` table: the stream's dwell in seconds (0: no stream)."""
    dwell = table.duration("dwell", ProtocolSpec.dwell)
    if dwell < 0 or not is_multiple(dwell, dt) or 0 < dwell < dt:
        raise table.error(
            "dwell",
            f"expected a multiple of dt = {dt_text} (> 0), got {table.data['dwell']!r}",
        )
    table.finish()
    return dwell


def _learning(table: Table) -> tuple[float, float, int, str]:
    """The ``[learning]`` table: η of W, η of ψ, the batch size and the batch reduction."""
    rate = table.number("rate", ProtocolSpec.learning_rate, low=0.0)
    feedback_rate = table.number("feedback_rate", rate, low=0.0)
    batch_size = table.integer("batch_size", ProtocolSpec.batch_size, low=1)
    reduction = table.get(
        "batch_reduction", str, ProtocolSpec.batch_reduction, choices=BATCH_REDUCTIONS
    )
    table.finish()
    return rate, feedback_rate, batch_size, reduction


def _oscillation(root: Table, dt: float, dt_text) -> tuple[OscillationSpec | None, dict]:
    """The ``[oscillation]`` table and the phase durations (seconds) it implies, or (None, {})."""
    if "oscillation" not in root.data:
        root.used.add("oscillation")
        return None, {}
    table = root.table("oscillation")
    frequency = table.frequency("frequency")
    text = table.data["frequency"]
    if frequency <= 0:
        raise table.error("frequency", f"expected a frequency > 0 Hz, got {text!r}")
    steps_per_cycle = table.integer("steps_per_cycle", None, low=2)
    if not is_multiple(1.0 / frequency, dt):
        raise table.error(
            "frequency",
            f"the period 1/f = {1e3 / frequency:g} ms of {text!r} is not a multiple of "
            f"dt = {dt_text}; give oscillation.steps_per_cycle instead of dt (dt is then "
            "1/(f · steps_per_cycle))",
        )
    period = int(round(1.0 / frequency / dt))
    waveform = table.get("waveform", str, OscillationSpec.waveform, choices=WAVEFORMS)
    window = table.get("relaxation", list)
    if len(window) != 2:
        raise table.error(
            "relaxation",
            f"expected [start, end] phases such as ['30 deg', '330 deg'], got {window}",
        )
    start, stop = (parse_phase(value, table.file, table.key("relaxation")) for value in window)
    if not 0 <= start < stop or stop - start > 360:
        raise table.error(
            "relaxation",
            "expected a window of at most one cycle, 0 deg <= start < end <= 360 deg; "
            f"got {window}",
        )
    plasticity = table.phase("plasticity", OscillationSpec.plasticity)
    if not 0 < plasticity <= 360:
        raise table.error(
            "plasticity", f"expected a phase in (0 deg, 360 deg], got {table.data['plasticity']!r}"
        )
    offsets_table = table.table("phase_offset")
    offsets = tuple((name, offsets_table.phase(name)) for name in list(offsets_table.data))
    offsets_table.finish()
    forward = _forward_window(table, period, offsets)
    table.finish()
    to_step = lambda degrees: phase_to_step(degrees, period)  # noqa: E731
    windows = {}
    for name, lag in (("", 0.0), *offsets):
        first, stop_step = to_step(start + lag), to_step(stop + lag)
        where = f"phase_offset.{name}" if name else "relaxation"
        if first < 1 or stop_step > period:
            raise table.error(
                where,
                f"the window {start + lag:g}-{stop + lag:g} deg leaves the cycle: it must "
                f"start after the sweep's step (>= {360 / period:g} deg) and end by 360 deg",
            )
        if stop_step <= first:
            raise table.error(where, f"the window is shorter than one step of {period} per cycle")
        windows[name] = (first, stop_step)
    if to_step(plasticity) < 1:
        raise table.error(
            "plasticity", f"expected a phase after the sweep's step, got {plasticity:g} deg"
        )
    first = min(w[0] for w in windows.values())
    last = max(w[1] for w in windows.values())
    durations = {
        "feedforward": first * dt,
        "relaxation": (last - first) * dt,
        "update": (period - last) * dt,
    }
    oscillation = OscillationSpec(
        frequency, waveform, (start, stop), plasticity, offsets, forward, steps_per_cycle
    )
    return oscillation, durations


def _forward_window(table: Table, period: int, offsets: tuple) -> tuple[float, float] | None:
    """``oscillation.feedforward``: the forward window's phases, each layer's within the cycle."""
    window = table.get("feedforward", list, None)
    if window is None:
        return None
    if len(window) != 2:
        raise table.error("feedforward", f"expected [start, end] phases, got {window}")
    start, stop = (parse_phase(value, table.file, table.key("feedforward")) for value in window)
    for lag in (0.0, *(lag for _, lag in offsets)):
        first, last = phase_to_step(start + lag, period), phase_to_step(stop + lag, period)
        if not 0 <= first < last <= period:
            raise table.error(
                "feedforward",
                f"expected a window within the cycle for every layer's phase offset, 0 deg <= "
                f"start < end <= 360 deg; got {window} (lag {lag:g} deg)",
            )
    return start, stop


def _named_durations(table: Table, valid, expected: str) -> tuple[tuple[str, float], ...]:
    """Every key of ``table`` with its duration in seconds, each checked by ``valid``."""
    pairs = []
    for key in list(table.data):
        value = table.duration(key)
        if not valid(value):
            raise table.error(key, f"expected {expected}, got {table.data[key]!r}")
        pairs.append((key, value))
    table.finish()
    return tuple(pairs)


def load_protocol(path: str | Path) -> ProtocolSpec:
    """Read and validate a protocol file (TOML). Raises :class:`SpecError`."""
    return protocol_from_dict(read_toml(path), str(path))


def check_compatible(model: ModelSpec, protocol: ProtocolSpec) -> None:
    """Check what depends on both files (layer names). Raises :class:`SpecError`."""
    names = [layer.name for layer in model.layers]
    if model.memory.kind != "ideal" and protocol.dt >= 2 * model.memory.tau:
        raise SpecError(
            model.source,
            "memory.tau",
            f"forward Euler needs the memory time constant above dt/2 = {protocol.dt / 2:g} s "
            f"(dt of {protocol.source}); got {model.memory.tau:g} s",
        )
    connections = [f"{c.source}-{c.target}" for c in model.connections]
    for connection, _ in protocol.feedback_delay:
        if connection not in connections:
            raise SpecError(
                protocol.source,
                f"feedback_delay.{connection}",
                f"no connection {connection!r} in model {model.source}; connections are "
                f"{connections} (source-target)",
            )
    offsets = protocol.oscillation.phase_offset if protocol.oscillation else ()
    per_layer = (
        ("layer_tau", protocol.layer_tau),
        ("oscillation.phase_offset", offsets),
        ("feedforward.layer_tau", protocol.forward.layer_tau),
        ("feedforward.layer_onset", protocol.forward.layer_onset),
        ("spikes.layer_scale", protocol.spikes.layer_scale if protocol.spikes else ()),
    )
    for key, pairs in per_layer:
        for layer, _ in pairs:
            if layer not in names:
                raise SpecError(
                    protocol.source,
                    f"{key}.{layer}",
                    f"no layer {layer!r} in model {model.source}; layers are {names}",
                )
    for layer in protocol.record.layers or ():
        if layer not in names:
            raise SpecError(
                protocol.source,
                "record.layers",
                f"no layer {layer!r} in model {model.source}; layers are {names}",
            )
    _check_recorded_variables(model, protocol)


def _check_recorded_variables(model: ModelSpec, protocol: ProtocolSpec) -> None:
    """Every ``[record] variables`` entry is a neuron variable or one a recorded layer declares."""
    recorded = protocol.record.layers
    declared = sorted(
        {
            name
            for layer in model.layers
            if recorded is None or layer.name in recorded
            for name in terms.declared_names(layer.equations)
        }
    )
    neuron = [name for name in RECORDABLE if name != "spikes" or protocol.spikes is not None]
    allowed = [*neuron, *declared]
    for variable in protocol.record.variables:
        if variable not in allowed:
            raise SpecError(
                protocol.source,
                "record.variables",
                f"expected names from {allowed} (the neuron variables, `spikes` with a "
                f"[spikes] table, and those the recorded layers of model {model.source} "
                f"declare), got {variable!r}",
            )

"""The ``[feedforward]`` and ``[plasticity]`` tables: forward dynamics, when weights change.

``[feedforward]`` makes the feedforward pass a dynamical process (``kind = "leaky"``: every
non-input layer integrates ``τ_f dx̂/dt = −x̂ + f(a)`` during the feedforward phase), lets the
relaxation start before that phase ends (``relaxation_onset``) and gives the output an error
unit (``error_tau``). ``[plasticity]`` makes the weights change at every relaxation step of a
window (``continuous``) instead of once after the relaxation.
"""

from __future__ import annotations

from dataclasses import dataclass

from arsim.spec.schema import FORWARD_KINDS, Table, parse_duration


@dataclass(frozen=True)
class PlasticitySpec:
    """When the weights change (``[plasticity]``).

    Attributes
    ----------
    continuous : bool
        The weights change at the end of every relaxation step of ``window`` by ``η/K`` of the
        usual rule (``K`` the steps of the window), read from the activities after that step;
        no update at the end of the sample period.
    window : (float, float) or None
        Start and end of that window in seconds from the relaxation's start; None: the whole
        relaxation phase.
    """

    continuous: bool = False
    window: tuple[float, float] | None = None


@dataclass(frozen=True)
class FeedforwardSpec:
    """How the feedforward pass unfolds in time (``[feedforward]``).

    Attributes
    ----------
    kind : {'instant', 'leaky'}
        ``instant``: the sweep reaches every layer within the presentation's step and x̂, f'
        are held; ``leaky``: every non-input layer integrates ``τ_f dx̂/dt = −x̂ + f(a)`` with
        ``f' = f'(a)`` at the current ``a`` while the feedforward phase lasts.
    tau : float
        τ_f in seconds (leaky).
    layer_tau : tuple of (str, float)
        τ_f of particular layers in seconds (``[feedforward.layer_tau]``).
    reset : bool
        A sample starts from rest (x̂, f' and x of every non-input layer 0); otherwise the
        network carries its state over from the previous sample.
    relaxation_onset : float or None
        Time from the presentation at which the relaxation starts, in seconds; None: at the
        end of the feedforward phase. Before that end the relaxation reads the forward values
        as they are at each step.
    layer_onset : tuple of (str, float)
        The onset of particular layers in seconds (``[feedforward.layer_onset]``).
    error_tau : float
        τ_e of the output's error unit in seconds, ``τ_e dx_L/dt = −x_L + ∂L/∂x̂_L``; 0 clamps
        the output to ``∂L/∂x̂_L`` at every step.
    """

    kind: str = "instant"
    tau: float = 0.0
    layer_tau: tuple[tuple[str, float], ...] = ()
    reset: bool = True
    relaxation_onset: float | None = None
    layer_onset: tuple[tuple[str, float], ...] = ()
    error_tau: float = 0.0

    @property
    def leaky(self) -> bool:
        """Whether the forward pass integrates in time."""
        return self.kind == "leaky"


def _stable_time_constant(table: Table, key: str, value: float, dt: float, what: str) -> None:
    """Refuse a time constant at or below dt/2 (forward Euler is unstable there)."""
    if not value > dt / 2:
        raise table.error(
            key,
            f"expected {what} above dt/2 = {dt / 2:g} s (forward Euler is unstable below), "
            f"got {table.data.get(key)!r}",
        )


def _onset(table: Table, key: str, value: float, dt: float, period: float) -> float:
    """An onset in seconds: a whole number of steps within the sample period."""
    steps = value / dt
    if value < 0:
        raise table.error(key, f"expected an onset at or after the stimulus (>= 0), got {value!r}")
    if not steps < round(period / dt) or abs(steps - round(steps)) > 1e-9 * max(1.0, steps):
        raise table.error(
            key,
            f"expected a multiple of dt = {dt:g} s within the sample period ({period:g} s), "
            f"got {table.data.get(key)!r}",
        )
    return value


def read_feedforward(
    table: Table, dt: float, period: float, layer_names: set[str] | None = None
) -> FeedforwardSpec:
    """The ``[feedforward]`` table (``period``: the sample period in seconds)."""
    kind = table.get("kind", str, FeedforwardSpec.kind, choices=FORWARD_KINDS)
    leaky = kind == "leaky"
    tau = table.duration("tau", ... if leaky else FeedforwardSpec.tau)
    if leaky:
        _stable_time_constant(table, "tau", tau, dt, "a forward time constant tau_f")
    taus = table.table("layer_tau")
    layer_tau = []
    for name in list(taus.data):
        value = taus.duration(name)
        _stable_time_constant(taus, name, value, dt, "a forward time constant tau_f")
        layer_tau.append((name, value))
    taus.finish()
    reset = table.get("reset", bool, FeedforwardSpec.reset)
    onset = table.duration("relaxation_onset", FeedforwardSpec.relaxation_onset)
    if onset is not None:
        _onset(table, "relaxation_onset", onset, dt, period)
    onsets = table.table("layer_onset")
    layer_onset = [
        (name, _onset(onsets, name, onsets.duration(name), dt, period))
        for name in list(onsets.data)
    ]
    onsets.finish()
    error_tau = table.duration("error_tau", FeedforwardSpec.error_tau)
    if error_tau != 0:
        _stable_time_constant(table, "error_tau", error_tau, dt, "an error-unit time constant")
    if not leaky:
        for key in ("tau", "layer_tau", "relaxation_onset", "layer_onset", "error_tau"):
            if key in table.data:
                raise table.error(key, "applies to kind = 'leaky' only; set kind = 'leaky'")
    table.finish()
    return FeedforwardSpec(kind, tau, tuple(layer_tau), reset, onset, tuple(layer_onset), error_tau)


def read_plasticity(table: Table, dt: float, relaxation: float) -> PlasticitySpec:
    """The ``[plasticity]`` table (``relaxation``: the relaxation phase in seconds)."""
    continuous = table.get("continuous", bool, PlasticitySpec.continuous)
    window = table.get("window", list, None)
    if window is not None:
        if not continuous:
            raise table.error("window", "applies to continuous = true only")
        if len(window) != 2:
            raise table.error("window", f"expected [start, end] durations, got {window!r}")
        key = table.key("window")
        start, end = (parse_duration(value, table.file, key) for value in window)
        inside = 0 <= start < end <= relaxation + 1e-12 * dt
        whole = all(abs(v / dt - round(v / dt)) <= 1e-9 * max(1.0, v / dt) for v in (start, end))
        if not (inside and whole):
            raise table.error(
                "window",
                f"expected 0 <= start < end <= the relaxation ({relaxation:g} s), multiples of "
                f"dt = {dt:g} s; got {window!r}",
            )
        window = (start, end)
    table.finish()
    return PlasticitySpec(continuous, window)

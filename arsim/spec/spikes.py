"""The ``[spikes]`` table of a protocol: which signals travel as spikes, and how.

The declaration: the keys, their defaults and bounds (:class:`SpikeCode`, :class:`SpikesSpec`)
and the closed forms a code obeys. The encoders, the filter and the Brian2 forms are the
component :mod:`arsim.components.spikes`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from arsim.spec.schema import SpecError, Table

ENCODERS = ("poisson", "integrate-and-fire")
"""Spike encoders: stochastic (Bernoulli per step) and deterministic (integrate, fire, subtract)."""

RATE = "rate"
"""Not an encoder: the clipped signal itself through the same synaptic filter (the limit of
both encoders as the rate grows), ``ŝ ← ŝ (1 − dt/τ_s) + (dt/τ_s) clip(v, −scale, scale)``."""

SIGNALS = ("feedback", "forward")
"""Pathways that can travel as spikes: the relaxation's top-down δ and the sweep's x̂."""


class SpikeCodeError(ValueError):
    """A spike code whose numbers cannot work (the message names the key)."""


@dataclass(frozen=True)
class SpikeCode:
    """How a signal travels as spikes.

    Attributes
    ----------
    encoder : {'poisson', 'integrate-and-fire'}
        The encoder of each channel.
    max_rate : float
        Highest rate of a channel (Hz); a Brian2 neuron spikes at most once per step, so
        ``max_rate · dt ≤ 1``.
    scale : float
        The activity (dimensionless) that maps to ``max_rate``.
    synapse_tau : float
        Time constant τ_s of the receiving synaptic filter (s).
    population : int
        Encoders per unit whose received signals are averaged.
    """

    encoder: str
    max_rate: float
    scale: float
    synapse_tau: float
    population: int = 1

    def check(self, dt: float) -> None:
        """Raise :class:`SpikeCodeError`, naming the key, if the code cannot run at ``dt`` (s)."""
        if self.encoder not in (*ENCODERS, RATE):
            raise SpikeCodeError(
                f"encoder: expected one of {(*ENCODERS, RATE)}, got {self.encoder!r}"
            )
        if not (self.max_rate > 0 and math.isfinite(self.max_rate)):
            raise SpikeCodeError(f"max_rate: expected a positive rate, got {self.max_rate} Hz")
        if self.max_rate * dt > 1 + 1e-12:
            raise SpikeCodeError(
                f"max_rate: {self.max_rate:g} Hz × dt {dt * 1e3:g} ms = {self.max_rate * dt:g} "
                "spikes per step, but a neuron spikes at most once per step: use a smaller dt, "
                "or a lower max_rate (a population of N encoders carries N times the rate)"
            )
        if not (self.scale > 0 and math.isfinite(self.scale)):
            raise SpikeCodeError(f"scale: expected a positive activity, got {self.scale}")
        if not self.synapse_tau > dt / 2:
            raise SpikeCodeError(
                f"synapse_tau: expected more than dt/2 = {dt / 2 * 1e3:g} ms (forward Euler "
                f"of the filter), got {self.synapse_tau * 1e3:g} ms"
            )
        if not (isinstance(self.population, int) and self.population >= 1):
            raise SpikeCodeError(f"population: expected an integer ≥ 1, got {self.population!r}")

    @property
    def jump(self) -> float:
        """What one spike adds to the received signal ŝ: ``scale / (max_rate · τ_s · N)``."""
        return self.scale / (self.max_rate * self.synapse_tau * self.population)

    def error_bound(self) -> float:
        """Integrate-and-fire: the largest ``|ŝ − v|`` after the transient (dimensionless)."""
        return self.scale / (self.max_rate * self.synapse_tau * self.population)

    def variance(self, value: float) -> float:
        """Poisson: the stationary variance of ŝ for a constant ``value`` (Campbell, dt → 0)."""
        rate = min(self.max_rate * abs(value) / self.scale, self.max_rate)
        return rate * (self.scale / self.max_rate) ** 2 / (2 * self.synapse_tau * self.population)

    def discrete_variance(self, value: float, dt: float) -> float:
        """Poisson: the exact stationary variance of the Euler-filtered ŝ at step ``dt`` (s)."""
        p = min(self.max_rate * abs(value) / self.scale, self.max_rate) * dt
        a = 1 - dt / self.synapse_tau
        return self.jump**2 * self.population * p * (1 - p) / (1 - a * a)


DEFAULT_SCALE = 1.0
"""The activity that maps to ``max_rate`` unless ``scale`` or ``layer_scale`` says otherwise."""


@dataclass(frozen=True)
class SpikesSpec:
    """Spike-coded signals between layers (``[spikes]``).

    Attributes
    ----------
    signals : tuple of str
        Pathways that travel as spikes (:data:`SIGNALS`): ``"feedback"``, the
        top-down signal δ = x ⊙ f' a layer sends down during the relaxation.
    encoder : {'poisson', 'integrate-and-fire', 'rate'}
        The encoder of every channel; ``'rate'`` sends the clipped signal itself through the
        same synaptic filter (the limit of both encoders at infinite rate).
    max_rate : float
        Highest rate of a channel (Hz); ``max_rate · dt ≤ 1``.
    scale : float
        The activity (dimensionless) that maps to ``max_rate``, for every sending layer.
    layer_scale : tuple of (str, float)
        ``scale`` of particular sending layers (``[spikes.layer_scale]``).
    synapse_tau : float
        Time constant τ_s of the receiving synaptic filter (s).
    population : int
        Encoders per unit whose received signals are averaged.
    """

    signals: tuple[str, ...] = ("feedback",)
    encoder: str = "poisson"
    max_rate: float = 300.0
    scale: float = DEFAULT_SCALE
    layer_scale: tuple[tuple[str, float], ...] = ()
    synapse_tau: float = 0.005
    population: int = 1

    def code(self, layer: str) -> SpikeCode:
        """The spike code of what layer ``layer`` sends."""
        scale = dict(self.layer_scale).get(layer, self.scale)
        return SpikeCode(self.encoder, self.max_rate, scale, self.synapse_tau, self.population)


def spikes_from_table(table: Table, dt: float) -> SpikesSpec:
    """The :class:`SpikesSpec` of a ``[spikes]`` table (an empty one: the defaults).

    Raises a one-line :class:`~arsim.spec.schema.SpecError` naming the key when the code cannot
    run at step ``dt`` (s).
    """
    signals = table.get("signals", list, list(SpikesSpec.signals))
    if not signals or any(signal not in SIGNALS for signal in signals):
        raise table.error("signals", f"expected a list of {', '.join(SIGNALS)}; got {signals!r}")
    encoder = table.get("encoder", str, SpikesSpec.encoder, choices=(*ENCODERS, "rate"))
    max_rate = table.frequency("max_rate", SpikesSpec.max_rate)
    scale = table.number("scale", SpikesSpec.scale, low=0.0, low_open=True)
    layer_table = table.table("layer_scale")
    layer_scale = tuple(
        (name, layer_table.number(name, low=0.0, low_open=True)) for name in layer_table.data
    )
    spec = SpikesSpec(
        signals=tuple(dict.fromkeys(signals)),
        encoder=encoder,
        max_rate=max_rate,
        scale=scale,
        layer_scale=layer_scale,
        synapse_tau=table.duration("synapse_tau", SpikesSpec.synapse_tau),
        population=table.integer("population", SpikesSpec.population, low=1),
    )
    try:
        spec.code("").check(dt)
    except SpikeCodeError as error:
        key, _, message = str(error).partition(": ")
        raise table.error(key, message) from None
    table.finish()
    return spec


def check_spikes_with(spikes: SpikesSpec, table: Table, others: dict[str, bool]) -> None:
    """One line for what spiking signals do not run with yet.

    ``others``: the protocol keys spiking feedback does not run with, each with whether the
    protocol uses it; ``table`` is the ``[spikes]`` table (for the file in the message).
    """
    if "forward" in spikes.signals:
        raise table.error("signals", "forward spikes (x̂ sent up) are not run yet; use ['feedback']")
    for key, used in others.items():
        if used:
            raise SpecError(table.file, "spikes", f"spiking feedback does not run with {key} yet")

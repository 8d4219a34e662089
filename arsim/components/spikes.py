"""Spike-coded signals: a signed activity sent as ON and OFF spike trains and filtered back.

A signal value ``v`` (e.g. a layer's top-down δ = f'·x, or its x̂) is carried by two channels,
ON for ``[v]₊`` and OFF for ``[−v]₊``. Each channel fires at the rate

    r = min(max_rate · |v| / scale, max_rate)        (Hz)

so that ``scale`` is the activity that maps to ``max_rate`` (a larger one saturates, as a real
neuron does). Two encoders:

- ``poisson``: one Bernoulli draw per step with probability ``r · dt``;
- ``integrate-and-fire``: the channel integrates ``r`` and spikes when its integral reaches 1,
  keeping the remainder (reset by subtraction, the code of sigma-delta and regular-spiking
  encoders); deterministic.

With ``population = N`` every unit is N encoders whose received signals are averaged: the
Poisson encoders are independent, the integrate-and-fire ones start staggered (encoder k of N
at the integral k/N), so that together they fire like one encoder at N times the rate.

The receiving side filters each spike train with the synaptic time constant ``τ_s``:

    τ_s dŝ/dt = −ŝ + (scale / max_rate) Σ_k ±δ(t − t_k) / N

integrated by forward Euler like every other state of arsim, one spike adding the jump
``J = scale / (max_rate · τ_s) / N``. The mean of ŝ is then exactly ``v`` (below saturation),
in discrete time as in continuous time. Laws (tested in ``tests/test_spikes.py``):

- integrate-and-fire: after the transient (5 τ_s) ŝ differs from v by less than
  ``scale / (max_rate · τ_s · N)``;
- Poisson (Campbell's theorem): the stationary variance of ŝ is
  ``scale · |v| / (2 · max_rate · τ_s · N)`` as dt → 0; in discrete time exactly
  ``J² N p (1 − p) / (1 − a²)`` with ``p = r·dt`` and ``a = 1 − dt/τ_s``.

Each piece is written once here in two forms: an array step (``xp``: an array namespace,
NumPy by default) and a Brian2 model (:func:`encoder_model`, :func:`filter_model`,
:func:`spike_synapse_model`) that the same tests hold to the array step.
"""

from __future__ import annotations

import brian2 as b2
import numpy as np

from arsim.components.registry import Asks, Feature, register
from arsim.params import SeedStream, seeded_rng
from arsim.spec.spikes import RATE, SpikeCode


# --------------------------------------------------------------------------------------------
# Array steps (xp: an array namespace; NumPy by default)
# --------------------------------------------------------------------------------------------
def channel_rates(value, code: SpikeCode, xp=np):
    """Rates (Hz) of the ON and OFF channels carrying ``value``, clipped at ``max_rate``."""
    on = xp.minimum(code.max_rate * xp.maximum(value, 0) / code.scale, code.max_rate)
    off = xp.minimum(code.max_rate * xp.maximum(-value, 0) / code.scale, code.max_rate)
    return on, off


def saturated(value, code: SpikeCode, xp=np) -> int:
    """How many entries of ``value`` lie beyond ``scale`` (their channel is clipped)."""
    return int(xp.sum(xp.abs(value) > code.scale))


def staggered_integrals(shape: tuple[int, ...], code: SpikeCode, xp=np):
    """Initial integrals of integrate-and-fire encoders, shape ``(N, 2, *shape)``.

    Encoder k of N starts at k/N (both channels).
    """
    start = xp.arange(code.population, dtype=float) / code.population
    return xp.broadcast_to(
        start.reshape((-1, 1) + (1,) * len(shape)), (code.population, 2, *shape)
    ).copy()


def poisson_spikes(rates, dt: float, uniform):
    """Spikes of Poisson encoders in one step: ``uniform < r · dt``.

    Parameters
    ----------
    rates : array, shape (2, ...)
        ON and OFF rates (Hz).
    dt : float
        Step (s).
    uniform : array, shape (N, 2, ...)
        Uniform draws on [0, 1), one per encoder (the caller's random stream).
    """
    return uniform < rates * dt


def integrate_and_fire(integrals, rates, dt: float):
    """One step of integrate-and-fire encoders: integrate ``r · dt``, spike at 1, subtract.

    ``integrals`` (shape ``(N, 2, ...)``) is updated in place; returns the spikes (bool).
    """
    integrals += rates * dt
    spikes = integrals >= 1
    integrals -= spikes
    return spikes


def filter_step(received, spikes, code: SpikeCode, dt: float, xp=np):
    """One Euler step of the receiving filter, in place: decay, then the step's spikes.

    ``received`` has the signal's shape; ``spikes`` (shape ``(N, 2, ...)``, ON then OFF) adds
    ``±J`` per spike, ``J`` = :attr:`SpikeCode.jump`.
    """
    received -= received * (dt / code.synapse_tau)
    counts = xp.sum(spikes, axis=0)  # (2, ...)
    received += code.jump * (counts[0] - counts[1])
    return received


# --------------------------------------------------------------------------------------------
# Brian2 forms (strings and Equations; nothing here runs a network)
# --------------------------------------------------------------------------------------------
ENCODER_RATE = "clip(max_rate * polarity * value / scale, 0*Hz, max_rate)"
"""Rate of one channel (ON: ``polarity = 1``, OFF: ``polarity = −1``) in Brian2 syntax."""


def encoder_model(code: SpikeCode) -> dict:
    """Keyword arguments of a Brian2 ``NeuronGroup`` of encoders (one neuron per channel).

    Its variables: ``value`` (the signal it carries, set or linked by the caller),
    ``polarity`` (+1 ON, −1 OFF), ``unit`` (the signal's index it carries); integrate-and-fire also
    ``integral``. The namespace needs ``max_rate`` (Hz) and ``scale``.
    """
    equations = b2.Equations(
        f"""rate = {ENCODER_RATE} : Hz
        value : 1
        polarity : 1 (constant)
        unit : integer (constant)"""
    )
    if code.encoder == "poisson":
        return {"model": equations, "threshold": "rand() < rate * dt"}
    equations += b2.Equations("dintegral/dt = rate : 1")
    return {
        "model": equations,
        "threshold": "integral >= 1",
        "reset": "integral -= 1",
        "method": "euler",
    }


def filter_model() -> object:
    """Brian2 equations of the receiving side: ``τ_s dŝ/dt = −ŝ`` (``received``).

    The spikes' jumps come from :func:`spike_synapse_model`. The namespace needs
    ``synapse_tau``.
    """
    return b2.Equations("dreceived/dt = -received / synapse_tau : 1")


def spike_synapse_model(code: SpikeCode, weight: str = "1") -> dict:
    """Keyword arguments of Brian2 ``Synapses`` from encoders to receivers.

    Each spike adds ``polarity · J · weight`` to the target's ``received`` (``weight``: a
    synaptic expression).
    """
    return {"on_pre": f"received_post += polarity_pre * {code.jump!r} * ({weight})"}


# --------------------------------------------------------------------------------------------
# A constant signal sent and received: the laws' experiment, in arrays and in Brian2
# --------------------------------------------------------------------------------------------
def transmit(code: SpikeCode, values, dt: float, steps: int, rng=None, xp=np):
    """Send constant ``values`` (shape ``(n,)``) for ``steps`` steps of ``dt`` (s); ŝ per step.

    The received signal after each step, shape ``(steps, n)``, starts from ŝ = 0.

    ``rng`` (a NumPy ``Generator``) draws the Poisson encoders' uniforms, shape ``(N, 2, n)``
    per step; integrate-and-fire encoders start staggered (:func:`staggered_integrals`).
    """
    code.check(dt)
    values = xp.asarray(values, dtype=float)
    rates = xp.stack(channel_rates(values, code, xp))
    received = xp.zeros(values.shape)
    integrals = staggered_integrals(values.shape, code, xp)
    out = xp.empty((steps, *values.shape))
    for step in range(steps):
        if code.encoder == "poisson":
            spikes = poisson_spikes(rates, dt, rng.random(integrals.shape))
        else:
            spikes = integrate_and_fire(integrals, rates, dt)
        out[step] = filter_step(received, spikes, code, dt, xp)
    return out


def transmit_brian2(code: SpikeCode, values, dt: float, steps: int, record: bool = True):
    """:func:`transmit` as a Brian2 network of spiking encoders, ``Synapses`` and a filter.

    One encoder ``NeuronGroup`` (threshold and reset) of ``2 N n`` channels, a receiver group of
    ``n`` filters and ``Synapses`` whose ``on_pre`` adds ``±J`` into ``received``. Runs with the
    current Brian2 preferences (code generation target) in a network of its own. Returns the
    received signal after each step, shape ``(steps, n)`` (or only the last row, shape
    ``(1, n)``, without ``record``).
    """
    code.check(dt)
    values = np.asarray(values, dtype=float)
    n, population = len(values), code.population
    namespace = {
        "max_rate": code.max_rate * b2.Hz,
        "scale": code.scale,
        "synapse_tau": code.synapse_tau * b2.second,
    }
    clock = b2.Clock(dt * b2.second)
    encoders = b2.NeuronGroup(
        2 * population * n, clock=clock, namespace=namespace, name="spike_encoders",
        **encoder_model(code),
    )  # fmt: skip
    member, channel, unit = np.unravel_index(np.arange(2 * population * n), (population, 2, n))
    encoders.unit = unit
    encoders.polarity = 1 - 2 * channel
    encoders.value = values[unit]
    if code.encoder == "integrate-and-fire":
        encoders.integral = member / population
    receivers = b2.NeuronGroup(
        n, filter_model(), method="euler", clock=clock, namespace=namespace,
        name="spike_receivers",
    )  # fmt: skip
    synapses = b2.Synapses(
        encoders, receivers, clock=clock, namespace=namespace, name="spike_synapses",
        **spike_synapse_model(code),
    )  # fmt: skip
    synapses.connect(j="unit_pre")
    objects = [encoders, receivers, synapses]
    if record:
        monitor = b2.StateMonitor(receivers, "received", record=True, when="end", clock=clock)
        objects.append(monitor)
    network = b2.Network(*objects)
    network.run(steps * dt * b2.second)
    if record:
        return np.asarray(monitor.received).T.copy()
    return np.asarray(receivers.received)[None, :].copy()


# --------------------------------------------------------------------------------------------
# The spike-coded top-down signals of a network during the relaxation
# --------------------------------------------------------------------------------------------
class SpikeChannels:
    """The top-down signals of a network's connections, sent as spikes and filtered.

    Connection ``c`` (source below, target above) carries the target's signal σ_c = x ⊙ f'
    down to its source. At relaxation step ``n`` (0 at the relaxation's first step) the
    source's top-down input reads the received ŝ_c(n); then the encoders of σ_c(n) (the
    signal at the step's start) spike and ŝ_c(n+1) = ŝ_c(n) (1 − dt/τ_s) ± J per spike, the
    order of a Brian2 step (state updaters, thresholds, then the synapses' ``on_pre``). At step
    0, ŝ = 0 and integrate-and-fire encoders start staggered.

    Poisson encoders draw from one NumPy generator per connection, seeded with
    ``[seed, SeedStream.SPIKES, *key, c]``: ``(N, 2, batch, n)`` uniforms per step, so that
    two implementations that step the same connections the same number of times draw the
    same spikes, in whatever order they visit the connections.

    Parameters
    ----------
    codes : dict of int to SpikeCode
        The spike code of each spiking connection (that of its target, the sending layer).
    dt : float
        Step (s).
    seed_key : tuple of int
        ``(seed, *key)`` of the generators.

    Attributes
    ----------
    listener : callable or None
        ``listener(c, step, spikes)``, called at every step that sends spikes with the
        connection, the relaxation step and the step's spikes, a boolean array of shape
        ``(N, 2, batch, n)`` (encoder, ON/OFF channel, replica, unit; not to be kept: the
        caller copies what it needs). None: nobody listens.
    clipped : dict of int to list of int
        Per connection, one count per relaxation sent so far: the unit-steps whose signal lay
        beyond the code's ``scale`` (the channel ran at ``max_rate``, saturated).
    """

    def __init__(self, codes: dict, dt: float, seed_key: tuple[int, ...]):
        seed, *key = seed_key
        self.codes, self.dt = codes, dt
        self.generators = {c: seeded_rng(seed, SeedStream.SPIKES, *key, c) for c in codes}
        self.received: dict = {}
        self.integrals: dict = {}
        self.listener = None
        self.clipped: dict[int, list[int]] = {c: [] for c in codes}

    @classmethod
    def of(cls, model, spikes, dt: float, seed_key: tuple[int, ...]) -> SpikeChannels | None:
        """The channels a model's relaxing layers receive under ``spikes`` (a ``SpikesSpec``).

        None without spiking feedback.
        """
        if spikes is None or "feedback" not in spikes.signals:
            return None
        codes = {
            c: spikes.code(connection.target)
            for c, connection in enumerate(model.connections)
            if model.relaxes(connection.source)
        }
        return cls(codes, dt, seed_key)

    def send(self, c: int, signal, step: int, xp=np):
        """Connection ``c``'s received signal ŝ_c(step); then σ_c(step) is sent.

        ``signal`` is σ_c at the step's start, shape ``(batch, n)``; the returned array is a
        copy of ŝ_c before this step's spikes.
        """
        code = self.codes[c]
        if step == 0:
            self.received[c] = xp.zeros(signal.shape, dtype=signal.dtype)
            self.integrals[c] = staggered_integrals(signal.shape, code, xp)
            self.clipped[c].append(0)
        received = self.received[c]
        now = received.copy()
        self.clipped[c][-1] += saturated(signal, code, xp)
        if code.encoder == RATE:
            clipped = xp.clip(signal, -code.scale, code.scale)
            received += (clipped - received) * (self.dt / code.synapse_tau)
            return now
        rates = xp.stack(channel_rates(signal, code, xp))
        if code.encoder == "poisson":
            uniform = self.generators[c].random(self.integrals[c].shape)
            spikes = poisson_spikes(rates, self.dt, uniform)
        else:
            spikes = integrate_and_fire(self.integrals[c], rates, self.dt)
        if self.listener is not None:
            self.listener(c, step, spikes)
        filter_step(received, spikes, code, self.dt, xp)
        return now

    def clipped_in(self, relaxation: int, model) -> dict[str, int]:
        """``spikes_clipped_<layer>`` of relaxation ``relaxation`` (0-based), per sending layer.

        The saturated unit-steps of every connection the layer sends on (:attr:`clipped`),
        summed; 0 for a relaxation not sent.
        """
        row: dict[str, int] = {}
        for c, counts in self.clipped.items():
            key = f"spikes_clipped_{model.connections[c].target}"
            count = counts[relaxation] if relaxation < len(counts) else 0
            row[key] = row.get(key, 0) + int(count)
        return row


SPIKING_FEEDBACK = register(
    Feature.SPIKING_FEEDBACK,
    "sends the top-down signal as spikes",
    Asks("spikes", lambda model, protocol: protocol.spikes is not None),
)

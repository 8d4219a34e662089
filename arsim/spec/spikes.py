"""The ``[spikes]`` table of a protocol: which signals travel as spikes, and how.

Nothing here imports Brian2; the encoders, the filter and their laws are in
:mod:`arsim.spikes`.
"""

from __future__ import annotations

from dataclasses import dataclass

from arsim.spec.schema import Table
from arsim.spikes import ENCODERS, SIGNALS, SpikeCode, SpikeCodeError

DEFAULT_SCALE = 1.0
"""The activity that maps to ``max_rate`` unless ``scale`` or ``layer_scale`` says otherwise."""


@dataclass(frozen=True)
class SpikesSpec:
    """Spike-coded signals between layers (``[spikes]``).

    Attributes
    ----------
    signals : tuple of str
        Pathways that travel as spikes (:data:`~arsim.spikes.SIGNALS`): ``"feedback"``, the
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

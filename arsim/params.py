"""The parameters of a network (weights, biases, ψ), their initial draw and the seed streams.

Every random draw of arsim comes from a NumPy ``SeedSequence([seed, stream, *key])``: ``seed``
is the run's seed, ``stream`` a :class:`SeedStream` that keeps the draws of different purposes
independent, and ``key`` what tells draws of one purpose apart (a connection, an epoch).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from arsim import operators
from arsim.spec import ModelSpec

Array = np.ndarray


class SeedStream(IntEnum):
    """Second element of the seed sequence ``[seed, stream, *key]`` of every random draw.

    Stream 4 is not drawn from.
    """

    WEIGHTS = 0
    """Forward weights W of connection ``c``: key ``(c,)``."""
    FEEDBACK = 1
    """Feedback weights ψ of connection ``c`` (unless transposed): key ``(c,)``."""
    DATA = 2
    """Seeded random inputs and targets of ``arsim run``: no key."""
    SHUFFLE = 3
    """Order of the training samples in epoch ``e``: key ``(e,)``."""
    NOISE = 5
    """Brian2's seed of the dynamics' noise: no key for a run, key ``(e,)`` for epoch ``e``."""
    PHASE_JITTER = 6
    """Phase-boundary shift of minibatch ``m``: key ``(m,)`` in a run, ``(e, m)`` in epoch ``e``."""
    SPIKES = 7
    """Poisson spike encoders of connection ``c``
    (:class:`arsim.components.spikes.SpikeChannels`): key ``(*key, c)``."""


def seed_sequence(seed: int, stream: SeedStream, *key: int) -> np.random.SeedSequence:
    """The seed sequence ``[seed, stream, *key]``."""
    return np.random.SeedSequence([seed, int(stream), *key])


def seeded_rng(seed: int, stream: SeedStream, *key: int) -> np.random.Generator:
    """NumPy's default generator seeded with ``[seed, stream, *key]``."""
    return np.random.default_rng(seed_sequence(seed, stream, *key))


def phase_shift(seed: int, jitter_steps: int, *key: int) -> int:
    """A minibatch's phase-boundary shift in steps, uniform over ``−J … J`` (``J = jitter_steps``).

    Drawn from stream :attr:`SeedStream.PHASE_JITTER` with ``key``, so each minibatch's shift
    depends on the seed and its key only (not on how the run is cut into chunks or resumed).
    """
    if jitter_steps == 0:
        return 0
    return int(
        seeded_rng(seed, SeedStream.PHASE_JITTER, *key).integers(-jitter_steps, jitter_steps + 1)
    )


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

    def astype(self, dtype: type) -> Params:
        """Copies of every array as ``dtype`` (a NumPy float type)."""
        cast = lambda arrays: [None if a is None else a.astype(dtype) for a in arrays]  # noqa: E731
        return Params(cast(self.W), cast(self.b), cast(self.psi))

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

    W and ψ are drawn from N(mean, variance) of ``model.init``, connection ``c``'s from the
    streams :attr:`SeedStream.WEIGHTS` and :attr:`SeedStream.FEEDBACK` with key ``c`` of the
    seed (``model.seed`` unless given), so that switching the feedback kind never changes the
    forward weights.
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
        forward_rng = seeded_rng(seed, SeedStream.WEIGHTS, layer)
        weights.append(model.init.mean + std * forward_rng.standard_normal(shape))
        biases.append(np.full(n_out, model.init.bias) if connection.bias else None)
        if connection.transposed:
            feedbacks.append(None)
        else:
            feedback_rng = seeded_rng(seed, SeedStream.FEEDBACK, layer)
            feedbacks.append(model.init.mean + std * feedback_rng.standard_normal(feedback_shape))
    return Params(weights, biases, feedbacks)

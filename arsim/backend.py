"""What every backend offers: :class:`Backend`, and what one chunk returns, :class:`ChunkResult`.

A backend is a network class of an execution mode and Brian2 device (:data:`arsim.modes.NETWORKS`:
the dense mode, the synapses mode, the synapses mode compiled with cpp_standalone). It is built
inside its job's :class:`~arsim.session.BrianSession` and used as a context manager, so that
whatever it holds (a standalone build folder) is released however the job ends::

    with session(protocol, mode, device), build_network(model, protocol, params, mode, device) as n:
        result = n.run_chunk(inputs, targets)

:meth:`Backend.run_chunk` returns the chunk's results; nothing a caller needs is left on the
network to be fetched afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from arsim.params import Params


@dataclass(frozen=True)
class ChunkResult:
    """What one :meth:`Backend.run_chunk` produced.

    Attributes
    ----------
    batch_params : tuple of Params
        Weights, biases and ψ after each minibatch of the chunk, in order (float64).
    batch_signals : tuple of list
        Per minibatch, where the backend keeps them (the dense mode with dense connections):
        each connection's ``(δ_post, x̂_pre, has_bias)`` per sample at the plasticity. Empty
        where the backend does not keep them.
    complete : bool
        Whether the chunk ran to its end (a stop request may cut it short; a chunk cut short
        records nothing).
    relaxation_steps : dict of int to int
        Sample slot (since the network started) → relaxation steps it took, for the samples of
        the chunk that converged to ``[relaxation] tolerance`` (empty without a tolerance).
    phase_shift : int
        Steps by which the chunk's phase boundary was moved by ``[phases] jitter`` (0 without
        jitter; a jittered protocol runs one minibatch per chunk).
    batch_outputs : tuple of (numpy.ndarray or None)
        Per minibatch, where the backend keeps it (the dense mode without leaky forward
        dynamics or a stimulus stream): the output x̂ of its feedforward sweep, one row per
        sample, in the run's precision (None for a partial minibatch), from which the
        minibatch's loss is computed without a second forward pass. Empty where the backend
        does not keep it.
    """

    batch_params: tuple[Params, ...]
    batch_signals: tuple[list, ...] = ()
    complete: bool = True
    relaxation_steps: dict[int, int] = field(default_factory=dict)
    phase_shift: int = 0
    batch_outputs: tuple = ()

    def signals(self) -> list:
        """Per minibatch its signals, or None where the backend kept none."""
        return list(self.batch_signals) or [None] * len(self.batch_params)

    def outputs(self) -> list:
        """Per minibatch its sweep's output x̂, or None where the backend kept none."""
        return list(self.batch_outputs) or [None] * len(self.batch_params)


@runtime_checkable
class Backend(Protocol):
    """A network that runs chunks of minibatches (see the module docstring).

    Attributes
    ----------
    mode, device : str
        The ``--mode`` and ``--device`` it runs.
    """

    mode: str
    device: str

    @property
    def chunk_samples(self) -> int:
        """Samples one :meth:`run_chunk` takes at most."""

    def run_chunk(
        self, inputs, targets, next_input=None, next_target=None, report=None
    ) -> ChunkResult:
        """Simulate the minibatches of ``inputs`` and ``targets``, updating after each."""

    def set_params(self, params: Params) -> None:
        """Load weights, biases and ψ."""

    def get_params(self) -> Params:
        """Current weights, biases and ψ (float64 NumPy arrays)."""

    def first_divergence(self) -> tuple[str, int, int, float] | None:
        """Earliest non-finite activity so far: ``(layer, neuron, sample, t)``, or None."""

    def close(self) -> None:
        """Release what the network holds (it is not run again)."""

    def __enter__(self) -> Backend:
        """The backend itself."""

    def __exit__(self, *exc) -> None:
        """:meth:`close`."""

"""The run loop: samples through a Brian2 network in chunks of minibatches.

:class:`ChunkLoop` is what random-data runs (:func:`arsim.run.simulate`) and training
(:func:`arsim.train.train`, one loop per epoch) share: it writes each chunk's stimulus rows
with the look-ahead of the next chunk's first samples, shows a stimulus stream when the
protocol has one, switches the state monitors on for the samples to record, stops at the first
non-finite activity (:class:`Divergence`) and yields one :class:`Minibatch` per weight update,
with the samples its sweep saw and its comparison with backprop
(:func:`arsim.metrics.batch_metrics`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from arsim import oracle, stops
from arsim.activations import loss_value
from arsim.metrics import batch_metrics
from arsim.params import Params
from arsim.recording import MemoryRecorder, phase_of_step, record_chunk
from arsim.spec import PHASES, ModelSpec, ProtocolSpec
from arsim.spec.schedule import Schedule
from arsim.spiketrains import SpikeLog, SpikeWriter


def swept_samples(
    protocol: ProtocolSpec, batch: int, first: int, last: int, n_samples: int
) -> np.ndarray:
    """Samples the sweep of minibatch ``batch`` (presentation slots ``first:last``) saw.

    Parameters
    ----------
    protocol : ProtocolSpec
        Timing (the stimulus stream, if any).
    batch : int
        Minibatch index since the network started (0-based).
    first, last : int
        The minibatch's presentation slots.
    n_samples : int
        Samples the stream shows (without a stream: unused).

    Returns
    -------
    ndarray of int
        ``first … last − 1``, or with a stimulus stream the samples it showed at that sweep.
    """
    if protocol.dwell > 0:
        schedule = Schedule(None, protocol)
        return schedule.stream_samples(batch * schedule.sample_steps, n_samples)
    return np.arange(first, last)


def presentation_slots(protocol: ProtocolSpec, n_samples: int) -> int:
    """Presentation slots of ``n_samples`` samples.

    The samples themselves, or with a stimulus stream its sample periods times the batch size
    (the stream shows every sample once; the sweeps see those present at their phase).
    """
    if protocol.dwell > 0:
        return Schedule(None, protocol).stream_periods(n_samples) * protocol.batch_size
    return n_samples


def phase_name(step: int, protocol: ProtocolSpec) -> str:
    """Name of the phase (:data:`~arsim.spec.PHASES`) step ``step`` of the timeline lies in."""
    in_sample = step % Schedule(None, protocol).sample_steps
    return PHASES[int(phase_of_step(np.array([in_sample]), protocol)[0])]


@dataclass
class Divergence:
    """The first non-finite activity of a run.

    Attributes
    ----------
    layer : str
        Layer name.
    neuron : int
        Neuron index in the layer.
    sample : int
        Sample slot since the network started.
    t : float
        End of the offending step, in seconds since the network started.
    phase : str
        Phase of that step.
    kept : int or None
        Last sample slot whose recording is kept (None when nothing is recorded).
    batches_kept : int
        Minibatches of the network completed before the one that diverged (their metrics and
        weights are kept); they end at sample slot ``samples_kept``.
    samples_kept : int
        Sample slots those minibatches presented.
    """

    layer: str
    neuron: int
    sample: int
    t: float
    phase: str
    kept: int | None = None
    batches_kept: int = 0
    samples_kept: int = 0

    def message(self, epoch: int | None = None) -> str:
        """One line naming layer, neuron, time, sample and phase (``epoch``: 1-based)."""
        where = f"at t = {self.t:.6g} s, sample {self.sample}"
        if epoch is not None:
            where = f"in epoch {epoch} at t = {self.t:.6g} s, sample {self.sample} of the epoch"
        text = (
            f"simulation diverged: non-finite activity in layer {self.layer!r} "
            f"(neuron {self.neuron}) {where} ({self.phase} phase)"
        )
        text += f"; {self.batches_kept} minibatches before it kept"
        if self.batches_kept:
            text += f" (samples 0-{self.samples_kept - 1}: metrics and last finite weights)"
        if self.kept is not None:
            text += f"; recording kept up to sample {self.kept}"
        return text


@dataclass
class Minibatch:
    """One weight update of the run and what it is compared with.

    Attributes
    ----------
    index : int
        Minibatch index since the network started (0-based).
    first, last : int
        Its presentation slots ``first:last``.
    swept : ndarray of int
        Positions (in the presentation order) of the samples its sweep saw.
    inputs, targets : ndarray, shape (n, n_in) and (n, n_out)
        Those samples.
    rate : float
        Its weight learning rate.
    before, after : Params
        Weights before and after its update.
    signals : list or None
        Per connection ``(δ_post, x̂_pre, has_bias)`` of each sample (dense mode, dense
        connections only), else None.
    metrics : dict of float
        :func:`arsim.metrics.batch_metrics` of the update.
    """

    index: int
    first: int
    last: int
    swept: np.ndarray
    inputs: np.ndarray
    targets: np.ndarray
    rate: float
    before: Params
    after: Params
    signals: list | None
    metrics: dict


class ChunkLoop:
    """Iterate over the minibatches of samples presented to a network, chunk by chunk.

    Parameters
    ----------
    network : arsim.network.ARNetwork
        A freshly built network holding ``params``.
    model, protocol : ModelSpec, ProtocolSpec
        What it simulates.
    inputs : ndarray, shape (n_samples, n_in)
        Stimuli.
    targets : ndarray, shape (n_samples, n_out)
        Targets.
    params : Params
        The network's initial weights.
    order : ndarray of int, optional
        Presentation order (indices into ``inputs``); in the given order by default.
    bar : tqdm.tqdm, optional
        Progress bar counting presentation slots from its current count.
    compare : callable, optional
        ``compare(index)``: whether minibatch ``index`` is compared with backprop (its full
        :func:`~arsim.metrics.batch_metrics`); the others get their ``loss`` only. Default:
        every minibatch.
    recorder : arsim.recording.MemoryRecorder or arsim.traces.TraceWriter, optional
        Receives the recorded traces after every chunk (default: kept in memory).

    Attributes
    ----------
    slots : int
        Presentation slots (:func:`presentation_slots`).
    divergence : Divergence or None
        Set when the loop stopped at non-finite activity (after the chunk it happened in; the
        minibatches of that chunk before the one that diverged are still yielded).
    interrupted : int or None
        The signal that stopped the loop before a chunk (:func:`arsim.stops.requested`).
    batches_done, samples_done : int
        Minibatches yielded and the presentation slots they span.
    relaxation_steps : dict of int to int
        Sample slot → relaxation steps it took, for the samples that converged to
        ``[relaxation] tolerance`` (:attr:`arsim.backend.ChunkResult.relaxation_steps`).
    """

    def __init__(
        self,
        network,
        model: ModelSpec,
        protocol: ProtocolSpec,
        inputs: np.ndarray,
        targets: np.ndarray,
        params: Params,
        order: np.ndarray | None = None,
        bar=None,
        compare=None,
        recorder=None,
    ):
        self.network, self.model, self.protocol = network, model, protocol
        self.compare = compare
        self.inputs, self.targets, self.params = inputs, targets, params
        self.order = np.arange(len(inputs)) if order is None else order
        self.bar, self._bar_start = bar, 0 if bar is None else bar.n
        self.slots = presentation_slots(protocol, len(self.order))
        if protocol.dwell > 0:  # the stream shows the samples; the chunks count sample periods
            network.set_stream(*self._rows(np.arange(len(self.order))))
        self.divergence: Divergence | None = None
        self.recorder = recorder if recorder is not None else MemoryRecorder(protocol)
        self.spike_log = None
        """The spike trains recorded (``"spikes"`` in ``[record] variables``): a
        :class:`~arsim.spiketrains.SpikeWriter` into the recorder's folder, or a
        :class:`~arsim.spiketrains.SpikeLog` in memory."""
        recording = getattr(network, "record", True) and protocol.spikes is not None
        if recording and "spikes" in protocol.record.variables:
            folder = getattr(self.recorder, "folder", None)
            log = SpikeWriter(folder, model, protocol) if folder else SpikeLog(model, protocol)
            self.spike_log = network.spike_log = log
        self.interrupted: int | None = None
        self.batches_done = self.samples_done = 0
        self.relaxation_steps: dict[int, int] = {}
        wanted = protocol.record.samples
        self._wanted = None if wanted is None else set(wanted)

    def _rows(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        index = self.order[positions]
        return self.inputs[index], self.targets[index]

    def _chunk_rows(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Stimulus rows of slots ``start:stop`` (zeros under a stream, which shows them)."""
        if self.protocol.dwell > 0:
            return (
                np.zeros((stop - start, self.inputs.shape[1])),
                np.zeros((stop - start, self.targets.shape[1])),
            )
        return self._rows(np.arange(start, stop))

    def __iter__(self) -> Iterator[Minibatch]:
        try:
            yield from self._iterate()
        finally:  # the trace files stay readable with the chunks written, however it ends
            if hasattr(self.recorder, "close"):
                self.recorder.close()
            if hasattr(self.spike_log, "close"):
                self.spike_log.close()

    def _iterate(self) -> Iterator[Minibatch]:
        network, protocol = self.network, self.protocol
        chunk, batch = network.chunk_samples, protocol.batch_size
        current = self.params
        for start in range(0, self.slots, chunk):
            self.interrupted = stops.requested()
            if self.interrupted is not None:  # a minibatch boundary: stop here
                return
            stop = min(start + chunk, self.slots)
            self._watch(start, stop)
            inputs, targets = self._chunk_rows(start, stop)
            upcoming = (None, None)  # zeros; a stream shows the next samples itself
            if stop < self.slots and protocol.dwell == 0:
                upcoming = self._chunk_rows(stop, min(stop + chunk, self.slots))
            cut = getattr(network, "batches_per_chunk", 1) > 1  # collects each minibatch's weights
            with np.errstate(all="ignore"), stops.cuttable(cut):  # divergence: checked below
                result = network.run_chunk(
                    inputs, targets, *upcoming, report=self._reporter(start, stop)
                )
            self.relaxation_steps.update(result.relaxation_steps)
            rows = self._rows if protocol.dwell == 0 else None  # summaries: backprop reference
            if result.complete:  # a chunk cut short records nothing
                record_chunk(network, result, self.recorder, start, stop, self.slots, current, rows)
            divergence = self._divergence(stop)
            # a stop request ends the chunk early: the minibatches completed are kept
            self.interrupted = stops.requested()
            for first, after, signal, output in zip(
                range(start, stop, batch),
                result.batch_params,
                result.signals(),
                result.outputs(),
                strict=False,
            ):
                last = min(first + batch, self.slots)
                if divergence is not None and last > divergence.sample:
                    break  # this minibatch and the later ones saw non-finite activity
                yield self._minibatch(first, last, current, after, signal, output)
                current = after
                self.batches_done, self.samples_done = self.batches_done + 1, last
                self._show(last)
                if self.interrupted is None and stops.requested() is not None:
                    self.interrupted = stops.requested()  # later minibatches are dropped
                    return
            if divergence is not None:
                divergence.batches_kept = self.batches_done
                divergence.samples_kept = self.samples_done
                self.divergence = divergence
                return
            if self.interrupted is not None:
                return

    def _minibatch(self, first, last, before, after, signals, output=None) -> Minibatch:
        """The :class:`Minibatch` of slots ``first:last``.

        ``output`` is the output x̂ of the minibatch's own sweep in the network (one row per
        sample; None where the mode does not keep it): a minibatch not compared with backprop
        takes its loss from it, else from a float64 forward sweep (:func:`arsim.oracle.loss`).
        The loss itself is summed in float64 against the float64 targets.
        """
        index = first // self.protocol.batch_size
        # compared with backprop on the samples the sweep saw (the stream's, if any)
        swept = swept_samples(self.protocol, index, first, last, len(self.order))
        x, y = self._rows(swept)
        rate, _ = Schedule(None, self.protocol).learning_rates(len(swept))
        with np.errstate(all="ignore"):
            if self.compare is None or self.compare(index):
                row = batch_metrics(self.model, before, after, x, y, rate)
            elif output is not None:  # the loss only, from the network's own sweep
                losses = loss_value(
                    self.model.loss, output.astype(np.float64), y, self.model.loss_scale
                )
                row = {"loss": float(losses.mean())}
            else:  # the loss only: a forward sweep, no backprop gradient
                row = {"loss": float(oracle.loss(self.model, before, x, y).mean())}
        if hasattr(self.network, "spikes_clipped") and self.protocol.spikes is not None:
            row |= self.network.spikes_clipped(index)  # saturated unit-steps per sending layer
        return Minibatch(index, first, last, swept, x, y, rate, before, after, signals, row)

    def _watch(self, start: int, stop: int) -> None:
        """Switch the monitors on if the chunk holds a sample to record."""
        if getattr(self.network, "traces_per_chunk", False):  # fixed once a program is built
            return
        # the tick ending the chunk records the first step of the next minibatch
        ahead = range(start, stop + self.protocol.batch_size)
        wanted = self._wanted is None or bool(self._wanted.intersection(ahead))
        for monitor in self.network.monitors.values():
            monitor.active = wanted

    def _reporter(self, start: int, stop: int):
        """The progress callback of a chunk: whole minibatches surely done, never more.

        ``done`` is the fraction of the chunk's simulated time; the minibatch running and the
        one before it (whose update lands in the next tick) are not counted, so the bar never
        shows a sample that a stop in the middle of the chunk would not keep.
        """
        if self.bar is None:
            return None
        batch = self.protocol.batch_size

        def report(done: float) -> None:
            finished = int(done * (stop - start)) // batch - 1
            if finished > 0:
                self._show(min(start + finished * batch, stop))

        return report

    def _show(self, slots: int) -> None:
        """Move the progress bar forward to ``slots`` presentation slots kept (never back)."""
        if self.bar is not None and self._bar_start + slots > self.bar.n:
            self.bar.update(self._bar_start + slots - self.bar.n)

    def _divergence(self, stop: int) -> Divergence | None:
        found = self.network.first_divergence()
        if found is None:
            return None
        layer, neuron, sample, t = found
        step = int(round(t / self.protocol.dt)) - 1  # t is the end of the offending step
        kept = stop - 1 if self.network.monitors else None
        return Divergence(layer, neuron, sample, t, phase_name(step, self.protocol), kept)

    def traces(self) -> pd.DataFrame | None:
        """The recorded traces (long format, :mod:`arsim.recording`); None when streamed."""
        return self.recorder.frame()

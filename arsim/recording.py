"""Recorded neuron traces: taken from the state monitors chunk by chunk, in a compact layout.

After every chunk of minibatches :func:`chunk_blocks` turns what the state monitors hold into
one :class:`Block` per layer and variable (a ``(rows, neurons)`` array whose rows are the
recorded steps ``(sample, step)`` of the samples to keep) and :func:`empty_monitors` empties
the monitors, so memory never holds more than one chunk. A *recorder* receives the blocks: the
run folder's Parquet writer (:class:`arsim.traces.TraceWriter`) or :class:`MemoryRecorder`, which
keeps them for a run without a folder. :func:`blocks_to_frame` makes the tidy (long-format)
table users see, the one :func:`arsim.traces.load` returns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from arsim.spec import PHASES, ProtocolSpec
from arsim.spec.schedule import Schedule

TRACE_COLUMNS = ("sample", "phase", "t", "layer", "neuron", "variable", "value")
"""Columns of a trace table; ``t`` in seconds, the time at which ``value`` holds."""

VALUES_PER_CHUNK = 1 << 24
"""Recorded values (all layers and variables, every replica) one chunk may hold in the state
monitors (128 MiB of float64): a mode that simulates several minibatches per chunk takes fewer
when the recording would exceed it (at least one)."""


def phase_of_step(step_in_sample: np.ndarray, protocol: ProtocolSpec) -> np.ndarray:
    """Phase index (into :data:`~arsim.spec.PHASES`) of each step within a sample."""
    bounds = np.cumsum(list(Schedule(None, protocol).phase_steps.values()))
    return np.searchsorted(bounds, step_in_sample, side="right")


@dataclass
class Block:
    """The recorded values of one layer and variable in one chunk.

    Attributes
    ----------
    layer, variable : str
        What was recorded.
    sample : ndarray of int32, shape (n,)
        Sample (presentation slot) of each row.
    step : ndarray of int32, shape (n,)
        Step within that sample's period (0 … P − 1, P steps per sample); the value holds at
        the end of that step, ``t = (sample·P + step + 1)·dt`` seconds.
    neurons : ndarray of int, shape (m,)
        Neuron index of each column.
    values : ndarray, shape (n, m)
        The values (Fortran order: one contiguous column per neuron); rows sorted by
        ``(sample, step)``.
    """

    layer: str
    variable: str
    sample: np.ndarray
    step: np.ndarray
    neurons: np.ndarray
    values: np.ndarray


def chunk_values_cap(model, protocol: ProtocolSpec, replicas: int) -> int:
    """Minibatches per chunk whose recording fits :data:`VALUES_PER_CHUNK` (at least 1)."""
    record = protocol.record
    steps = Schedule(None, protocol).sample_steps
    if record.interval is not None:
        steps = int(np.ceil(steps * protocol.dt / record.interval))
    per_batch = 0
    for layer in model.layers:
        if record.layers is not None and layer.name not in record.layers:
            continue
        neurons = (
            layer.size if record.neurons is None else sum(n < layer.size for n in record.neurons)
        )
        per_batch += neurons * len(record.variables) * steps * replicas
    return max(1, VALUES_PER_CHUNK // max(per_batch, 1))


def chunk_blocks(network, limit: int, samples=None) -> list[Block]:
    """What the network's monitors hold, as blocks of the rows to keep.

    Rows kept: samples below ``limit`` (later rows belong to the tick that ended the run, or,
    in a mode whose every chunk starts afresh, to the next chunk, which records them itself),
    in the protocol's ``record.phases`` and, if given, in ``samples``.

    A monitor records at the end of each step; the row's sample and step are those of the
    sequential timeline (:meth:`arsim.network.ARNetwork.locate`; sample ``s`` occupies steps
    ``s·P … (s+1)·P − 1`` whatever the mode). Monitor rows ``r`` with the same ``r // size``
    (one replica of the layer) share their samples and steps.

    Parameters
    ----------
    network : arsim.network.ARNetwork
        A network that has run a chunk (its ``monitors`` and ``locate``).
    limit : int
        First sample slot not kept.
    samples : collection of int, optional
        Sample slots to keep (all when None).

    Returns
    -------
    list of Block
        One per recorded layer and variable with rows to keep, in monitor and variable order.
    """
    protocol: ProtocolSpec = network.protocol
    period = network.schedule.sample_steps
    wanted_phases = [PHASES.index(p) for p in protocol.record.phases]
    sizes = {layer.name: layer.size for layer in network.model.layers}
    wanted = None if samples is None else np.fromiter(samples, dtype=np.int64)
    blocks = []
    for layer, monitor in network.monitors.items():
        times = np.asarray(monitor.variables["t"].get_value())
        if times.size == 0:
            continue
        steps = np.rint(times / protocol.dt).astype(np.int64)
        rows = np.asarray(monitor.record, dtype=np.int64)
        parts = []  # per replica: kept time indices, sample, step, monitor columns, neurons
        for replica in np.unique(rows // sizes[layer]):
            columns = np.flatnonzero(rows // sizes[layer] == replica)
            first = np.full(len(steps), rows[columns[0]])
            sample, _, sequential = network.locate(first, steps, sizes[layer])
            _, neurons, _ = network.locate(
                rows[columns], np.zeros(len(columns), np.int64), sizes[layer]
            )
            keep = (sample < limit) & np.isin(
                phase_of_step(sequential % period, protocol), wanted_phases
            )
            if wanted is not None:
                keep &= np.isin(sample, wanted)
            kept = np.flatnonzero(keep)
            if kept.size:
                in_sample = sequential[kept] - sample[kept] * period
                parts.append((kept, sample[kept], in_sample, columns, neurons))
        if not parts:
            continue
        sample = np.concatenate([p[1] for p in parts]).astype(np.int32)
        step = np.concatenate([p[2] for p in parts]).astype(np.int32)
        order = np.lexsort((step, sample))
        for variable in monitor.record_variables:
            data = monitor.variables[variable].get_value()  # (times, monitor rows)
            values = np.empty((len(order), len(parts[0][3])), dtype=data.dtype, order="F")
            values[:] = np.concatenate([data[np.ix_(p[0], p[3])] for p in parts])[order]
            blocks.append(Block(layer, variable, sample[order], step[order], parts[0][4], values))
    return blocks


def empty_monitors(network) -> None:
    """Drop what the network's state monitors hold (they keep recording from there)."""
    for monitor in network.monitors.values():
        monitor.resize(0)


def timing(protocol: ProtocolSpec) -> tuple[float, int, list[int]]:
    """``(dt, P, phase steps)`` of a protocol: dt in seconds, P steps per sample."""
    schedule = Schedule(None, protocol)
    return protocol.dt, schedule.sample_steps, [int(n) for n in schedule.phase_steps.values()]


def blocks_to_frame(blocks: list[Block], timeline: tuple[float, int, list[int]]) -> pd.DataFrame:
    """The tidy (long-format) trace table of some blocks.

    Parameters
    ----------
    blocks : list of Block
        Recorded values.
    timeline : (float, int, list of int)
        The run's :func:`timing`: dt in seconds, steps per sample, steps of each phase.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`TRACE_COLUMNS`; ``phase``, ``layer`` and ``variable`` are categorical;
        rows sorted by sample, layer, variable, neuron and ``t``.
    """
    dt, period, phase_steps = timeline
    bounds = np.cumsum(phase_steps)
    frames = []
    for block in blocks:
        n, m = block.values.shape
        sequential = block.sample.astype(np.int64) * period + block.step
        frames.append(
            pd.DataFrame(
                {
                    "sample": np.tile(block.sample, m).astype(np.int32),
                    "phase": np.tile(np.searchsorted(bounds, sequential % period, side="right"), m),
                    "t": np.tile((sequential + 1) * dt, m),
                    "layer": block.layer,
                    "neuron": np.repeat(block.neurons, n).astype(np.int32),
                    "variable": block.variable,
                    "value": block.values.ravel(order="F"),
                }
            )
        )
    if not frames:
        frame = pd.DataFrame({column: [] for column in TRACE_COLUMNS})
        frame["phase"] = frame["phase"].astype(np.int64)
    else:
        frame = pd.concat(frames, ignore_index=True)
    frame["phase"] = pd.Categorical.from_codes(frame["phase"].to_numpy(np.int64), categories=PHASES)
    return _tidy(frame)


def _tidy(frame: pd.DataFrame) -> pd.DataFrame:
    frame["layer"] = frame["layer"].astype("category")
    frame["variable"] = frame["variable"].astype("category")
    order = ["sample", "layer", "variable", "neuron", "t"]
    return frame.sort_values(order, kind="stable").reset_index(drop=True)


def concat_traces(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """One trace table from several (categories re-made, rows sorted)."""
    frames = [frame for frame in frames if len(frame)] or frames[:1]
    frame = pd.concat(frames, ignore_index=True)
    frame["phase"] = pd.Categorical(frame["phase"].astype(str), categories=PHASES)
    frame[["sample", "neuron"]] = frame[["sample", "neuron"]].astype(np.int32)
    return _tidy(frame)


class MemoryRecorder:
    """A recorder that keeps the blocks in memory (a run without a run folder).

    Parameters
    ----------
    protocol : ProtocolSpec
        The run's protocol.
    """

    def __init__(self, protocol: ProtocolSpec):
        self.protocol = protocol
        self.blocks: list[Block] = []
        self.rows = 0

    def write(self, blocks: list[Block]) -> None:
        """Keep a chunk's blocks."""
        self.blocks += blocks
        self.rows += sum(block.values.size for block in blocks)

    def frame(self) -> pd.DataFrame:
        """The tidy table of everything kept (:func:`blocks_to_frame`)."""
        return blocks_to_frame(self.blocks, timing(self.protocol))


def record_chunk(network, recorder, start: int, stop: int, slots: int, samples=None) -> None:
    """Hand the chunk ``start:stop`` just run to ``recorder`` and empty the monitors.

    Parameters
    ----------
    network : arsim.network.ARNetwork
        The network that ran the chunk.
    recorder : MemoryRecorder or arsim.traces.TraceWriter
        Receives the chunk's blocks (``write``).
    start, stop : int
        The chunk's presentation slots.
    slots : int
        Presentation slots of the whole run.
    samples : collection of int, optional
        Slots to keep (all when None).
    """
    if not network.monitors:
        return
    # a mode whose every chunk starts afresh records the next chunk's first step again there
    limit = stop if getattr(network, "traces_per_chunk", False) else slots
    recorder.write(chunk_blocks(network, limit, samples))
    empty_monitors(network)

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

from arsim import oracle
from arsim.spec import PHASES, ProtocolSpec, RecordSpec
from arsim.spec.schedule import Schedule

TRACE_COLUMNS = ("sample", "phase", "t", "layer", "neuron", "variable", "value")
"""Columns of a trace table; ``t`` in seconds, the time at which ``value`` holds."""

CHUNK_BYTES = 1 << 27
"""Bytes of recorded values (all layers and variables, every replica) one chunk may hold
(128 MiB: 2²⁴ float64 or 2²⁵ float32 values): a mode that simulates several minibatches per
chunk takes fewer when the recording would exceed it (at least one)."""


def phase_of_step(
    step_in_sample: np.ndarray, protocol: ProtocolSpec, schedule: Schedule | None = None
) -> np.ndarray:
    """Phase index (into :data:`~arsim.spec.PHASES`) of each step within a sample.

    ``schedule``: the timing the steps ran with (a jittered minibatch's shifted one); the
    protocol's by default.
    """
    schedule = Schedule(None, protocol) if schedule is None else schedule
    bounds = np.cumsum(list(schedule.phase_steps.values()))
    return np.searchsorted(bounds, step_in_sample, side="right")


def phase_codes(sample, step, timeline, shifts: dict | None = None, batch_size: int = 1):
    """Phase index of rows ``(sample, step)``: each minibatch's own boundary under jitter.

    Parameters
    ----------
    sample, step : ndarray of int
        Presentation slot and step within its period of each row.
    timeline : (float, int, list of int)
        :func:`timing`: dt, steps per sample, the protocol's phase steps.
    shifts : dict of int to int, optional
        Minibatch index → steps its feedforward phase was lengthened (and its relaxation
        shortened) by; absent minibatches are not shifted.
    batch_size : int
        Samples per minibatch.
    """
    _, _, phase_steps = timeline
    bounds = np.cumsum(phase_steps)
    codes = np.searchsorted(bounds, step, side="right")
    if shifts:
        minibatch = np.asarray(sample, dtype=np.int64) // batch_size
        shift = np.array([shifts.get(int(m), 0) for m in range(minibatch.max() + 1)])[minibatch]
        first = bounds[0] + shift  # the relaxation starts later (or earlier); it ends in place
        codes = np.where(step < first, 0, np.maximum(codes, 1))
    return codes


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
        The values, rows sorted by ``(sample, step)`` (C order from the dense mode's buffer,
        Fortran order from state monitors).
    """

    layer: str
    variable: str
    sample: np.ndarray
    step: np.ndarray
    neurons: np.ndarray
    values: np.ndarray


def chunk_values_cap(model, protocol: ProtocolSpec, replicas: int) -> int:
    """Minibatches per chunk whose recording, in its dtype, fits :data:`CHUNK_BYTES` (≥ 1)."""
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
        traced = [v for v in record.variables if v != "spikes"]  # spikes go to their own files
        per_batch += neurons * len(traced) * steps * replicas
    itemsize = np.dtype(trace_dtype(protocol)).itemsize
    return max(1, CHUNK_BYTES // max(per_batch * itemsize, 1))


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
                phase_of_step(sequential % period, protocol, network.schedule), wanted_phases
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
        if hasattr(monitor, "resize"):
            monitor.resize(0)


def trace_dtype(protocol: ProtocolSpec) -> type:
    """The float type of stored trace values.

    ``[record] dtype``; ``auto`` is the simulation's (float32 in single precision).
    """
    chosen = protocol.record.dtype
    if chosen == "auto":
        chosen = "float32" if protocol.precision == "single" else "float64"
    return np.float32 if chosen == "float32" else np.float64


def timing(protocol: ProtocolSpec) -> tuple[float, int, list[int]]:
    """``(dt, P, phase steps)`` of a protocol: dt in seconds, P steps per sample."""
    schedule = Schedule(None, protocol)
    return protocol.dt, schedule.sample_steps, [int(n) for n in schedule.phase_steps.values()]


def blocks_to_frame(
    blocks: list[Block],
    timeline: tuple[float, int, list[int]],
    shifts: dict | None = None,
    batch_size: int = 1,
) -> pd.DataFrame:
    """The tidy (long-format) trace table of some blocks.

    Parameters
    ----------
    blocks : list of Block
        Recorded values.
    timeline : (float, int, list of int)
        The run's :func:`timing`: dt in seconds, steps per sample, steps of each phase.
    shifts, batch_size : dict, int, optional
        Each minibatch's phase-boundary shift under ``[phases] jitter`` (:func:`phase_codes`).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`TRACE_COLUMNS`; ``phase``, ``layer`` and ``variable`` are categorical;
        rows sorted by sample, layer, variable, neuron and ``t``.
    """
    dt, period, _ = timeline
    frames = []
    for block in blocks:
        n, m = block.values.shape
        sequential = block.sample.astype(np.int64) * period + block.step
        codes = phase_codes(block.sample, block.step, timeline, shifts, batch_size)
        frames.append(
            pd.DataFrame(
                {
                    "sample": np.tile(block.sample, m).astype(np.int32),
                    "phase": np.tile(codes, m),
                    "t": np.tile((sequential + 1) * dt, m),
                    "layer": block.layer,
                    "neuron": np.repeat(block.neurons, n).astype(np.int32),
                    "variable": block.variable,
                    "value": block.values.ravel(order="F"),
                }
            )
        )
    if not frames:
        frame = pd.DataFrame(
            {
                "sample": np.empty(0, np.int32),
                "phase": np.empty(0, np.int64),
                "t": np.empty(0),
                "layer": np.empty(0, str),
                "neuron": np.empty(0, np.int32),
                "variable": np.empty(0, str),
                "value": np.empty(0),
            }
        )
    else:
        frame = pd.concat(frames, ignore_index=True)
    frame["phase"] = pd.Categorical.from_codes(frame["phase"].to_numpy(np.int64), categories=PHASES)
    return _tidy(frame)


def _tidy(frame: pd.DataFrame) -> pd.DataFrame:
    frame["layer"] = frame["layer"].astype("category")
    frame["variable"] = frame["variable"].astype("category")
    order = ["sample", "layer", "variable", "neuron", "t"]
    return frame.sort_values(order, kind="stable").reset_index(drop=True)


def _split(block: Block, stop: int) -> tuple[Block | None, Block | None]:
    """The rows of ``block`` before sample ``stop`` and those from it on (None if none)."""
    late = block.sample >= stop
    if not late.any():
        return block, None
    parts = []
    for rows in (~late, late):
        if not rows.any():
            parts.append(None)
            continue
        values = np.asfortranarray(block.values[rows])
        sample, step = block.sample[rows], block.step[rows]
        parts.append(Block(block.layer, block.variable, sample, step, block.neurons, values))
    return parts[0], parts[1]


def _join(first: Block, second: Block) -> Block:
    """Rows of two blocks of the same layer, variable and neurons, sorted by sample and step."""
    sample = np.concatenate([first.sample, second.sample])
    step = np.concatenate([first.step, second.step])
    order = np.lexsort((step, sample))
    values = np.asfortranarray(np.concatenate([first.values, second.values])[order])
    return Block(first.layer, first.variable, sample[order], step[order], first.neurons, values)


class Recorder:
    """What every recorder shares: a chunk holds exactly the rows of its own samples.

    A chunk of a mode whose network time runs on records, at the tick that ends it, the first
    step of the next samples; those rows are held back and written with the next chunk (so a
    run stopped after k chunks keeps exactly the rows of the samples of those k chunks).
    """

    def __init__(self):
        self.rows = 0
        self._pending: dict[tuple[str, str], Block] = {}
        self.phase_shifts: dict[int, int] = {}
        """Minibatch → steps its phase boundary was moved by (``[phases] jitter``; not 0)."""

    def write_chunk(self, blocks: list[Block], stop: int) -> None:
        """Write the rows of samples before ``stop``; hold back the later ones."""
        pending, self._pending = self._pending, {}
        for block in blocks:
            key = (block.layer, block.variable)
            pending[key] = _join(pending[key], block) if key in pending else block
        ready = []
        for key, block in pending.items():
            now, later = _split(block, stop)
            if later is not None:
                self._pending[key] = later
            if now is not None:
                ready.append(now)
        self.rows += sum(block.values.size for block in ready)
        self.write(ready)

    def write(self, blocks: list[Block]) -> None:
        """Store a chunk's blocks."""
        raise NotImplementedError


class MemoryRecorder(Recorder):
    """A recorder that keeps the blocks in memory (a run without a run folder).

    Parameters
    ----------
    protocol : ProtocolSpec
        The run's protocol.
    """

    def __init__(self, protocol: ProtocolSpec):
        super().__init__()
        self.protocol = protocol
        self.blocks: list[Block] = []
        self.summaries: list[pd.DataFrame] = []

    def write(self, blocks: list[Block]) -> None:
        """Keep a chunk's blocks."""
        self.blocks += blocks

    def write_summary(self, layer: str, table: pd.DataFrame) -> None:
        """Keep a chunk's summary rows of ``layer`` (:func:`summarize`)."""
        self.summaries.append(table.assign(layer=layer))

    def frame(self) -> pd.DataFrame:
        """The tidy table of everything kept (:func:`blocks_to_frame`)."""
        timeline = timing(self.protocol)
        return blocks_to_frame(self.blocks, timeline, self.phase_shifts, self.protocol.batch_size)


def chunk_gradients(model, protocol, before, after, start: int, rows, slots) -> dict:
    """The backprop gradients ``∂L/∂x̂`` of every layer for some slots of a chunk.

    Parameters
    ----------
    model, protocol : ModelSpec, ProtocolSpec
        What ran.
    before : Params
        Weights before the chunk.
    after : list of Params
        Weights after each of its minibatches.
    start : int
        The chunk's first slot.
    rows : callable
        Slots (array) → their ``(inputs, targets)``.
    slots : iterable of int
        Slots of the chunk.

    Returns
    -------
    dict
        Slot → list of per-layer gradient vectors (oracle backprop with the weights its
        minibatch started from).
    """
    weights = [before, *after]
    slots = np.array(sorted(slots), dtype=np.int64)
    found = {}
    for batch in np.unique((slots - start) // protocol.batch_size):
        if batch >= len(weights):
            continue
        chosen = slots[(slots - start) // protocol.batch_size == batch]
        inputs, targets = rows(chosen)
        activity = oracle.backprop(model, weights[batch], inputs, targets).activity
        for k, slot in enumerate(chosen):
            found[int(slot)] = [a[k] for a in activity]
    return found


def summarize(blocks: list[Block], model, gradients: dict) -> dict[str, pd.DataFrame]:
    """Per layer: sample, step and, per variable, the mean and std over the block's neurons.

    ``x_grad_distance`` is ``‖x − g‖ / ‖g‖`` with ``g`` the sample's backprop gradient
    ``∂L/∂x̂`` of the layer (:func:`chunk_gradients`; NaN where it is not known).
    """
    tables: dict[str, pd.DataFrame] = {}
    for block in blocks:
        table = tables.setdefault(
            block.layer, pd.DataFrame({"sample": block.sample, "step": block.step})
        )
        table[f"{block.variable}_mean"] = block.values.mean(axis=1)
        table[f"{block.variable}_std"] = block.values.std(axis=1)
        if block.variable == "x":
            index = model.index(block.layer)
            distance = np.full(len(block.sample), np.nan)
            for slot in np.unique(block.sample):
                if int(slot) in gradients:
                    g = gradients[int(slot)][index]
                    rows = block.sample == slot
                    gap = np.linalg.norm(block.values[rows] - g, axis=1)
                    distance[rows] = gap / np.linalg.norm(g)
            table["x_grad_distance"] = distance
    return tables


def _select(block: Block, neurons) -> Block | None:
    """``block`` with only the columns of ``neurons`` (all when None)."""
    if neurons is None:
        return block
    columns = np.flatnonzero(np.isin(block.neurons, neurons))
    if not columns.size:
        return None
    values = np.asfortranarray(block.values[:, columns])
    return Block(
        block.layer, block.variable, block.sample, block.step, block.neurons[columns], values
    )


def record_chunk(
    network, result, recorder, start: int, stop: int, slots: int, before=None, rows=None
):
    """Hand the chunk ``start:stop`` just run to ``recorder`` and empty the monitors.

    Parameters
    ----------
    network : arsim.network.ARNetwork
        The network that ran the chunk.
    result : arsim.backend.ChunkResult
        What its ``run_chunk`` returned (the weights after each minibatch, the phase shift).
    recorder : MemoryRecorder or arsim.traces.TraceWriter
        Receives the chunk's blocks (``write``) and summaries (``write_summary``).
    start, stop : int
        The chunk's presentation slots.
    slots : int
        Presentation slots of the whole run.
    before : Params, optional
        Weights before the chunk (summaries: the gradient distance).
    rows : callable, optional
        Slots → their ``(inputs, targets)`` (summaries; without it the distance is NaN).
    """
    if not network.monitors:
        return
    record: RecordSpec = network.protocol.record
    batch = network.protocol.batch_size
    if result.phase_shift:  # a jittered protocol runs one minibatch per chunk
        recorder.phase_shifts[start // batch] = result.phase_shift
    samples = None
    if record.samples is not None or record.minibatches is not None:
        samples = [s for s in range(start, stop + 1) if record.keeps(s, batch)]
    # a mode whose every chunk starts afresh records the next chunk's first step again there
    limit = stop if getattr(network, "traces_per_chunk", False) else slots
    buffer = getattr(network, "trace_buffer", None)
    if buffer is not None:  # the chunk's own rows, straight from the layers' arrays
        blocks = buffer.blocks(min(stop, slots), record.phases, samples)
    else:
        blocks = chunk_blocks(network, limit, samples)
    if record.summary:
        seen = {int(s) for block in blocks for s in np.unique(block.sample)}
        gradients = {}
        if rows is not None and before is not None:
            model, after = network.model, list(result.batch_params)
            gradients = chunk_gradients(model, network.protocol, before, after, start, rows, seen)
        for layer, table in summarize(blocks, network.model, gradients).items():
            recorder.write_summary(layer, table)
        blocks = [b for b in (_select(b, record.neurons) for b in blocks) if b is not None]
    dtype = trace_dtype(network.protocol)
    for block in blocks:  # a float32 recording is stored as float32 (the buffer's, no copy)
        block.values = block.values.astype(dtype, copy=False)
    recorder.write_chunk(blocks, stop)
    empty_monitors(network)

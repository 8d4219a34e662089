"""Trace files of a run folder: written chunk by chunk, read back with filters.

Layout (``traces/`` in the run folder; a training run has one such folder per recorded epoch,
``traces/epoch-E/``)::

    traces/meta.json               format tag, dt, steps per sample, phase steps, training epoch
                                   and images
    traces/<layer>/<variable>.parquet
        columns sample (int32), step (int32, 0 … P − 1 within the sample's period) and values
        (fixed-size binary: the row's recorded neurons, little-endian, in the recording dtype);
        key-value metadata ``arsim.values`` = ``{"dtype": …, "neurons": [...]}``; one row group
        per chunk
    traces/<layer>/summary.parquet  (``[record] summary``) sample, step and per variable
        ``<variable>_mean``, ``<variable>_std``, and ``x_grad_distance``

Folders of the earlier layout (``arsim-traces-1``: one float column ``n<index>`` per neuron
instead of ``values``) are read the same way.

A value of sample ``s`` at step ``k`` holds at ``t = (s·P + k + 1)·dt`` seconds. Nothing
repeats per value: the sample and step once per row, the layer and variable once per file, the
neurons once per file. :func:`load` returns the tidy (long) table of
:data:`arsim.recording.TRACE_COLUMNS` and reads only the files, columns and row groups a query
needs (Parquet column selection and row-group statistics).
"""

from __future__ import annotations

import json
import queue
import shutil
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from arsim.recording import Block, Recorder, blocks_to_frame, timing
from arsim.spec import PHASES
from arsim.spiketrains import read_spikes as read_spikes  # the spike trains, read back

FORMAT = "arsim-traces-2"
"""Format tag of ``meta.json`` (``arsim-traces-1``: one Parquet column per neuron)."""

VALUES_KEY = "arsim.values"
"""Parquet key-value metadata of a trace file: JSON ``{"dtype": "float32" | "float64",
"neurons": [index, ...]}``, how to read the ``values`` column's bytes."""

LEGACY = "traces.parquet"
"""The long table earlier versions wrote in the run folder, which :func:`load` still reads."""


PARQUET_OPTIONS = {
    "compression": "lz4",
    "use_dictionary": False,
    "write_statistics": ["sample", "step"],
}
"""How trace files are written. Activities vary at every step, so a dictionary of a column's
values costs time and, with about as many entries as values, space; LZ4 still shrinks the
columns that repeat (x̂ between presentations, f' of rectified units, zeros). Row-group
statistics are only needed on the columns a query filters (``sample``, ``step``)."""


def values_table(block: Block) -> pa.Table:
    """A block as the rows of its trace file: ``sample``, ``step`` and the binary ``values``.

    The values are not copied when they are C-ordered little-endian already (the dense mode's
    chunk arrays): each row's bytes are the fixed-size binary value of that row.
    """
    values = np.ascontiguousarray(block.values, dtype=block.values.dtype.newbyteorder("<"))
    rows, width = values.shape[0], values.shape[1] * values.itemsize
    binary = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(width), rows, [None, pa.py_buffer(values.reshape(-1))]
    )
    described = {"dtype": values.dtype.name, "neurons": [int(n) for n in block.neurons]}
    schema = pa.schema(
        [("sample", pa.int32()), ("step", pa.int32()), ("values", pa.binary(width))],
        metadata={VALUES_KEY: json.dumps(described)},
    )
    sample = np.ascontiguousarray(block.sample, dtype=np.int32)
    step = np.ascontiguousarray(block.step, dtype=np.int32)
    return pa.Table.from_arrays([pa.array(sample), pa.array(step), binary], schema=schema)


class TraceWriter(Recorder):
    """Streams recorded blocks to ``folder`` (see the module docstring), one row group a chunk.

    A background thread converts and writes the chunks while the simulation runs the next
    ones: :meth:`write` hands a chunk over through a queue of at most :attr:`QUEUE_CHUNKS`
    chunks (so memory does not grow when the disk is slower than the simulation: the run then
    waits), and only that thread touches the files. An error of the thread (a full disk) is
    raised by the next :meth:`write` or by :meth:`close`.

    Use as a context manager (or call :meth:`close`): the chunks handed over are written,
    every file is closed, and stays readable with the chunks written so far, however the run
    ends (a stop included).

    Parameters
    ----------
    folder : path
        The ``traces`` folder to create.
    protocol : ProtocolSpec
        The run's protocol.
    epoch : int, optional
        Training epoch (0-based) this folder records.
    images : dict of int to int, optional
        Training: the training-set index of the image shown at each recorded sample slot.
    """

    QUEUE_CHUNKS = 2
    """Chunks waiting for the writer thread at most (besides the one it writes)."""

    def __init__(self, folder, protocol, epoch: int | None = None, images: dict | None = None):
        super().__init__()
        self.folder = Path(folder)
        self.protocol = protocol
        self.folder.mkdir(parents=True, exist_ok=True)
        self._writers: dict[tuple[str, str], pq.ParquetWriter] = {}
        self._queue: queue.Queue = queue.Queue(maxsize=self.QUEUE_CHUNKS)
        self._error: BaseException | None = None
        self._error_raised = False
        self._thread: threading.Thread | None = None
        dt, period, phase_steps = timing(protocol)
        meta = {
            "format": FORMAT,
            "dt": dt,
            "steps_per_sample": period,
            "phase_steps": phase_steps,
            "batch_size": protocol.batch_size,
            "phase_shifts": {},
            "epoch": epoch,
            "images": None if images is None else {str(k): int(v) for k, v in images.items()},
        }
        self._meta = meta
        (self.folder / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def write(self, blocks: list[Block]) -> None:
        """Hand a chunk's blocks to the writer thread (one row group per layer and variable).

        The blocks must not change afterwards. Waits while :attr:`QUEUE_CHUNKS` chunks wait.
        """
        self._hand_over(self._write_blocks, blocks)

    def _write_blocks(self, blocks: list[Block]) -> None:
        for block in blocks:
            if len(block.neurons):  # no neuron recorded: no file (none is read either)
                self._write_table(block.layer, block.variable, values_table(block))

    def _hand_over(self, write, *args) -> None:
        """Queue ``write(*args)`` for the writer thread (started on first use)."""
        self._raise_error()
        if self._thread is None:
            self._thread = threading.Thread(target=self._drain, name="trace-writer", daemon=True)
            self._thread.start()
        while True:
            try:
                self._queue.put((write, args), timeout=0.2)
                return
            except queue.Full:  # the thread writes; if it failed, say why instead of waiting
                self._raise_error()

    def _drain(self) -> None:
        """The writer thread: write what is queued until :meth:`close` sends ``None``.

        After an error it writes nothing more but keeps emptying the queue, so that nothing
        waits on it.
        """
        while True:
            item = self._queue.get()
            if item is None:
                return
            write, args = item
            if self._error is None:
                try:
                    write(*args)
                except BaseException as error:  # raised in the simulating thread
                    self._error = error
            del item, write, args  # the chunk's arrays may be reused (arsim.tracebuffer)

    def _raise_error(self) -> None:
        """Raise the writer thread's error in the calling thread (once)."""
        if self._error is not None and not self._error_raised:
            self._error_raised = True
            raise self._error

    def _write_table(self, layer: str, name: str, table: pa.Table) -> None:
        """Append ``table`` as a row group of ``<layer>/<name>.parquet`` (writer thread)."""
        key = (layer, name)
        if key not in self._writers:
            path = self.folder / layer / f"{name}.parquet"
            path.parent.mkdir(exist_ok=True)
            self._writers[key] = pq.ParquetWriter(path, table.schema, **PARQUET_OPTIONS)
        elif _described(table.schema) != _described(self._writers[key].schema):
            raise ValueError(f"{self.folder / layer}/{name}.parquet: a chunk of other neurons")
        self._writers[key].write_table(table)

    def write_summary(self, layer: str, table: pd.DataFrame) -> None:
        """Append a chunk's summary rows of ``layer`` to ``<layer>/summary.parquet``."""
        arrow = pa.Table.from_pandas(table, preserve_index=False)
        self._hand_over(self._write_table, layer, "summary", arrow)

    def frame(self) -> None:
        """Nothing is held in memory: read the traces back with :func:`load`."""
        return None

    def close(self) -> None:
        """Write what was handed over, then close every file (each keeps its row groups).

        Raises the writer thread's error, if any and not raised yet; closing again does
        nothing.
        """
        thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join()
        writers, self._writers = self._writers, {}
        for writer in writers.values():
            writer.close()
        if self.phase_shifts:  # each jittered minibatch's boundary, for the phase labels
            meta = self._meta | {"phase_shifts": {str(k): v for k, v in self.phase_shifts.items()}}
            (self.folder / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
        self._raise_error()


def epoch_recorder(folder, protocol, epoch: int, order: np.ndarray) -> TraceWriter | None:
    """The writer of training epoch ``epoch`` (``folder/epoch-E``), or None if not recorded.

    ``order`` is the epoch's presentation order (training-set index of each slot); the slots
    the protocol records (``[record] samples`` and ``minibatches``) are kept with their image.
    """
    record = protocol.record
    if record.epochs is None or (record.epochs != "all" and epoch not in record.epochs):
        return None
    kept = [s for s in range(len(order)) if record.keeps(s, protocol.batch_size)]
    images = {s: int(order[s]) for s in kept}
    # a resumed training repeats the epoch: what an interrupted attempt recorded goes
    shutil.rmtree(Path(folder) / f"epoch-{epoch}", ignore_errors=True)
    return TraceWriter(Path(folder) / f"epoch-{epoch}", protocol, epoch, images)


def _shifts(meta: dict) -> dict[int, int]:
    """Minibatch → phase-boundary shift in steps of a jittered run (empty otherwise)."""
    return {int(k): int(v) for k, v in (meta.get("phase_shifts") or {}).items()}


def _timing(meta: dict) -> tuple[float, int, list[int]]:
    """:func:`arsim.recording.timing` from ``meta.json``."""
    return meta["dt"], meta["steps_per_sample"], meta["phase_steps"]


def _folders(run_dir: Path) -> list[tuple[Path, dict]]:
    root = Path(run_dir) / "traces"
    if (root / "meta.json").exists():
        paths = [root]
    else:
        paths = sorted(root.glob("epoch-*"), key=lambda p: int(p.name.split("-")[1]))
    if not paths:
        raise FileNotFoundError(f"{run_dir}: no recorded traces (expected {root}/meta.json)")
    return [(path, json.loads((path / "meta.json").read_text())) for path in paths]


def _step_ranges(meta: dict, phases) -> list[tuple[int, int]] | None:
    """Steps ``[lo, hi)`` within the sample period of the wanted phases (None: all)."""
    if phases is None:
        return None
    bounds = np.concatenate([[0], np.cumsum(meta["phase_steps"])])
    for phase in phases:
        if phase not in PHASES:
            raise ValueError(f"phases: expected names from {PHASES}, got {phase!r}")
    return [(int(bounds[PHASES.index(p)]), int(bounds[PHASES.index(p) + 1])) for p in phases]


def _filters(meta: dict, samples, phases, t) -> list | None:
    """Row filters (disjunctive normal form) that Parquet pushes down to row groups."""
    common = []
    if samples is not None:
        common.append(("sample", "in", [int(s) for s in samples]))
    if t is not None:  # t = (s·P + k + 1)·dt: samples whose period meets [start, stop]
        period, dt = meta["steps_per_sample"], meta["dt"]
        common.append(("sample", ">=", int(np.floor(t[0] / dt / period)) - 1))
        common.append(("sample", "<=", int(np.ceil(t[1] / dt / period))))
    # a jittered run's phases move per minibatch: they are selected after labelling
    ranges = None if _shifts(meta) else _step_ranges(meta, phases)
    if ranges is None:
        return [common] if common else None
    return [common + [("step", ">=", lo), ("step", "<", hi)] for lo, hi in ranges]


def _may_match(group, filters) -> bool:
    """Whether a row group's ``sample`` and ``step`` ranges can meet ``filters`` (DNF)."""
    if filters is None:
        return True
    bounds = {}
    for column in range(2):  # sample, step: the only columns with statistics
        stats = group.column(column).statistics
        if stats is None or not stats.has_min_max:
            return True
        bounds[group.column(column).path_in_schema] = (stats.min, stats.max)
    tests = {
        "in": lambda lo, hi, v: any(lo <= x <= hi for x in v),
        ">=": lambda lo, hi, v: hi >= v,
        "<=": lambda lo, hi, v: lo <= v,
        "<": lambda lo, hi, v: lo < v,
    }
    return any(
        all(tests[op](*bounds[column], value) for column, op, value in term) for term in filters
    )


def read_blocks(path: Path, layer: str, variable: str, filters, neurons=None) -> Block | None:
    """One file's rows matching ``filters`` as a :class:`Block` (None if nothing matches).

    Reads both layouts: the binary ``values`` column (``arsim-traces-2``, key-value metadata
    :data:`VALUES_KEY`) and one float column ``n<index>`` per neuron (``arsim-traces-1``, of
    which only the columns of ``neurons`` are read). The block's values are float64 (the
    stored float32 values converted exactly), whatever the file's dtype.
    """
    file = pq.ParquetFile(path)  # reads the footer, once
    described = (file.schema_arrow.metadata or {}).get(VALUES_KEY.encode())
    if described is not None:
        described = json.loads(described)
        stored = np.array(described["neurons"], dtype=np.int64)
        keep = np.flatnonzero(np.isin(stored, list(neurons) if neurons is not None else stored))
        wanted = ["values"]
    else:
        names = file.schema_arrow.names
        wanted = [n for n in names[2:] if neurons is None or int(n[1:]) in set(neurons)]
    if not wanted or (described is not None and not keep.size):
        return None
    metadata = file.metadata
    groups = [
        g for g in range(metadata.num_row_groups) if _may_match(metadata.row_group(g), filters)
    ]
    table = file.read_row_groups(groups, columns=["sample", "step", *wanted])
    if filters is not None:
        table = table.filter(pq.filters_to_expression(filters))
    if table.num_rows == 0:
        return None
    sample = table.column("sample").to_numpy()
    step = table.column("step").to_numpy()
    order = np.lexsort((step, sample))
    if described is not None:
        rows = _binary_values(table.column("values"), described["dtype"], len(stored))
        values = np.empty((table.num_rows, keep.size), order="F")
        values[:] = rows[np.ix_(order, keep)] if keep.size < len(stored) else rows[order]
        return Block(layer, variable, sample[order], step[order], stored[keep], values)
    values = np.empty((table.num_rows, len(wanted)), order="F")
    for j, name in enumerate(wanted):
        values[:, j] = table.column(name).to_numpy()[order]
    neurons = np.array([int(n[1:]) for n in wanted])
    return Block(layer, variable, sample[order], step[order], neurons, values)


def _binary_values(column: pa.ChunkedArray, dtype: str, neurons: int) -> np.ndarray:
    """The ``(rows, neurons)`` array of a fixed-size binary ``values`` column (a view)."""
    array = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if array.null_count:
        raise ValueError("values: a trace file with missing rows")
    stored = np.dtype(dtype).newbyteorder("<")
    if array.type.byte_width != neurons * stored.itemsize:
        raise ValueError(f"values: {array.type.byte_width} bytes a row, not {neurons} {dtype}")
    start = array.offset * array.type.byte_width
    raw = np.frombuffer(array.buffers()[1], dtype=stored, count=len(array) * neurons, offset=start)
    return raw.reshape(len(array), neurons)


def _described(schema: pa.Schema) -> bytes | None:
    """The :data:`VALUES_KEY` metadata of a trace file's schema (None for other tables)."""
    return (schema.metadata or {}).get(VALUES_KEY.encode())


def _selected(folder: Path, layers, variables) -> list[tuple[str, str, Path]]:
    found = []
    for path in sorted(folder.glob("*/*.parquet")):
        layer, variable = path.parent.name, path.stem
        if variable == "summary":
            continue
        if (layers is None or layer in layers) and (variables is None or variable in variables):
            found.append((layer, variable, path))
    return found


def load(
    run_dir,
    layers=None,
    variables=None,
    samples=None,
    neurons=None,
    phases=None,
    t=None,
    epochs=None,
    as_xarray: bool = False,
):
    """The recorded traces of a run folder, reading only what is asked for.

    Parameters
    ----------
    run_dir : path
        A run folder (``traces/`` inside it, or the single long table ``traces.parquet`` of
        earlier versions, read with the same filters).
    layers, variables : list of str, optional
        Layers and variables to read (all when None).
    samples, neurons : list of int, optional
        Sample slots and neuron indices (all when None).
    phases : list of str, optional
        Phases (:data:`~arsim.spec.PHASES`) to keep.
    t : (float, float), optional
        Keep rows with ``start <= t <= stop`` (seconds, the time at which the value holds).
    epochs : list of int, optional
        Training: the epochs (0-based) to read (all recorded when None).
    as_xarray : bool
        Return an ``xarray.Dataset`` instead: one ``DataArray`` per layer and variable, named
        ``<layer>.<variable>``, with dimensions ``(sample, step, neuron)`` (plus ``epoch`` for
        training; NaN where a row was not recorded).

    Returns
    -------
    pandas.DataFrame or xarray.Dataset
        The tidy table (columns :data:`arsim.recording.TRACE_COLUMNS`, rows sorted by sample,
        layer, variable, neuron and t; training adds ``epoch`` and ``image`` first), exactly
        what the run produced in memory.
    """
    legacy = Path(run_dir) / LEGACY
    if legacy.exists() and not (Path(run_dir) / "traces").exists():
        if as_xarray:
            raise ValueError(f"{legacy}: as_xarray needs the traces/ layout of newer runs")
        return _load_legacy(legacy, layers, variables, samples, neurons, phases, t)
    frames = []
    for folder, meta in _folders(run_dir):
        if epochs is not None and meta["epoch"] not in epochs:
            continue
        filters = _filters(meta, samples, phases, t)
        blocks = [
            block
            for layer, variable, path in _selected(folder, layers, variables)
            if (block := read_blocks(path, layer, variable, filters, neurons)) is not None
        ]
        if as_xarray:
            frames.append((meta, blocks))
            continue
        frame = blocks_to_frame(blocks, _timing(meta), _shifts(meta), meta.get("batch_size", 1))
        if phases is not None and _shifts(meta):
            frame = frame[frame.phase.isin(phases)].reset_index(drop=True)
        if t is not None:
            frame = frame[(frame.t >= t[0]) & (frame.t <= t[1])].reset_index(drop=True)
        if meta["epoch"] is not None:
            images = meta["images"] or {}
            image = [images.get(str(s), -1) for s in frame["sample"]]
            frame.insert(0, "image", np.asarray(image, dtype=np.int64))
            frame.insert(0, "epoch", np.int32(meta["epoch"]))
        frames.append(frame)
    if as_xarray:
        return _to_xarray(frames, t)
    if not frames:
        return blocks_to_frame([], (1.0, 1, [1]))
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def _load_legacy(path: Path, layers, variables, samples, neurons, phases, t) -> pd.DataFrame:
    """:func:`load` of a run folder of earlier versions: one long table, ``traces.parquet``."""
    filters = [
        (column, "in", [int(v) for v in wanted] if numeric else [str(v) for v in wanted])
        for column, wanted, numeric in (
            ("layer", layers, False),
            ("variable", variables, False),
            ("phase", phases, False),
            ("sample", samples, True),
            ("neuron", neurons, True),
        )
        if wanted is not None
    ]
    if t is not None:
        filters += [("t", ">=", float(t[0])), ("t", "<=", float(t[1]))]
    return pd.read_parquet(path, filters=filters or None).reset_index(drop=True)


def load_summary(run_dir, layers=None, epochs=None) -> pd.DataFrame:
    """The per-step population summaries (``[record] summary``) of a run folder.

    Returns
    -------
    pandas.DataFrame
        Columns ``layer``, ``sample``, ``step``, ``t`` (seconds) and the summary columns
        (``<variable>_mean``, ``<variable>_std``, ``x_grad_distance``); training adds ``epoch``.
    """
    frames = []
    for folder, meta in _folders(run_dir):
        if epochs is not None and meta["epoch"] not in epochs:
            continue
        for path in sorted(folder.glob("*/summary.parquet")):
            if layers is not None and path.parent.name not in layers:
                continue
            frame = pq.read_table(path).to_pandas()
            sequential = frame["sample"].to_numpy(np.int64) * meta["steps_per_sample"]
            frame.insert(2, "t", (sequential + frame["step"].to_numpy() + 1) * meta["dt"])
            frame.insert(0, "layer", path.parent.name)
            if meta["epoch"] is not None:
                frame.insert(0, "epoch", meta["epoch"])
            frames.append(frame)
    if not frames:
        return pd.DataFrame()
    return (
        pd.concat(frames, ignore_index=True)
        .sort_values(
            [c for c in ("epoch", "sample", "layer", "step") if c in frames[0]], kind="stable"
        )
        .reset_index(drop=True)
    )


def _to_xarray(found: list, t):
    import xarray as xr  # optional heavy dependency: only for as_xarray=True

    arrays = {}
    for meta, blocks in found:
        for block in blocks:
            samples, rows = np.unique(block.sample, return_inverse=True)
            steps = np.arange(meta["steps_per_sample"])
            cube = np.full((len(samples), len(steps), len(block.neurons)), np.nan)
            cube[rows, block.step] = block.values
            array = xr.DataArray(
                cube,
                dims=("sample", "step", "neuron"),
                coords={"sample": samples, "step": steps, "neuron": block.neurons},
                name=f"{block.layer}.{block.variable}",
            )
            if meta["epoch"] is not None:
                array = array.expand_dims(epoch=[meta["epoch"]])
            arrays.setdefault(array.name, []).append(array)
    merged = {
        name: parts[0] if len(parts) == 1 else xr.concat(parts, dim="epoch")
        for name, parts in arrays.items()
    }
    dataset = xr.Dataset(merged)
    if found:
        meta = found[0][0]
        dataset.attrs.update(dt=meta["dt"], steps_per_sample=meta["steps_per_sample"])
    return dataset

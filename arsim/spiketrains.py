"""Recorded spike trains of spiking feedback (``[record] variables`` with ``"spikes"``).

Every step of the relaxation, :class:`~arsim.components.spikes.SpikeChannels` hands its spikes
to a listener; the network (or :func:`arsim.period_oracle.simulate_periods`) adds where they
happened — the first sample of the minibatch and the step within the sample period — and passes
them to a :class:`SpikeLog`, which keeps the spikes the ``[record]`` table asks for as rows:

=========  ======  ===========================================================================
column     type    meaning
=========  ======  ===========================================================================
sample     int32   presentation slot
step       int32   step within the sample's period (0 … P − 1) in which the encoder fired
t          float64 ``(sample·P + step)·dt`` seconds: the start of that step (the time Brian2's
                   ``SpikeMonitor`` stamps a spike with)
neuron     int32   unit of the sending layer whose signal the encoder carries
sign       int8    +1: ON channel (carries [v]₊), −1: OFF channel (carries [−v]₊)
encoder    int32   index of the encoder in the unit's population (0 … N − 1)
receiver   string  the layer that receives the spike (the connection's source)
=========  ======  ===========================================================================

A :class:`SpikeWriter` appends them to ``spikes-<layer>.parquet`` (``<layer>``: the sending
layer) in the run folder's ``traces/`` folder (``traces/epoch-E/`` in training) whenever
:data:`FLUSH_ROWS` spikes wait, so memory stays bounded however long the run.
:func:`read_spikes` reads a file back.

What is kept follows ``[record]``: the sending ``layers``, the ``neurons``, the ``samples`` and
``minibatches``; spikes are sent in the relaxation only, so nothing is kept unless ``phases``
includes ``"relaxation"``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from arsim.recording import timing

COLUMNS = ("sample", "step", "t", "neuron", "sign", "encoder", "receiver")
"""Columns of a spike table (see the module docstring)."""

FLUSH_ROWS = 1 << 20
"""Spikes a :class:`SpikeWriter` holds before it appends them to its files (about 24 MiB)."""


def spike_file(folder, layer: str) -> Path:
    """The spike file of sending layer ``layer`` in a ``traces`` folder."""
    return Path(folder) / f"spikes-{layer}.parquet"


class SpikeLog:
    """The spikes of a run that ``[record]`` keeps, held in memory per sending layer.

    Parameters
    ----------
    model : ModelSpec
        The network (connection ``c`` sends its target's signal to its source).
    protocol : ProtocolSpec
        Its ``record`` table, ``dt``, period and ``batch_size``.
    """

    def __init__(self, model, protocol):
        self.model, self.protocol = model, protocol
        record = protocol.record
        self.dt, self.period, _ = timing(protocol)
        on = "relaxation" in record.phases
        self.connections = {  # c → (sending layer, receiving layer, kept units or None)
            c: (connection.target, connection.source, self._units(connection.target))
            for c, connection in enumerate(model.connections)
            if on and (record.layers is None or connection.target in record.layers)
        }
        self.rows = 0
        """Spikes kept so far."""
        self._parts: dict[str, list[dict]] = {}

    def _units(self, layer: str) -> np.ndarray | None:
        neurons = self.protocol.record.neurons
        if neurons is None:
            return None
        size = self.model.layer(layer).size
        return np.array([n for n in neurons if n < size], dtype=np.int64)

    def _replicas(self, first_sample: int, replicas: int) -> np.ndarray | None:
        """Replicas whose samples ``[record]`` keeps (None: all)."""
        record = self.protocol.record
        if record.samples is None and record.minibatches is None:
            return None
        batch = self.protocol.batch_size
        return np.array(
            [r for r in range(replicas) if record.keeps(first_sample + r, batch)], dtype=np.int64
        )

    def add(self, c: int, first_sample: int, step: int, spikes, count: int | None = None) -> None:
        """Keep the spikes connection ``c`` sent at step ``step`` of a minibatch's period.

        Parameters
        ----------
        c : int
            The connection.
        first_sample : int
            Presentation slot of replica 0 (replica ``r`` shows sample ``first_sample + r``).
        step : int
            Step within the sample period (0 … P − 1).
        spikes : ndarray of bool, shape (N, 2, replicas, n)
            Encoder, channel (ON, OFF), replica, unit.
        count : int, optional
            Replicas that show a sample (the others pad a last partial minibatch).
        """
        if c not in self.connections:
            return
        layer, receiver, units = self.connections[c]
        replicas = self._replicas(first_sample, spikes.shape[2] if count is None else count)
        if replicas is None:
            if count is not None and count < spikes.shape[2]:
                spikes = spikes[:, :, :count]
        elif not replicas.size:
            return
        else:
            spikes = spikes[:, :, replicas]
        if units is not None:
            spikes = spikes[..., units]
        encoder, channel, replica, unit = np.nonzero(spikes)
        if not encoder.size:
            return
        if replicas is not None:
            replica = replicas[replica]
        if units is not None:
            unit = units[unit]
        sample = first_sample + replica
        self._parts.setdefault(layer, []).append(
            {
                "sample": sample.astype(np.int32),
                "step": np.full(encoder.size, step, dtype=np.int32),
                "t": (sample * self.period + step) * self.dt,
                "neuron": unit.astype(np.int32),
                "sign": (1 - 2 * channel).astype(np.int8),
                "encoder": encoder.astype(np.int32),
                "receiver": np.full(encoder.size, receiver, dtype=object),
            }
        )
        self.rows += int(encoder.size)
        self._added(encoder.size)

    def _added(self, rows: int) -> None:
        """Called after every :meth:`add` that kept ``rows`` spikes."""

    def frame(self, layer: str) -> pd.DataFrame:
        """The spikes of sending layer ``layer`` held (:data:`COLUMNS`), sorted."""
        return _sorted(_table(self._parts.get(layer, [])))


class SpikeWriter(SpikeLog):
    """A :class:`SpikeLog` that appends to ``spikes-<layer>.parquet`` in ``folder``.

    Appends every :data:`FLUSH_ROWS` spikes and at :meth:`close` (also as a context manager);
    each append is one Parquet row group. A layer that sent no spike kept has no file.
    """

    def __init__(self, folder, model, protocol):
        super().__init__(model, protocol)
        self.folder = Path(folder)
        self._writers: dict[str, pq.ParquetWriter] = {}
        self._held = 0

    def _added(self, rows: int) -> None:
        self._held += rows
        if self._held >= FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        """Append the spikes held to their files."""
        for layer in list(self._parts):
            table = pa.Table.from_pandas(_table(self._parts.pop(layer)), preserve_index=False)
            table = table.cast(_SCHEMA)
            if layer not in self._writers:
                self.folder.mkdir(parents=True, exist_ok=True)
                path = spike_file(self.folder, layer)
                self._writers[layer] = pq.ParquetWriter(path, _SCHEMA, compression="lz4")
            self._writers[layer].write_table(table)
        self._held = 0

    def close(self) -> None:
        """Append what is held and close the files (closing again does nothing)."""
        self.flush()
        writers, self._writers = self._writers, {}
        for writer in writers.values():
            writer.close()

    def __enter__(self) -> SpikeWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_SCHEMA = pa.schema(
    [
        ("sample", pa.int32()),
        ("step", pa.int32()),
        ("t", pa.float64()),
        ("neuron", pa.int32()),
        ("sign", pa.int8()),
        ("encoder", pa.int32()),
        ("receiver", pa.string()),
    ]
)


def _table(parts: list[dict]) -> pd.DataFrame:
    """The rows of some :meth:`SpikeLog.add` parts as one table (in the order added)."""
    columns = {k: np.concatenate([p[k] for p in parts]) if parts else [] for k in COLUMNS}
    return pd.DataFrame(columns)


def _sorted(table: pd.DataFrame) -> pd.DataFrame:
    table = table.astype(
        {"sample": np.int32, "step": np.int32, "t": float, "neuron": np.int32,
         "sign": np.int8, "encoder": np.int32, "receiver": object}
    )  # fmt: skip
    order = ["sample", "step", "receiver", "neuron", "sign", "encoder"]
    return table.sort_values(order, kind="stable").reset_index(drop=True)


def read_spikes(folder, layer: str, samples=None, epoch: int | None = None) -> pd.DataFrame:
    """The recorded spikes that layer ``layer`` sent (:data:`COLUMNS`), sorted.

    Parameters
    ----------
    folder : path
        A run folder (its ``traces/``), or a ``traces`` folder itself.
    layer : str
        The sending layer.
    samples : list of int, optional
        Sample slots to read (all when None).
    epoch : int, optional
        Training: the recorded epoch (0-based) to read; the first recorded one by default.

    Returns
    -------
    pandas.DataFrame
        One row per spike (an empty table if the layer sent none that were kept).

    Raises
    ------
    FileNotFoundError
        No such trace folder (or recorded epoch).
    """
    root = Path(folder)
    root = root / "traces" if (root / "traces").is_dir() else root
    if epoch is not None:
        root = root / f"epoch-{epoch}"
    elif not (root / "meta.json").exists():
        epochs = sorted(root.glob("epoch-*"), key=lambda p: int(p.name.split("-")[1]))
        root = epochs[0] if epochs else root
    if not root.is_dir():
        raise FileNotFoundError(f"{folder}: no recorded spikes (expected {root}/spikes-*.parquet)")
    path = spike_file(root, layer)
    if not path.exists():
        return _sorted(pd.DataFrame({k: [] for k in COLUMNS}))
    filters = None if samples is None else [("sample", "in", [int(s) for s in samples])]
    return _sorted(pq.read_table(path, filters=filters).to_pandas())

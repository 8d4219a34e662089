"""The metrics table of a training run (``metrics.csv``; columns in :mod:`arsim.train`).

One row every N minibatches of an epoch and one per epoch, AR and the backprop baseline side
by side; floats are written with ``repr`` (exact), missing values as empty fields.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from arsim.spec import ModelSpec


def metric_columns(model: ModelSpec, protocol=None) -> list[str]:
    """Columns of ``metrics.csv`` in order.

    With spiking feedback (``protocol.spikes``), ``spikes_clipped_<layer>`` per sending layer:
    the saturated unit-steps of the rows' minibatches.
    """
    hidden = [layer.name for layer in model.layers if model.relaxes(layer.name)]
    columns = ["kind", "epoch", "batch", "samples", "ar_loss", "bp_loss"]
    columns += ["angle_deg", "angle_deg_max", "angle_deg_last"]
    columns += [f"angle_deg_W{layer}" for layer in range(len(model.connections))]
    columns += [f"relax_relerr_{name}" for name in hidden]
    for who in ("ar", "bp"):
        columns += [f"{who}_train_acc", f"{who}_test_acc", f"{who}_train_loss", f"{who}_test_loss"]
    if protocol is not None and protocol.spikes is not None:
        senders = {c.target for c in model.connections if model.relaxes(c.source)}
        columns += [
            f"spikes_clipped_{layer.name}" for layer in model.layers if layer.name in senders
        ]
    return columns


class Window:
    """Per-minibatch numbers accumulated between two rows.

    Parameters
    ----------
    n_layers : int
        Connections of the model (one ``angle_deg_W<l>`` each).
    """

    def __init__(self, n_layers: int):
        self.n_layers = n_layers
        self.ar_loss, self.bp_loss, self.angle, self.layer_angles = [], [], [], []
        self.clipped: dict[str, int] = {}  # spikes_clipped_<layer>, summed

    def add(self, metrics: dict, bp_loss: float) -> None:
        """Add a minibatch: its :func:`arsim.metrics.batch_metrics` and the baseline's loss."""
        self.ar_loss.append(metrics["loss"])
        self.bp_loss.append(bp_loss)
        for key, count in metrics.items():
            if key.startswith("spikes_clipped_"):
                self.clipped[key] = self.clipped.get(key, 0) + count
        if "angle_deg" not in metrics:  # not compared with backprop (``compare_every``)
            return
        self.angle.append(metrics["angle_deg"])
        self.layer_angles.append([metrics[f"angle_deg_W{c}"] for c in range(self.n_layers)])

    def summary(self) -> dict:
        """Means of the losses and angles (degrees), the largest and the last angle.

        The angles are those of the minibatches compared with backprop.
        """
        if not self.ar_loss:
            return {}
        row = {"ar_loss": float(np.mean(self.ar_loss)), "bp_loss": float(np.mean(self.bp_loss))}
        row |= self.clipped
        if not self.angle:
            return row
        layer_angles = np.array(self.layer_angles)
        row |= {
            "angle_deg": float(np.mean(self.angle)),
            "angle_deg_max": float(np.max(self.angle)),
            "angle_deg_last": float(self.angle[-1]),
        }
        for layer in range(self.n_layers):
            row[f"angle_deg_W{layer}"] = float(np.mean(layer_angles[:, layer]))
        return row


class MetricsTable:
    """``metrics.csv`` of a run folder, written row by row (flushed after each).

    Parameters
    ----------
    path : Path
        The file.
    model : ModelSpec
        The network (the columns depend on its layers and connections).
    protocol : ProtocolSpec, optional
        With spiking feedback, the ``spikes_clipped_<layer>`` columns.

    Attributes
    ----------
    rows : int
        Rows the file holds (besides the header).
    """

    def __init__(self, path: Path, model: ModelSpec, protocol=None):
        self.path, self.columns = path, metric_columns(model, protocol)
        self.rows = 0
        self._handle, self._writer = None, None

    def keep(self, count: int) -> None:
        """Rewrite the file as its header and its first ``count`` rows (none: a new file)."""
        kept = []
        if count:
            with self.path.open(newline="") as handle:
                kept = list(csv.reader(handle))[1 : count + 1]
        with self.path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(self.columns)
            writer.writerows(kept)
        self.rows = len(kept)

    def __enter__(self) -> MetricsTable:
        self._handle = self.path.open("a", newline="")
        self._writer = csv.writer(self._handle)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.close()
        self._handle, self._writer = None, None

    def write(self, row: dict) -> None:
        """Append a row (inside ``with table:``); absent columns stay empty."""
        self._writer.writerow([_format(row.get(column)) for column in self.columns])
        self._handle.flush()
        self.rows += 1


def _format(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)

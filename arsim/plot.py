"""Figures from run folders and sweep tables (matplotlib).

Every function returns a :class:`matplotlib.figure.Figure` and draws nothing it has no data for:
a panel with too little data says so in words instead of staying empty. Times are in ms within
the sample, angles in degrees, accuracies in percent.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from arsim import traces as trace_files

__all__ = [
    "learning_curves",
    "load_run",
    "raster",
    "save",
    "shade_phases",
    "sweep_results",
    "too_little_data",
    "traces",
]

PHASE_COLOURS = {"feedforward": "0.97", "relaxation": "0.90", "update": "0.97"}
"""Background of each phase in :func:`traces`."""
LINE_STYLES = {"x": "-", "xhat": "--", "fp": ":", "delta": "-.", "fb": (0, (1, 3))}
"""Line style of each recorded variable in :func:`traces`."""
OWN_VARIABLE_STYLES = ((0, (6, 2)), (0, (6, 2, 1, 2)), (0, (2, 1)), (0, (8, 2, 1, 2, 1, 2)))
"""Line styles of the variables a layer declares itself (``adapt``), in the order drawn."""


def line_styles(variables) -> dict:
    """Line style of each of ``variables``.

    :data:`LINE_STYLES`, then a layer's own variables in turn from :data:`OWN_VARIABLE_STYLES`.
    """
    own = [v for v in variables if v not in LINE_STYLES]
    styles = {v: LINE_STYLES[v] for v in variables if v in LINE_STYLES}
    for index, variable in enumerate(own):
        styles[variable] = OWN_VARIABLE_STYLES[index % len(OWN_VARIABLE_STYLES)]
    return styles


def load_run(
    run: str | Path, samples=None, variables=None
) -> tuple[dict, pd.DataFrame | None, pd.DataFrame | None]:
    """A run folder's ``config.json``, traces and ``metrics.csv`` (None if absent).

    The traces are read with :func:`arsim.traces.load`, only ``samples`` and ``variables``
    when given.
    """
    run = Path(run)
    config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    metrics_file = run / "metrics.csv"
    try:
        recorded = trace_files.load(run, samples=samples, variables=variables)
    except FileNotFoundError:
        recorded = None
    metrics = pd.read_csv(metrics_file) if metrics_file.exists() else None
    return config, recorded, metrics


def too_little_data(axis, message: str) -> None:
    """Write ``message`` in the middle of ``axis`` and hide its ticks."""
    axis.text(0.5, 0.5, message, ha="center", va="center", wrap=True, transform=axis.transAxes)
    axis.set_xticks([])
    axis.set_yticks([])


def _phase_spans(config: dict) -> list[tuple[str, float, float]]:
    """(phase, start, end) in ms within the sample, from the run's derived steps."""
    dt_ms = config["protocol"]["dt"] * 1e3
    spans, start = [], 0.0
    for phase in ("feedforward", "relaxation", "update"):
        length = config["derived"]["phase_steps"][phase] * dt_ms
        spans.append((phase, start, start + length))
        start += length
    return spans


def shade_phases(axis, config: dict) -> None:
    """Shade the phases of a sample (:data:`PHASE_COLOURS`) and mark its plasticity step.

    The x axis is the time within the sample in ms; ``config`` is the run's ``config.json``.
    """
    for phase, low, high in _phase_spans(config):
        axis.axvspan(low, high, color=PHASE_COLOURS[phase], zorder=0)
    plasticity = config["derived"].get("plasticity_step")
    if plasticity is not None:
        dt_ms = config["protocol"]["dt"] * 1e3
        axis.axvline(plasticity * dt_ms, color="C3", lw=0.8, ls="--", label="plasticity")


def traces(
    run: str | Path,
    sample: int = 0,
    variables=("x", "xhat"),
    layers=None,
    neurons=None,
    max_neurons: int = 8,
) -> Figure:
    """Recorded traces of chosen neurons, one panel per layer, phases shaded.

    Parameters
    ----------
    run : str or Path
        A run folder with recorded traces (:mod:`arsim.traces`).
    sample : int
        Sample index (as recorded).
    variables : sequence of str
        Variables to draw (``x``, ``xhat``, ``fp``, ``delta``, ``fb``, or a variable a layer
        declares in its ``equations``, such as ``adapt``), one line style each
        (:func:`line_styles`); a neuron keeps its colour across variables.
    layers : sequence of str, optional
        Layers to draw (default: every recorded layer, in the model's order).
    neurons : sequence of int, optional
        Neurons to draw (default: the first ``max_neurons`` recorded in each layer, so that a
        run recorded with ``neurons = "all"`` stays readable).
    max_neurons : int
        At most this many neurons per layer when ``neurons`` is not given.

    Returns
    -------
    Figure
        Time (ms) within the sample on x; the phases shaded (:data:`PHASE_COLOURS`) and the
        plasticity step marked by a vertical line.
    """
    config, recorded, _ = load_run(run, samples=[sample], variables=list(variables))
    styles = line_styles(variables)
    rows = pd.DataFrame() if recorded is None else recorded[recorded["sample"] == sample]
    rows = rows[rows.variable.isin(variables)] if not rows.empty else rows
    names = [layer["name"] for layer in config["model"]["layers"]]
    chosen = [n for n in (layers or names) if rows.empty or n in set(rows.layer)]
    fig, axes = plt.subplots(
        max(1, len(chosen)), 1, figsize=(7, 2.2 * max(1, len(chosen))), sharex=True, squeeze=False
    )
    if rows.empty:
        too_little_data(axes[0, 0], f"no traces of sample {sample} ({', '.join(variables)})")
        return fig
    dt_ms = config["protocol"]["dt"] * 1e3
    start = rows.t.min() * 1e3 - dt_ms
    for axis, layer in zip(axes[:, 0], chosen, strict=True):
        shade_phases(axis, config)
        in_layer = rows[rows.layer == layer]
        shown = neurons if neurons is not None else sorted(in_layer.neuron.unique())[:max_neurons]
        for (variable, neuron), group in in_layer[in_layer.neuron.isin(shown)].groupby(
            ["variable", "neuron"], observed=True
        ):
            axis.plot(
                group.t * 1e3 - start,
                group.value,
                linestyle=styles[variable],
                lw=1,
                color=f"C{int(neuron) % 10}",
                label=f"{variable} {neuron}",
            )
        axis.set_ylabel(layer)
    axes[-1, 0].set_xlabel("time in sample (ms)")
    named = ", ".join(f"{v} {styles[v]}" for v in variables if isinstance(styles[v], str))
    own = [v for v in variables if v not in LINE_STYLES]
    named += f"; {', '.join(own)} dashed" if own else ""
    axes[0, 0].set_title(f"sample {sample}: {named}; relaxation shaded", fontsize=9)
    fig.tight_layout()
    return fig


def _x_in_sample(run, layer: str, sample: int, epoch: int | None) -> pd.DataFrame:
    """The recorded x of ``layer`` in ``sample`` (one epoch of a training), ``ms`` in sample."""
    try:
        rows = trace_files.load(run, layers=[layer], variables=["x"], samples=[sample])
    except FileNotFoundError:
        return pd.DataFrame(columns=["neuron", "value", "ms"])
    if "epoch" in rows:
        rows = rows[rows.epoch == (rows.epoch.min() if epoch is None else epoch)]
    config = json.loads((Path(run) / "config.json").read_text(encoding="utf-8"))
    period_ms = config["derived"]["steps_per_sample"] * config["protocol"]["dt"] * 1e3
    return rows.assign(ms=rows.t * 1e3 - sample * period_ms)


def raster(
    run: str | Path,
    layer: str,
    sample: int = 0,
    neurons=None,
    max_neurons: int = 10,
    epoch: int | None = None,
    reference: str | Path | None = None,
) -> Figure:
    """The spikes a layer sent in one sample, beside its x, phases shaded.

    Parameters
    ----------
    run : str or Path
        A run folder that recorded ``spikes`` (and ``x``) of ``layer``
        (:func:`arsim.traces.read_spikes`).
    layer : str
        The sending layer.
    sample : int
        Sample index (as recorded).
    neurons : sequence of int, optional
        Units to draw (default: the first ``max_neurons`` with a recorded spike or x).
    max_neurons : int
        At most this many units when ``neurons`` is not given.
    epoch : int, optional
        Training: the recorded epoch (the first by default).
    reference : str or Path, optional
        Another run folder (e.g. the same network without ``[spikes]``) whose x of the same
        sample and units is drawn dashed.

    Returns
    -------
    Figure
        Top: x of each unit (solid; the reference's dashed, same colour). Bottom: one row per
        unit and encoder, ON spikes (``sign = +1``) as dark ticks above the row's centre, OFF
        spikes as red ticks below; a layer that sends to several layers shows the spikes of
        the first receiver. Time (ms) within the sample on x.
    """
    config = json.loads((Path(run) / "config.json").read_text(encoding="utf-8"))
    spikes = trace_files.read_spikes(run, layer, samples=[sample], epoch=epoch)
    if not spikes.empty:
        spikes = spikes[spikes.receiver == spikes.receiver.iloc[0]]
    x = _x_in_sample(run, layer, sample, epoch)
    found = sorted(set(spikes.neuron) | set(x.neuron))
    shown = list(neurons) if neurons is not None else found[:max_neurons]
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(7, 5), sharex=True, gridspec_kw={"height_ratios": [1, 1.4]}
    )
    if not shown:
        too_little_data(bottom, f"no spikes or x recorded of {layer} in sample {sample}")
        return fig
    dt_ms = config["protocol"]["dt"] * 1e3
    for axis in (top, bottom):
        shade_phases(axis, config)
    reference_x = None if reference is None else _x_in_sample(reference, layer, sample, epoch)
    for row, neuron in enumerate(shown):
        colour = f"C{row % 10}"
        mine = x[x.neuron == neuron]
        top.plot(mine.ms, mine.value, color=colour, lw=1, label=f"unit {neuron}")
        if reference_x is not None:
            theirs = reference_x[reference_x.neuron == neuron]
            top.plot(theirs.ms, theirs.value, color=colour, lw=1, ls="--")
    population = int(spikes.encoder.max()) + 1 if not spikes.empty else 1
    kept = spikes[spikes.neuron.isin(shown)]
    rows = {n: k for k, n in enumerate(shown)}
    height = 0.8 / population
    y = kept.neuron.map(rows).to_numpy() + (kept.encoder.to_numpy() + 0.5) * height - 0.4
    on = kept.sign.to_numpy() > 0
    ms = kept.step.to_numpy() * dt_ms
    bottom.scatter(ms[on], y[on] + height / 4, marker="|", s=30, color="k", lw=0.8, label="ON")
    bottom.scatter(ms[~on], y[~on] - height / 4, marker="|", s=30, color="C3", lw=0.8, label="OFF")
    bottom.set_yticks(range(len(shown)), [str(n) for n in shown])
    bottom.set_ylim(-0.6, len(shown) - 0.4)
    bottom.set(xlabel="time in sample (ms)", ylabel=f"{layer} unit")
    bottom.legend(fontsize=7, loc="upper right")
    receiver = "" if spikes.empty else f" to {spikes.receiver.iloc[0]}"
    top.set_ylabel(f"{layer} x")
    top.legend(fontsize=7, ncol=min(5, len(shown)), loc="best")
    dashed = " (dashed: reference)" if reference is not None else ""
    title = f"sample {sample}: {layer}'s x{dashed}; its spikes{receiver} carry x ⊙ f'"
    top.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def learning_curves(run: str | Path) -> Figure:
    """Accuracy (or loss) and the angle between AR's update and backprop over a run.

    Parameters
    ----------
    run : str or Path
        A run folder with ``metrics.csv``: a training run (``kind`` rows, AR and backprop
        accuracies) or a random-data run (loss and angle per minibatch).

    Returns
    -------
    Figure
        Left: test accuracy of AR (solid) and backprop (dashed) per metrics row, or the loss
        for a random-data run; right: the angle to backprop (overall and per weight matrix).
        A training draws its ``batch`` rows, or its ``epoch`` rows when it has fewer than two
        batch rows (a short training: fewer minibatches than ``--metrics-every``); the title
        says which (one epoch row is drawn as a point). Fewer rows say so instead of drawing.
    """
    metrics_file = Path(run) / "metrics.csv"
    metrics = pd.read_csv(metrics_file) if metrics_file.exists() else None
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    metrics = pd.DataFrame() if metrics is None else metrics
    rows = "metrics"
    if "kind" in metrics:  # a training: its batch rows, or its epoch rows when those are few
        batches = metrics[metrics.kind == "batch"]
        epochs = metrics[metrics.kind == "epoch"]
        rows = "batch" if len(batches) >= 2 or len(batches) >= len(epochs) else "epoch"
        metrics = batches if rows == "batch" else epochs
    x = metrics["samples"] if "samples" in metrics else pd.Series(range(len(metrics)))
    needed = 1 if rows == "epoch" else 2  # an epoch row alone is a result; a batch row is not
    if len(metrics) < needed:
        verb = "is" if needed == 1 else "are"
        message = f"too little data: {len(metrics)} metrics row(s); at least {needed} {verb} needed"
        too_little_data(left, message)
        too_little_data(right, message)
        return fig
    marker = "o" if len(metrics) < 10 else None  # few points stay visible
    left.set_title(f"{len(metrics)} {rows} row(s) of metrics.csv", fontsize=9)
    if "ar_test_acc" in metrics:
        left.plot(x, 100 * metrics.ar_test_acc, color="C0", marker=marker, label="AR")
        left.plot(x, 100 * metrics.bp_test_acc, "--", color="C3", marker=marker, label="backprop")
        left.set(xlabel="samples", ylabel="test accuracy (%)")
        left.legend()
    else:
        left.plot(x, metrics.loss, color="C0", marker=marker, label="AR")
        left.set(xlabel="minibatch", ylabel="loss")
    right.plot(x, metrics.angle_deg, color="k", marker=marker, label="all weights")
    for column in sorted(c for c in metrics if c.startswith("angle_deg_W")):
        right.plot(x, metrics[column], lw=0.8, label=column.removeprefix("angle_deg_"))
    right.set(xlabel=left.get_xlabel(), ylabel="angle to backprop (deg)", ylim=(0, None))
    right.legend(fontsize=7)
    fig.tight_layout()
    return fig


def sweep_results(table: pd.DataFrame | str | Path, parameter: str, values=None) -> Figure:
    """A sweep's results against one grid parameter, one panel per result column.

    Parameters
    ----------
    table : DataFrame or path
        ``results.csv`` of ``arsim sweep`` (or the table :func:`arsim.sweep.run_sweep` returns).
    parameter : str
        The grid column on x, e.g. ``protocol.oscillation.frequency``; values with a unit
        (``"8 Hz"``) are placed by their number; other values (``transpose``, ``fixed``)
        are categories, placed in the order they first appear in the table and labelled.
    values : sequence of str, optional
        Result columns (default: those of ``ar_test_acc``, ``angle_deg``, ``mean_angle_deg``
        that the table has). Completed points only; the mean over seeds is drawn with the
        seeds as dots.

    Returns
    -------
    Figure
    """
    table = pd.read_csv(table) if isinstance(table, str | Path) else table
    done = table[table.status == "completed"] if "status" in table else table
    values = values or [c for c in ("ar_test_acc", "angle_deg", "mean_angle_deg") if c in table]
    fig, axes = plt.subplots(1, max(1, len(values)), figsize=(4.5 * max(1, len(values)), 3.4))
    axes = [axes] if not hasattr(axes, "__len__") else list(axes)
    if done.empty or not values or done[parameter].nunique() < 2:
        too_little_data(
            axes[0],
            f"too little data: {done[parameter].nunique()} value(s) of "
            f"{parameter} completed; at least 2 are needed",
        )
        return fig
    number = pd.to_numeric(done[parameter].astype(str).str.split().str[0], errors="coerce")
    if number.notna().all():
        x, labels = number.to_numpy(), None
    else:  # categories at positions 0, 1, … in the order they first appear in the table
        labels = list(dict.fromkeys(done[parameter].astype(str)))
        x = done[parameter].astype(str).map({label: k for k, label in enumerate(labels)})
        x = x.to_numpy()
    for axis, column in zip(axes, values, strict=False):
        axis.plot(x, done[column], "o", color="0.6", ms=3)
        mean = done[column].groupby(x).mean()  # sorted by position (or number)
        axis.plot(mean.index, mean.to_numpy(), "-", color="C0")
        axis.set(xlabel=parameter, ylabel=column)
        if labels is not None:
            axis.set_xticks(range(len(labels)), labels)
    fig.tight_layout()
    return fig


def save(fig: Figure, path: str | Path, dpi: int = 120) -> Path:
    """Save ``fig`` (creating its folder), close it, and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path

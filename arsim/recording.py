"""Recorded neuron traces as a tidy (long-format) pandas DataFrame."""

from __future__ import annotations

import brian2 as b2
import numpy as np
import pandas as pd

from arsim.spec import PHASES, ProtocolSpec
from arsim.spec.schedule import Schedule

TRACE_COLUMNS = ("sample", "phase", "t", "layer", "neuron", "variable", "value")
"""Columns of a trace table; ``t`` in seconds, the time at which ``value`` holds."""


def phase_of_step(step_in_sample: np.ndarray, protocol: ProtocolSpec) -> np.ndarray:
    """Phase index (into :data:`~arsim.spec.PHASES`) of each step within a sample."""
    bounds = np.cumsum(list(Schedule(None, protocol).phase_steps.values()))
    return np.searchsorted(bounds, step_in_sample, side="right")


def monitors_to_frame(network, n_samples: int) -> pd.DataFrame:
    """Turn the state monitors of a network into one long table.

    A monitor records at the end of each step; the row's ``t`` is the end of that step (when the
    value holds) on the sequential timeline (sample ``s`` occupies ``[s P dt, (s+1) P dt)``
    whatever the execution mode), its ``phase`` the phase of that step and ``sample`` the sample
    it belongs to. Only the samples and phases the protocol's ``record`` asks for are kept.

    Parameters
    ----------
    network : arsim.network.ARNetwork
        A network that has run (its ``monitors`` and ``locate``).
    n_samples : int
        Samples presented (later rows belong to the tick that ended the run).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`TRACE_COLUMNS`; ``phase``, ``layer`` and ``variable`` are categorical.
    """
    protocol: ProtocolSpec = network.protocol
    steps_per_sample = network.schedule.sample_steps
    wanted_phases = [PHASES.index(p) for p in protocol.record.phases]
    sizes = {layer.name: layer.size for layer in network.model.layers}
    frames = []
    for layer, monitor in network.monitors.items():
        times = np.asarray(monitor.t / b2.second)
        if times.size == 0:
            continue
        rows = np.asarray(monitor.record, dtype=np.int64)
        n_rows, n_times = len(rows), len(times)
        steps = np.rint(times / protocol.dt).astype(np.int64)
        sample, neuron, sequential = network.locate(
            np.repeat(rows, n_times), np.tile(steps, n_rows), sizes[layer]
        )
        phase = phase_of_step(sequential % steps_per_sample, protocol)
        keep = (sample < n_samples) & np.isin(phase, wanted_phases)
        if protocol.record.samples is not None:
            keep &= np.isin(sample, protocol.record.samples)
        if not keep.any():
            continue
        for variable in monitor.record_variables:
            values = np.asarray(getattr(monitor, variable)).ravel()  # (rows, times) row-major
            frames.append(
                pd.DataFrame(
                    {
                        "sample": sample[keep].astype(np.int32),
                        "phase": phase[keep],
                        "t": (sequential[keep] + 1) * protocol.dt,
                        "layer": layer,
                        "neuron": neuron[keep].astype(np.int32),
                        "variable": variable,
                        "value": values[keep],
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

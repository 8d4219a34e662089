"""Recorded neuron traces as a tidy (long-format) pandas DataFrame."""

from __future__ import annotations

import brian2 as b2
import numpy as np
import pandas as pd

from arsim.spec import PHASES, ProtocolSpec

TRACE_COLUMNS = ("sample", "phase", "t", "layer", "neuron", "variable", "value")
"""Columns of a trace table; ``t`` in seconds, the time at which ``value`` holds."""


def phase_of_step(step_in_sample: np.ndarray, protocol: ProtocolSpec) -> np.ndarray:
    """Phase index (into :data:`~arsim.spec.PHASES`) of each step within a sample."""
    bounds = np.cumsum(list(protocol.phase_steps.values()))
    return np.searchsorted(bounds, step_in_sample, side="right")


def monitors_to_frame(
    monitors: dict[str, b2.StateMonitor], protocol: ProtocolSpec, n_samples: int
) -> pd.DataFrame:
    """Turn the state monitors of a run into one long table.

    A monitor records at the end of each step; the row's ``t`` is the end of that step (when the
    value holds), its ``phase`` the phase the step belongs to and ``sample`` the sample it is
    part of. Only the samples and phases the protocol's ``record`` asks for are kept.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`TRACE_COLUMNS`; ``phase``, ``layer`` and ``variable`` are categorical.
    """
    steps_per_sample = protocol.sample_steps
    wanted_phases = [PHASES.index(p) for p in protocol.record.phases]
    frames = []
    for layer, monitor in monitors.items():
        times = np.asarray(monitor.t / b2.second)
        if times.size == 0:
            continue
        step = np.rint(times / protocol.dt).astype(np.int64)
        sample = step // steps_per_sample
        phase = phase_of_step(step % steps_per_sample, protocol)
        keep = (sample < n_samples) & np.isin(phase, wanted_phases)
        if protocol.record.samples is not None:
            keep &= np.isin(sample, protocol.record.samples)
        if not keep.any():
            continue
        neurons = np.asarray(monitor.record, dtype=np.int32)
        for variable in monitor.record_variables:
            values = np.asarray(getattr(monitor, variable))[:, keep]  # (neurons, times)
            n_neurons, n_times = values.shape
            frames.append(
                pd.DataFrame(
                    {
                        "sample": np.tile(sample[keep].astype(np.int32), n_neurons),
                        "phase": np.tile(phase[keep], n_neurons),
                        "t": np.tile((step[keep] + 1) * protocol.dt, n_neurons),
                        "layer": layer,
                        "neuron": np.repeat(neurons, n_times),
                        "variable": variable,
                        "value": values.ravel(),
                    }
                )
            )
    if not frames:
        frame = pd.DataFrame({column: [] for column in TRACE_COLUMNS})
        frame["phase"] = frame["phase"].astype(np.int64)
    else:
        frame = pd.concat(frames, ignore_index=True)
    frame["phase"] = pd.Categorical.from_codes(frame["phase"].to_numpy(np.int64), categories=PHASES)
    frame["layer"] = frame["layer"].astype("category")
    frame["variable"] = frame["variable"].astype("category")
    return frame.sort_values(
        ["sample", "layer", "variable", "neuron", "t"], kind="stable"
    ).reset_index(drop=True)

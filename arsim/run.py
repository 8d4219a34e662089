"""Running a model under a protocol and writing the run folder.

A run folder holds::

    config.json          resolved model and protocol, seed, sample count, versions
    weights/initial.npz  W0, b0, psi0, … before the first sample (W{l}: (n_{l+1}, n_l))
    weights/final.npz    the same after the last sample (a completed run only)
    weights/at-divergence.npz  the last finite weights: after the last minibatch before the
                         one that diverged (a diverged run only)
    weights/at-stop.npz  the weights after the last minibatch done (a run stopped by
                         SIGINT or SIGTERM only; see arsim.stops)
    traces/              recorded neuron traces, streamed chunk by chunk (see arsim.traces)
    metrics.csv          one row per minibatch: loss and the AR update against backprop
    samples.csv          one row per sample (dense mode): its own update against its backprop
                         gradient (angle over all weights, per weight matrix, relative error)
    status.json          'completed', 'diverged' or 'interrupted', with the message, the
                         minibatches and samples done and the signal

The folder is written under a temporary name and renamed when the run ends (completed,
diverged or interrupted), so a folder with the final name is never half-written;
``metrics.csv`` grows a row per minibatch while the run goes on. A second SIGINT stops at once
and removes the temporary folder.
"""

from __future__ import annotations

import csv
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

# The text progress bar, in a terminal and in a notebook alike: tqdm.auto would pick the
# notebook widget, which needs ipywidgets (no dependency of arsim), and without it warns with
# the path of the installed tqdm ("TqdmWarning: IProgress not found") in every notebook.
from tqdm.std import tqdm

from arsim import stops, threads
from arsim.loop import ChunkLoop, presentation_slots
from arsim.memory import check_memory
from arsim.metrics import sample_metrics
from arsim.modes import (
    DEFAULT_MODE,
    build_network,
    check_execution,
    resolve_codegen_target,
    session,
    set_codegen_target,
)
from arsim.network import seed_noise
from arsim.params import Params, SeedStream, init_params, seeded_rng
from arsim.recording import MemoryRecorder
from arsim.runfolder import (
    derived_timing,
    prepare_run_folder,
    publish,
    save_npz,
    versions,
    write_json,
)
from arsim.spec import ModelSpec, ProtocolSpec, check_compatible
from arsim.spec.schedule import Schedule
from arsim.traces import TraceWriter


def random_data(model: ModelSpec, n_samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random inputs uniform in [0, 1) and one-hot targets of random classes.

    Inputs and classes come from two streams (keys 0 and 1 of :attr:`SeedStream.DATA`), each
    drawn in sample order, so sample ``i`` is the same whatever ``n_samples`` is.
    """
    inputs = seeded_rng(seed, SeedStream.DATA, 0).random((n_samples, model.input_size))
    classes = seeded_rng(seed, SeedStream.DATA, 1).integers(0, model.output.size, n_samples)
    return inputs, np.eye(model.output.size)[classes]


@dataclass
class RunResult:
    """What a run produced.

    Attributes
    ----------
    params : Params
        Weights after the run.
    traces : pandas.DataFrame or None
        Recorded traces (long format); None when streamed to a run folder.
    metrics : pandas.DataFrame
        One row per minibatch.
    diverged : str or None
        The divergence message, if the simulation diverged (``params`` are then the last
        finite weights: after the last minibatch before the one that diverged).
    relaxation_steps : ndarray of int or None
        With a convergence tolerance: the steps each sample relaxed.
    samples : pandas.DataFrame or None
        One row per sample (dense mode): its own weight update against its backprop
        gradient (:func:`sample_metrics`).
    """

    params: Params
    traces: pd.DataFrame
    metrics: pd.DataFrame
    diverged: str | None = None
    relaxation_steps: np.ndarray | None = None
    samples: pd.DataFrame | None = None
    interrupted: int | None = None
    """The signal that stopped the run at a minibatch boundary (:mod:`arsim.stops`), if any."""
    batches_done: int = 0
    samples_done: int = 0
    trace_rows: int = 0
    """Rows of the long trace table recorded."""
    spikes: object = None
    """The spike trains recorded (``"spikes"`` in ``[record] variables``), or None: without a
    run folder a :class:`~arsim.spiketrains.SpikeLog` (``spikes.frame(layer)``); with one, read
    its files with :func:`arsim.traces.read_spikes`."""


def simulate(
    model: ModelSpec,
    protocol: ProtocolSpec,
    inputs: np.ndarray,
    targets: np.ndarray,
    params: Params | None = None,
    progress: bool = False,
    record: bool = True,
    mode: str = DEFAULT_MODE,
    device: str = "runtime",
    seed: int = 0,
    metrics_path: Path | None = None,
    recorder=None,
) -> RunResult:
    """Run the samples through the Brian2 network, some minibatches per simulation chunk.

    Parameters
    ----------
    model, protocol : ModelSpec, ProtocolSpec
        What to simulate and how.
    inputs : ndarray, shape (n_samples, n_in)
        Stimuli in presentation order.
    targets : ndarray, shape (n_samples, n_out)
        Targets.
    params : Params, optional
        Initial weights (drawn from the model's initialisation when not given).
    progress : bool
        Show a progress bar (samples).
    record : bool
        Create the state monitors the protocol asks for.
    mode : {'dense', 'synapses'}
        Execution mode (see :data:`MODES`); both compute the same numbers.
    device : {'runtime', 'cpp_standalone'}
        Brian2 device of the synapses mode: runtime (NumPy or Cython code generation) or a
        compiled C++ program built once and run once per minibatch.
    seed : int
        Seed of the dynamics' noise (when the protocol has some).
    metrics_path : Path, optional
        A CSV file that gets each minibatch's metrics row as soon as it is computed.
    recorder : arsim.traces.TraceWriter, optional
        Where the traces go chunk by chunk (default: kept in memory, returned).

    Returns
    -------
    RunResult
        Final weights, traces and per-batch metrics; on divergence ``diverged`` holds the
        message and the traces hold what was recorded up to the end of that minibatch.
    """
    params = init_params(model) if params is None else params
    if stops.requested() is not None:  # stopped before the first minibatch: nothing is built
        return _stopped_before_start(protocol, len(inputs), params, recorder)
    if progress and device == "cpp_standalone":
        tqdm.write("arsim: building the C++ program (once per network, about 15 s)")
    seed_noise(seed)
    # leaving the network releases what it holds (a standalone build folder), then the session
    # restores Brian2's preferences and device
    with (
        session(protocol, mode, device),
        build_network(model, protocol, params, mode, device, record) as network,
    ):
        network.seed_key = (seed,)
        return _simulate(
            network, model, protocol, inputs, targets, params, progress, metrics_path, recorder
        )


def _stopped_before_start(protocol, n_samples: int, params, recorder) -> RunResult:
    """What a run stopped before its first minibatch keeps: the initial weights, no rows."""
    if recorder is None:
        recorder = MemoryRecorder(protocol)
    if hasattr(recorder, "close"):  # the trace folder stays readable (no trace file)
        recorder.close()
    steps = None
    if protocol.tolerance > 0:
        nominal = Schedule(None, protocol).phase_steps["relaxation"]
        steps = np.full(presentation_slots(protocol, n_samples), nominal)
    metrics = pd.DataFrame()
    return RunResult(params, recorder.frame(), metrics, None, steps, None, stops.requested())


def _append_row(path: Path | None, row: dict) -> None:
    """Append ``row`` to the CSV file ``path`` (with the header when the file is new)."""
    if path is None:
        return
    new = not path.exists()
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def _simulate(
    network, model, protocol, inputs, targets, params, progress, path, recorder
) -> RunResult:
    bar = tqdm(
        total=presentation_slots(protocol, len(inputs)),
        unit="sample",
        disable=not progress,
        desc=f"{model.name}/{protocol.name}",
    )
    loop = ChunkLoop(network, model, protocol, inputs, targets, params, bar=bar, recorder=recorder)
    rows, per_sample, last = [], [], params
    for batch in loop:
        t = batch.last * network.schedule.sample_duration
        rows.append({"batch": batch.index, "samples": batch.last, "t": t} | batch.metrics)
        _append_row(path, rows[-1])
        last = batch.after
        if batch.signals is not None:
            table = {"sample": batch.swept, "batch": np.full(len(batch.swept), batch.index)}
            with np.errstate(all="ignore"):  # a run about to diverge: its numbers are kept
                table |= sample_metrics(
                    model, batch.before, batch.signals, batch.inputs, batch.targets
                )
            per_sample.append(pd.DataFrame(table))
    bar.close()
    steps = None
    if protocol.tolerance > 0:
        steps = np.full(loop.slots, network.schedule.phase_steps["relaxation"])
        for sample, taken in loop.relaxation_steps.items():
            if sample < loop.slots:
                steps[sample] = taken
    samples = pd.concat(per_sample, ignore_index=True) if per_sample else None
    diverged = None if loop.divergence is None else loop.divergence.message()
    metrics = pd.DataFrame(rows)
    stopped = diverged is not None or loop.interrupted is not None
    final = last if stopped else network.get_params()
    return RunResult(
        final,
        loop.traces(),
        metrics,
        diverged,
        steps,
        samples,
        loop.interrupted,
        loop.batches_done,
        loop.samples_done,
        loop.recorder.rows,
        loop.spike_log,
    )


def run_to_folder(
    model: ModelSpec,
    protocol: ProtocolSpec,
    out: Path,
    n_samples: int,
    seed: int | None = None,
    target: str = "auto",
    progress: bool = True,
    mode: str = DEFAULT_MODE,
    device: str = "runtime",
) -> tuple[Path, RunResult]:
    """Run on seeded random data and write the run folder (see the module docstring).

    Everything is validated (the memory the run needs included) before the folder is created.
    The folder is renamed to ``out`` when the run completes, diverges or is stopped by SIGINT
    or SIGTERM; the result says which.

    Raises
    ------
    arsim.stops.StoppedAtOnce
        A second SIGINT stopped the run in the middle of a minibatch (the temporary folder is
        removed).
    """
    check_compatible(model, protocol)
    check_execution(protocol, mode, device, model)
    if n_samples < 1:
        raise ValueError(f"--samples: expected a positive number of samples, got {n_samples}")
    check_memory(model, protocol, n_samples)
    target = resolve_codegen_target(target, n_samples)
    set_codegen_target(target)
    threads.apply()
    seed = model.seed if seed is None else seed
    partial = prepare_run_folder(out)
    try:
        params = init_params(model, seed)
        inputs, targets = random_data(model, n_samples, seed)
        config = _run_config(model, protocol, seed, n_samples, target, mode, device)
        write_json(partial / "config.json", config)
        save_npz(partial / "weights" / "initial.npz", **params.to_arrays())
        with TraceWriter(partial / "traces", protocol) as writer:
            result = simulate(
                model,
                protocol,
                inputs,
                targets,
                params,
                progress=progress,
                mode=mode,
                device=device,
                seed=seed,
                metrics_path=partial / "metrics.csv",
                recorder=writer,
            )
        _write_outputs(partial, protocol, result)
    except KeyboardInterrupt:
        shutil.rmtree(partial, ignore_errors=True)
        raise stops.StoppedAtOnce(None) from None
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)  # nothing half-written is left behind
        raise
    return publish(partial), result


def _run_config(model, protocol, seed, n_samples, target, mode, device) -> dict:
    """``config.json`` of a random-data run."""
    return {
        "model": model.to_dict(),
        "protocol": protocol.to_dict(),
        "derived": derived_timing(model, protocol),
        "seed": seed,
        "samples": n_samples,
        "data": "random: inputs uniform in [0, 1), one-hot targets of random classes; "
        "sample i is the same for every --samples",
        "codegen_target": target,
        "blas_threads": stops.blas_threads(),
        "threads": threads.describe(threads.resolve()),
        "mode": mode,
        "device": device,
        "versions": versions(),
        "command": sys.argv,
    }


def run_state(result: RunResult) -> str:
    """``'completed'``, ``'diverged'`` or ``'interrupted'``."""
    if result.diverged:
        return "diverged"
    return "interrupted" if result.interrupted is not None else "completed"


WEIGHTS_FILE = {
    "completed": "final.npz",
    "diverged": "at-divergence.npz",
    "interrupted": "at-stop.npz",
}
"""The file under ``weights/`` that holds a run's last weights, by how it ended."""


def _write_outputs(partial: Path, protocol: ProtocolSpec, result: RunResult) -> None:
    state = run_state(result)
    save_npz(partial / "weights" / WEIGHTS_FILE[state], **result.params.to_arrays())
    if len(result.metrics):
        result.metrics.to_csv(partial / "metrics.csv", index=False)
    if result.samples is not None:
        result.samples.to_csv(partial / "samples.csv", index=False)
    if result.relaxation_steps is not None:
        steps = result.relaxation_steps
        if state != "completed":
            steps = steps[: result.samples_done]
        table = {"sample": np.arange(len(steps)), "steps": steps, "seconds": steps * protocol.dt}
        pd.DataFrame(table).to_csv(partial / "relaxation.csv", index=False)
    status = {
        "status": state,
        "message": result.diverged,
        "batches_done": result.batches_done,
        "samples_done": result.samples_done,
    }
    if result.interrupted is not None:
        status["signal"] = stops.signal_name(result.interrupted)
    write_json(partial / "status.json", status)

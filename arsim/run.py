"""Running a model under a protocol and writing the run folder.

A run folder holds::

    config.json          resolved model and protocol, seed, sample count, versions
    weights/initial.npz  W0, b0, psi0, … before the first sample (W{l}: (n_{l+1}, n_l))
    weights/final.npz    the same after the last sample
    traces.parquet       recorded neuron traces, long format (see arsim.recording)
    metrics.csv          one row per minibatch: loss and the AR update against backprop
    samples.csv          one row per sample (dense mode): its own update against its backprop
                         gradient (angle over all weights, per weight matrix, relative error)
    status.json          'completed' or 'diverged', with the message

The folder is written under a temporary name and renamed when the run ends (completed or
diverged), so a folder with the final name is never half-written.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import brian2 as b2
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

import arsim
from arsim import oracle
from arsim.metrics import angle_degrees, per_sample_comparison, relative_error
from arsim.modes import (  # noqa: F401  (the names run.py has always offered)
    COMPILE_PAYS_OFF,
    DEFAULT_MODE,
    DEVICES,
    MODES,
    ExecutionError,
    build_network,
    check_execution,
    resolve_codegen_target,
    set_codegen_target,
)
from arsim.network import seed_noise
from arsim.params import Params, SeedStream, init_params, seeded_rng
from arsim.recording import concat_traces, monitors_to_frame, phase_of_step
from arsim.spec import PHASES, ModelSpec, ProtocolSpec, check_compatible


class RunFolderError(ValueError):
    """The output folder cannot be used."""


def versions() -> dict[str, str]:
    """Versions of arsim, Brian2, NumPy and Python, for the run record."""
    return {
        "arsim": arsim.__version__,
        "brian2": b2.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }


def random_data(model: ModelSpec, n_samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random inputs uniform in [0, 1) and one-hot targets of random classes."""
    rng = seeded_rng(seed, SeedStream.DATA)
    inputs = rng.random((n_samples, model.input_size))
    targets = np.eye(model.output.size)[rng.integers(0, model.output.size, n_samples)]
    return inputs, targets


@dataclass
class RunResult:
    """What a run produced.

    Attributes
    ----------
    params : Params
        Weights after the run.
    traces : pandas.DataFrame
        Recorded traces (long format).
    metrics : pandas.DataFrame
        One row per minibatch.
    diverged : str or None
        The divergence message, if the simulation diverged.
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


def batch_metrics(
    model: ModelSpec,
    before: Params,
    after: Params,
    inputs: np.ndarray,
    targets: np.ndarray,
    learning_rate: float,
) -> dict[str, float]:
    """Loss of a minibatch and its AR weight change compared with the backprop step.

    ``angle_deg`` is the angle between ``−ΔW`` (all matrices and biases flattened into one
    vector) and the backprop gradient; ``update_rel_error`` compares ``ΔW`` with ``−η ∇L``.
    """
    grads = oracle.backprop(model, before, inputs, targets)
    loss = oracle.loss(model, before, inputs, targets)
    descent = [b - a for a, b in zip(after.W, before.W, strict=True)]  # −ΔW, matrix by matrix
    descent += [b - a for a, b in zip(after.b, before.b, strict=True) if a is not None]
    gradient = list(grads.W) + [g for g in grads.b if g is not None]
    row = {
        "loss": float(loss.mean()),
        "angle_deg": angle_degrees(descent, gradient),
        # |ΔW − (−η∇L)| = |−ΔW − η∇L|
        "update_rel_error": relative_error(descent, [learning_rate * g for g in gradient]),
    }
    for layer, gradient_w in enumerate(grads.W):
        if not gradient_w.size:  # a maxpool has no weights: no angle
            row[f"angle_deg_W{layer}"] = float("nan")
            continue
        row[f"angle_deg_W{layer}"] = angle_degrees(descent[layer], gradient_w)
    return row


def sample_metrics(
    model: ModelSpec, before: Params, signals: list, inputs: np.ndarray, targets: np.ndarray
) -> dict[str, np.ndarray]:
    """Each sample's AR weight update against the backprop gradient of that sample alone.

    ``signals`` are the factors of the updates the network made (``batch_signals``); the
    reference is backprop at the weights ``before`` the minibatch on the inputs the sweep
    saw. Returns per-sample arrays (see :func:`arsim.metrics.per_sample_comparison`).
    """
    grads = oracle.backprop(model, before, inputs, targets)
    fwd = oracle.forward(model, before, inputs)
    factors = oracle.update_factors(model, fwd, grads.activity)
    expected = [
        (delta, presynaptic, has_bias)
        for (delta, presynaptic), (_, _, has_bias) in zip(factors, signals, strict=True)
    ]
    return per_sample_comparison(signals, expected)


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

    Returns
    -------
    RunResult
        Final weights, traces and per-batch metrics; on divergence ``diverged`` holds the
        message and the traces hold what was recorded up to the end of that minibatch.
    """
    params = init_params(model) if params is None else params
    if progress and device == "cpp_standalone":
        tqdm.write("arsim: building the C++ program (once per network, about 15 s)")
    seed_noise(seed)
    network = build_network(model, protocol, params, mode, device, record)
    try:
        return _simulate(network, model, protocol, inputs, targets, params, progress)
    finally:
        if hasattr(network, "close"):
            network.close()


def _simulate(network, model, protocol, inputs, targets, params, progress) -> RunResult:
    stream_inputs, stream_targets = inputs, targets
    if protocol.dwell > 0:  # the stream shows the samples; the chunks count sample periods
        network.set_stream(inputs, targets)
        slots = protocol.stream_periods(len(inputs)) * protocol.batch_size
        inputs, targets = np.zeros((slots, inputs.shape[1])), np.zeros((slots, targets.shape[1]))
    n_samples, batch, chunk = len(inputs), protocol.batch_size, network.chunk_samples
    rows, diverged, frames = [], None, []
    wanted = None if protocol.record.samples is None else set(protocol.record.samples)
    bar = tqdm(
        total=n_samples, unit="sample", disable=not progress, desc=f"{model.name}/{protocol.name}"
    )
    current = params
    per_sample = []
    for start in range(0, n_samples, chunk):
        stop = min(start + chunk, n_samples)
        if not getattr(network, "traces_per_chunk", False):  # fixed once a program is built
            for monitor in network.monitors.values():
                wanted_here = wanted is None or bool(wanted.intersection(range(start, stop + 1)))
                monitor.active = wanted_here
        following = slice(stop, min(stop + chunk, n_samples))
        upcoming = (inputs[following], targets[following]) if stop < n_samples else (None, None)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # divergence: below
            network.run_chunk(
                inputs[start:stop],
                targets[start:stop],
                *upcoming,
                report=lambda done, first=start, count=stop - start: bar.update(
                    first + int(done * count) - bar.n
                ),
            )
        bar.update(stop - bar.n)
        if getattr(network, "traces_per_chunk", False):  # each program run starts afresh
            frames.append(monitors_to_frame(network, n_samples))
        found = network.first_divergence()
        if found is not None:
            layer, neuron, sample, t = found
            step = int(round(t / protocol.dt)) - 1  # t is the end of the offending step
            diverged = (
                f"simulation diverged: non-finite activity in layer {layer!r} (neuron {neuron}) at "
                f"t = {t:.6g} s, sample {sample} ({_phase_of(step, protocol)} phase); "
                f"recording kept up to sample {stop - 1}"
            )
            break
        signals = network.batch_signals or [None] * len(network.batch_params)
        for first, after, signal in zip(
            range(start, stop, batch), network.batch_params, signals, strict=True
        ):
            last = min(first + batch, n_samples)
            # compared with backprop on the samples the sweep saw (the stream's, if any)
            swept = swept_samples(protocol, first // batch, first, last, len(stream_inputs))
            x, y = stream_inputs[swept], stream_targets[swept]
            rate, _ = protocol.learning_rates(len(swept))
            rows.append(
                {"batch": first // batch, "samples": last, "t": last * protocol.sample_duration}
                | batch_metrics(model, current, after, x, y, rate)
            )
            if signal is not None:
                table = {"sample": swept, "batch": np.full(len(swept), first // batch)}
                table |= sample_metrics(model, current, signal, x, y)
                per_sample.append(pd.DataFrame(table))
            current = after
    bar.close()
    if getattr(network, "traces_per_chunk", False):
        traces = concat_traces(frames) if frames else monitors_to_frame(network, 0)
    else:
        traces = monitors_to_frame(network, n_samples)
    steps = None
    if protocol.tolerance > 0:
        steps = np.full(n_samples, protocol.phase_steps["relaxation"])
        for sample, taken in getattr(network, "relaxation_steps", {}).items():
            if sample < n_samples:
                steps[sample] = taken
    samples = pd.concat(per_sample, ignore_index=True) if per_sample else None
    return RunResult(network.get_params(), traces, pd.DataFrame(rows), diverged, steps, samples)


def swept_samples(
    protocol: ProtocolSpec, batch: int, first: int, last: int, n_samples: int
) -> np.ndarray:
    """Samples the sweep of minibatch ``batch`` (samples ``first:last`` of the run) saw.

    Those samples themselves, or with a stimulus stream the ones it showed at that sweep.
    """
    if protocol.dwell > 0:
        return protocol.stream_samples(batch * protocol.sample_steps, n_samples)
    return np.arange(first, last)


def _phase_of(step: int, protocol: ProtocolSpec) -> str:
    return PHASES[int(phase_of_step(np.array([step % protocol.sample_steps]), protocol)[0])]


def default_run_folder(
    model: ModelSpec, protocol: ProtocolSpec, seed: int, data: str | None = None
) -> Path:
    """``runs/<model>__<protocol>[__<data>]__seed<seed>[-N]``, the first that does not exist."""
    parts = [model.name, protocol.name] + ([data] if data else []) + [f"seed{seed}"]
    base = Path("runs") / "__".join(parts)
    candidate, number = base, 1
    while candidate.exists():
        number += 1
        candidate = base.with_name(f"{base.name}-{number}")
    return candidate


def prepare_run_folder(out: Path) -> Path:
    """Check that ``out`` can be written and return the temporary folder to write into."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RunFolderError(f"{out}: output folder exists and is not empty; choose another --out")
    parent = out.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    if not os.access(parent, os.W_OK):
        raise RunFolderError(f"{parent}: cannot write the run folder here")
    partial = parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    (partial / "weights").mkdir(parents=True)
    return partial


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

    Everything is validated before the folder is created. The folder is renamed to ``out``
    when the run completes or diverges; the result says which.
    """
    check_compatible(model, protocol)
    check_execution(protocol, mode, device, model)
    if n_samples < 1:
        raise ValueError(f"--samples: expected a positive number of samples, got {n_samples}")
    target = resolve_codegen_target(target, n_samples)
    set_codegen_target(target)
    seed = model.seed if seed is None else seed
    partial = prepare_run_folder(out)
    params = init_params(model, seed)
    inputs, targets = random_data(model, n_samples, seed)
    config = {
        "model": model.to_dict(),
        "protocol": protocol.to_dict(),
        "derived": {
            "eta_x": protocol.eta_x,
            "steps_per_sample": protocol.sample_steps,
            "phase_steps": protocol.phase_steps,
            "plasticity_step": protocol.plasticity_step,
            "relaxation_windows": {  # steps of the sample period, per hidden layer
                layer.name: list(protocol.window_steps(layer.name)) for layer in model.layers[1:-1]
            },
            "stimulus_dwell_steps": protocol.dwell_steps,
        },
        "seed": seed,
        "samples": n_samples,
        "data": "random: inputs uniform in [0, 1), one-hot targets of random classes",
        "codegen_target": target,
        "mode": mode,
        "device": device,
        "versions": versions(),
        "command": sys.argv,
    }
    (partial / "config.json").write_text(json.dumps(config, indent=2))
    np.savez(partial / "weights" / "initial.npz", **params.to_arrays())
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
    )
    np.savez(partial / "weights" / "final.npz", **result.params.to_arrays())
    result.traces.to_parquet(partial / "traces.parquet", index=False)
    result.metrics.to_csv(partial / "metrics.csv", index=False)
    if result.samples is not None:
        result.samples.to_csv(partial / "samples.csv", index=False)
    if result.relaxation_steps is not None:
        steps = result.relaxation_steps
        table = {"sample": np.arange(len(steps)), "steps": steps, "seconds": steps * protocol.dt}
        pd.DataFrame(table).to_csv(partial / "relaxation.csv", index=False)
    status = {"status": "diverged" if result.diverged else "completed", "message": result.diverged}
    (partial / "status.json").write_text(json.dumps(status, indent=2))
    if out.exists():
        out.rmdir()
    partial.rename(out)
    return out, result

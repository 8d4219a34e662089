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

import sys
from dataclasses import dataclass
from pathlib import Path

import brian2 as b2
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from arsim import oracle
from arsim.dense import DenseNetwork
from arsim.loop import ChunkLoop, presentation_slots
from arsim.metrics import sample_metrics
from arsim.network import NOISE_STREAM, SynapsesNetwork, seed_noise
from arsim.oracle import Params
from arsim.runfolder import RunFolderError as RunFolderError  # re-exported for the CLI
from arsim.runfolder import default_run_folder as default_run_folder  # re-exported for the CLI
from arsim.runfolder import prepare_run_folder, publish, save_npz, versions, write_json
from arsim.spec import CODEGEN_TARGETS, ModelSpec, ProtocolSpec, check_compatible
from arsim.standalone import StandaloneSynapsesNetwork

COMPILE_PAYS_OFF = 10_000
"""Sample presentations from which ``target='auto'`` compiles the neurons' code with Cython.

A network's first compilation takes about 30 s on 2 cores (then it is cached in
``~/.cython/brian_extensions``); the compiled state updaters make a dense-mode step about a
quarter faster than NumPy's, which repays a cold compilation over about 100,000 samples and a
cached one at once. Shorter jobs start at once with NumPy.
"""
MODES = {"dense": DenseNetwork, "synapses": SynapsesNetwork}
"""Execution modes: Brian2 neurons with BLAS connections, or Brian2 ``Synapses``."""
DEFAULT_MODE = "dense"
DEVICES = ("runtime", "cpp_standalone")


def random_data(model: ModelSpec, n_samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random inputs uniform in [0, 1) and one-hot targets of random classes."""
    rng = np.random.default_rng([seed, 2])
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


def resolve_codegen_target(target: str, presentations: int) -> str:
    """The code generation target ``target`` stands for, in a job of ``presentations`` samples.

    ``'auto'`` is ``'cython'`` for jobs of at least :data:`COMPILE_PAYS_OFF` sample
    presentations when Cython can compile here, else ``'numpy'``; the others stand for
    themselves.
    """
    if target not in CODEGEN_TARGETS:
        raise ValueError(f"codegen target: expected one of {CODEGEN_TARGETS}, got {target!r}")
    if target != "auto":
        return target
    if presentations < COMPILE_PAYS_OFF:
        return "numpy"
    from brian2.codegen.runtime.cython_rt import CythonCodeObject

    return "cython" if CythonCodeObject.is_available() else "numpy"


def set_codegen_target(target: str) -> None:
    """Choose Brian2's code generation target ('cython' compiles, 'numpy' does not)."""
    if target not in CODEGEN_TARGETS[1:]:
        raise ValueError(f"codegen target: expected 'cython' or 'numpy', got {target!r}")
    b2.prefs.codegen.target = target
    b2.BrianLogger.log_level_warn()
    # arsim reports divergence itself, naming layer, sample and time
    b2.BrianLogger.suppress_name("invalid_values")


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
    params = oracle.init_params(model) if params is None else params
    if progress and device == "cpp_standalone":
        tqdm.write("arsim: building the C++ program (once per network, about 15 s)")
    seed_noise(seed, NOISE_STREAM)
    network = build_network(model, protocol, params, mode, device, record)
    try:
        return _simulate(network, model, protocol, inputs, targets, params, progress)
    finally:
        if hasattr(network, "close"):
            network.close()


class ExecutionError(ValueError):
    """A mode or device that cannot run the protocol (one line)."""


def check_execution(protocol: ProtocolSpec, mode: str, device: str, model=None) -> None:
    """Raise :class:`ExecutionError` unless ``mode`` on ``device`` can run ``protocol``.

    With ``model``, also what depends on it (conv and maxpool connections: dense mode only).
    """
    if mode not in MODES:
        raise ExecutionError(f"--mode: expected one of {', '.join(MODES)}, got {mode!r}")
    if device not in DEVICES:
        raise ExecutionError(f"--device: expected one of {', '.join(DEVICES)}, got {device!r}")
    if device == "cpp_standalone" and mode != "synapses":
        raise ExecutionError(
            "--device cpp_standalone runs the synapses mode only (--mode synapses)"
        )
    if mode != "dense" and any(delay > 0 for _, delay in protocol.feedback_delay):
        raise ExecutionError(
            f"{protocol.source}: feedback_delay: only the dense mode delays the top-down signal "
            "so far; use --mode dense"
        )
    if mode != "dense" and protocol.tolerance > 0:
        raise ExecutionError(
            f"{protocol.source}: phases.tolerance: only the dense mode relaxes until converged "
            "so far; use --mode dense"
        )
    if mode != "dense" and protocol.dwell > 0:
        raise ExecutionError(
            f"{protocol.source}: stimulus.dwell: only the dense mode shows a stimulus stream "
            "so far; use --mode dense"
        )
    if mode != "dense" and protocol.plasticity_step != protocol.sample_steps:
        raise ExecutionError(
            f"{protocol.source}: oscillation.plasticity: only the dense mode changes the weights "
            "before the cycle's end so far; use --mode dense or plasticity = '360 deg'"
        )
    if model is not None and mode != "dense" and not model.all_dense:
        c = next(c for c in model.connections if c.operation != "dense")
        raise ExecutionError(
            f"{model.source}: connection {c.source} -> {c.target}: only the dense mode runs "
            f"{c.operation} connections so far; use --mode dense"
        )
    if device == "cpp_standalone" and protocol.noise > 0:
        raise ExecutionError(
            f"{protocol.source}: noise: cpp_standalone would draw the same noise in every "
            "minibatch; use --device runtime"
        )


def build_network(model, protocol, params, mode=DEFAULT_MODE, device="runtime", record=True):
    """The network of an execution mode and Brian2 device (see :data:`MODES`)."""
    check_execution(protocol, mode, device, model)
    if device == "cpp_standalone":
        return StandaloneSynapsesNetwork(model, protocol, params, record=record)
    return MODES[mode](model, protocol, params, record=record)


def _simulate(network, model, protocol, inputs, targets, params, progress) -> RunResult:
    bar = tqdm(
        total=presentation_slots(protocol, len(inputs)),
        unit="sample",
        disable=not progress,
        desc=f"{model.name}/{protocol.name}",
    )
    loop = ChunkLoop(network, model, protocol, inputs, targets, params, bar=bar)
    rows, per_sample = [], []
    for batch in loop:
        t = batch.last * protocol.sample_duration
        rows.append({"batch": batch.index, "samples": batch.last, "t": t} | batch.metrics)
        if batch.signals is not None:
            table = {"sample": batch.swept, "batch": np.full(len(batch.swept), batch.index)}
            table |= sample_metrics(model, batch.before, batch.signals, batch.inputs, batch.targets)
            per_sample.append(pd.DataFrame(table))
    bar.close()
    steps = None
    if protocol.tolerance > 0:
        steps = np.full(loop.slots, protocol.phase_steps["relaxation"])
        for sample, taken in getattr(network, "relaxation_steps", {}).items():
            if sample < loop.slots:
                steps[sample] = taken
    samples = pd.concat(per_sample, ignore_index=True) if per_sample else None
    diverged = None if loop.divergence is None else loop.divergence.message()
    metrics = pd.DataFrame(rows)
    return RunResult(network.get_params(), loop.traces(), metrics, diverged, steps, samples)


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
    params = oracle.init_params(model, seed)
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
    write_json(partial / "config.json", config)
    save_npz(partial / "weights" / "initial.npz", **params.to_arrays())
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
    save_npz(partial / "weights" / "final.npz", **result.params.to_arrays())
    result.traces.to_parquet(partial / "traces.parquet", index=False)
    result.metrics.to_csv(partial / "metrics.csv", index=False)
    if result.samples is not None:
        result.samples.to_csv(partial / "samples.csv", index=False)
    if result.relaxation_steps is not None:
        steps = result.relaxation_steps
        table = {"sample": np.arange(len(steps)), "steps": steps, "seconds": steps * protocol.dt}
        pd.DataFrame(table).to_csv(partial / "relaxation.csv", index=False)
    status = {"status": "diverged" if result.diverged else "completed", "message": result.diverged}
    write_json(partial / "status.json", status)
    return publish(partial), result

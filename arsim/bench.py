"""``arsim bench``: samples per second of every execution mode on the paper network.

Each mode runs in its own process (so that its peak memory is its own and Brian2's global
device state cannot leak), together with the NumPy AR reference (same mathematics, float64)
timed in that same process: the ratio of the two is what the benchmark reports, because
absolute speeds on a shared machine are noisy. BLAS threads are pinned and reported.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from arsim import __version__, oracle
from arsim.activations import ACTIVATIONS, output_gradient
from arsim.modes import build_network, set_codegen_target
from arsim.spec import RecordSpec, load_model, load_protocol
from arsim.spec.forward import FeedforwardSpec
from arsim.spec.schedule import Schedule

PAPER_MODEL = Path(__file__).resolve().parents[1] / "models" / "paper-mlp.toml"
PAPER_PROTOCOL = Path(__file__).resolve().parents[1] / "protocols" / "paper.toml"

REFERENCE = "numpy-reference"
"""The NumPy AR reference (:func:`numpy_reference`), measured beside every mode."""
MODES = {
    # name: (execution mode, device, codegen target, samples timed)
    "dense": ("dense", "runtime", "cython", 2048),  # what a long run uses (target 'auto')
    "dense-numpy": ("dense", "runtime", "numpy", 2048),  # what a short one uses
    # leaky forward dynamics: τ_f = 2 ms over a 10 ms feedforward phase (LEAKY_FORWARD)
    "dense-leaky": ("dense", "runtime", "cython", 2048),
    "synapses-standalone": ("synapses", "cpp_standalone", None, 192),
    "synapses-cython": ("synapses", "runtime", "cython", 128),
    "synapses-numpy": ("synapses", "runtime", "numpy", 64),
}
"""Benchmarked configurations of the Brian2 network."""
LEAKY_FORWARD = FeedforwardSpec(kind="leaky", tau=0.002)
"""The forward dynamics of the ``dense-leaky`` row, over a feedforward phase of 10 ms."""


def numpy_reference(model, protocol, params, inputs, targets) -> list[np.ndarray]:
    """AR in plain NumPy, as lean as it gets: the same mathematics as every mode.

    Per minibatch: feedforward sweep, ``steps`` parallel Euler steps of every hidden layer,
    then ``W -= η Σ δ x̂ᵀ`` (exact AR: feedback Wᵀ, f' in the relaxation). Returns the
    final weights.
    """
    weights = [w.copy() for w in params.W]
    schedule = Schedule(None, protocol)
    steps, eta_x = schedule.phase_steps["relaxation"], schedule.eta_x
    rate = protocol.learning_rate
    batch = protocol.batch_size
    for start in range(0, len(inputs), batch):
        x0, target = inputs[start : start + batch], targets[start : start + batch]
        xhat, fps = [x0], []
        for layer, weight in enumerate(weights):
            a = xhat[-1] @ weight.T
            activation = ACTIVATIONS[model.layers[layer + 1].activation]
            xhat.append(activation.f(a))
            fps.append(activation.fprime(a))
        x = [None] + [h.copy() for h in xhat[1:-1]]
        x.append(output_gradient(model.loss, xhat[-1], target, model.loss_scale))
        deltas = [None] + [x[k] * fps[k - 1] for k in range(1, len(x))]
        for _ in range(steps):
            feedback = [deltas[k + 1] @ weights[k] for k in range(1, len(weights))]
            for k in range(1, len(weights)):
                x[k] += eta_x * (feedback[k - 1] - x[k])
                np.multiply(x[k], fps[k - 1], out=deltas[k])
        for layer, weight in enumerate(weights):
            weight -= rate * (deltas[layer + 1].T @ xhat[layer])
    return weights


def _time_reference(model, protocol, params, inputs, targets) -> float:
    numpy_reference(model, protocol, params, inputs[:128], targets[:128])  # warm up
    start = time.perf_counter()
    numpy_reference(model, protocol, params, inputs, targets)
    return len(inputs) / (time.perf_counter() - start)


def measure(name: str, threads: int) -> dict:
    """Time one configuration and the NumPy reference in this process (see module docstring)."""
    model = load_model(PAPER_MODEL)
    protocol = replace(load_protocol(PAPER_PROTOCOL), record=RecordSpec(samples=()))
    rng = np.random.default_rng(0)
    params = oracle.init_params(model, seed=0)
    reference_inputs = rng.random((1024, model.input.size))
    reference_targets = np.eye(10)[rng.integers(0, 10, 1024)]
    with threadpool_limits(threads):
        reference = _time_reference(model, protocol, params, reference_inputs, reference_targets)
        row = {"mode": name, "reference_samples_per_s": reference}
        if name == REFERENCE:
            row.update(samples_per_s=reference, build_s=0.0, compile_s=0.0, samples=1024)
        else:
            mode, device, target, samples = MODES[name]
            if name == "dense-leaky":  # the reference stays the instant sweep's AR
                protocol = replace(protocol, feedforward=0.010, forward=LEAKY_FORWARD)
            set_codegen_target(target or "numpy")
            inputs = rng.random((samples + 64, model.input.size))
            targets = np.eye(10)[rng.integers(0, 10, samples + 64)]
            start = time.perf_counter()
            network = build_network(model, protocol, params, mode, device, record=False)
            build = time.perf_counter() - start
            row["openmp_threads"] = getattr(network, "threads", None)
            try:
                first = network.chunk_samples
                warm = min(first, 64)
                start = time.perf_counter()
                network.run_chunk(inputs[:warm], targets[:warm])  # compiles (cython)
                warm_time = time.perf_counter() - start
                start = time.perf_counter()
                for begin in range(warm, warm + samples, network.chunk_samples):
                    stop = min(begin + network.chunk_samples, warm + samples)
                    network.run_chunk(inputs[begin:stop], targets[begin:stop])
                elapsed = time.perf_counter() - start
            finally:
                if hasattr(network, "close"):
                    network.close()
            speed = samples / elapsed
            row.update(
                samples_per_s=speed,
                build_s=build,
                compile_s=max(0.0, warm_time - warm / speed),
                samples=samples,
            )
        # re-measure the reference after the mode: the machine may have changed its pace
        again = _time_reference(model, protocol, params, reference_inputs, reference_targets)
        row["reference_samples_per_s"] = (row["reference_samples_per_s"] + again) / 2
        if name == REFERENCE:
            row["samples_per_s"] = row["reference_samples_per_s"]
        blas = [
            {k: info.get(k) for k in ("internal_api", "num_threads", "version", "architecture")}
            for info in threadpool_info()
        ]
    row["ratio_to_numpy"] = row["samples_per_s"] / row["reference_samples_per_s"]
    row["peak_memory_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    row["blas"] = blas
    return row


def machine(threads: int) -> dict:
    """Facts of this machine that a benchmark result depends on."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "blas_threads": threads,
        "env": {
            k: os.environ.get(k)
            for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_CORETYPE")
        },
    }


def run_benchmark(
    modes: list[str], threads: int = 2, out: Path | None = None, echo=print
) -> list[dict]:
    """Measure ``modes`` (each in a subprocess) and print the table; optionally write JSON."""
    environment = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    facts = machine(threads)
    rows = []
    echo(
        f"arsim bench: paper network 784-300-300-100-10, 100 relaxation steps, batch 64, "
        f"{threads} BLAS threads"
    )
    echo(
        f"{'mode':<22}{'samples/s':>11}{'ratio':>8}{'numpy ref':>11}{'build s':>9}"
        f"{'compile s':>11}{'peak MiB':>10}"
    )
    for name in modes:
        done = subprocess.run(
            [sys.executable, "-m", "arsim.bench", name, str(threads)],
            capture_output=True,
            text=True,
            env=environment,
        )
        if done.returncode != 0:
            message = (done.stderr.strip().splitlines() or ["failed"])[-1]
            rows.append({"mode": name, "error": message})
            echo(f"{name:<22} failed: {message}")
            continue
        row = json.loads(done.stdout.strip().splitlines()[-1])
        row.update(machine=facts, arsim=__version__)
        rows.append(row)
        echo(
            f"{name:<22}{row['samples_per_s']:>11.1f}{row['ratio_to_numpy']:>8.3f}"
            f"{row['reference_samples_per_s']:>11.1f}{row['build_s']:>9.2f}{row['compile_s']:>11.2f}"
            f"{row['peak_memory_mib']:>10.0f}"
        )
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(rows, indent=2))
        echo(f"wrote {out}")
    return rows


if __name__ == "__main__":  # one measurement, as a child of run_benchmark
    print(json.dumps(measure(sys.argv[1], int(sys.argv[2]))))

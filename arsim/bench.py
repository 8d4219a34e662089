"""``arsim bench``: samples per second of every execution mode on the paper network.

Each mode runs in its own process (so that its peak memory is its own and Brian2's global
device state cannot leak), together with the NumPy AR reference (same mathematics, float64)
timed in that same process: the ratio of the two is what the benchmark reports, because
absolute speeds on a shared machine are noisy. The BLAS threads follow the thread policy
(:mod:`arsim.threads`, ``--threads``) and are reported.

Options (see ``docs/speed.md``): ``contended`` measures every mode a second time while a
CPU-bound process occupies one core (``contended_ratio``); ``batch`` sets the minibatch size
of the modes and the reference; the ``epoch`` rows time one Fashion-MNIST training epoch with
the default training options against the reference's time for as many samples, against the
same epoch without its bookkeeping (``bookkeeping_ratio``) and the bare epoch against the
relaxation's matrix products alone (``ceiling_ratio``).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info

from arsim import __version__, oracle
from arsim import threads as thread_policy
from arsim.activations import ACTIVATIONS, output_gradient
from arsim.datasets import load_dataset
from arsim.modes import build_network, session, set_codegen_target
from arsim.network import FLOAT_DTYPES
from arsim.spec import RecordSpec, load_model, load_protocol
from arsim.spec.forward import FeedforwardSpec
from arsim.spec.schedule import Schedule
from arsim.train import train

PAPER_MODEL = Path(__file__).resolve().parents[1] / "models" / "paper-mlp.toml"
PAPER_PROTOCOL = Path(__file__).resolve().parents[1] / "protocols" / "paper.toml"
PAPER_SPIKING = PAPER_PROTOCOL.with_name("paper-spiking.toml")

REFERENCE = "numpy-reference"
"""The NumPy AR reference (:func:`numpy_reference`), measured beside every mode."""
REFERENCE_SINGLE = "numpy-reference-single"
"""The same reference in float32 (its ratio is still to the float64 reference)."""
MODES = {
    # name: (execution mode, device, codegen target, samples timed at batch 64)
    "dense": ("dense", "runtime", "cython", 2048),  # what a long run uses (target 'auto')
    "dense-numpy": ("dense", "runtime", "numpy", 2048),  # what a short one uses
    "dense-single": ("dense", "runtime", "cython", 2048),  # precision = "single"
    # leaky forward dynamics: τ_f = 2 ms over a 10 ms feedforward phase (LEAKY_FORWARD)
    "dense-leaky": ("dense", "runtime", "cython", 2048),
    # spiking feedback: protocols/paper-spiking.toml (integrate-and-fire, 300 Hz, τ_s 5 ms)
    "dense-spiking": ("dense", "runtime", "cython", 2048),
    "dense-spiking-poisson": ("dense", "runtime", "cython", 2048),  # the same, Poisson
    "synapses-standalone": ("synapses", "cpp_standalone", None, 192),
    "synapses-cython": ("synapses", "runtime", "cython", 128),
    "synapses-numpy": ("synapses", "runtime", "numpy", 64),
}
"""Benchmarked configurations of the Brian2 network."""
SINGLE = (REFERENCE_SINGLE, "dense-single", "epoch-single")
"""Rows that run in single precision (``precision = "single"``)."""
EPOCHS = ("epoch-single", "epoch")
"""Rows that time one training epoch on Fashion-MNIST (single and double precision)."""
ROWS = (REFERENCE, REFERENCE_SINGLE, *MODES, *EPOCHS)
"""Every row ``arsim bench`` can measure."""
DEFAULT_ROWS = tuple(name for name in ROWS if name != "synapses-numpy" and name not in EPOCHS)
"""What ``arsim bench`` measures without ``--modes``."""
DEFAULT_BATCH = 64
"""The paper protocol's minibatch size."""
REFERENCE_SAMPLES = 1024
"""Samples the reference is timed on (``rounds + 1`` times per row)."""
ROUNDS = 3
"""Turns the row and the reference take (the median round's ratio is reported)."""
LEAKY_FORWARD = FeedforwardSpec(kind="leaky", tau=0.002)
"""The forward dynamics of the ``dense-leaky`` row, over a feedforward phase of 10 ms."""


def numpy_reference(
    model, protocol, params, inputs, targets, dtype: type = np.float64
) -> list[np.ndarray]:
    """AR in plain NumPy, as lean as it gets: the same mathematics as every mode.

    Per minibatch: feedforward sweep, ``steps`` parallel Euler steps of every hidden layer,
    then ``W -= η Σ δ x̂ᵀ`` (exact AR: feedback Wᵀ, f' in the relaxation). Every array is
    ``dtype`` (float64, or float32 for the single-precision reference). Returns the final
    weights.
    """
    weights = [w.astype(dtype) for w in params.W]
    inputs, targets = inputs.astype(dtype), targets.astype(dtype)
    schedule = Schedule(None, protocol)
    steps, eta_x = schedule.phase_steps["relaxation"], dtype(schedule.eta_x)
    rate = dtype(protocol.learning_rate)
    batch = protocol.batch_size
    for start in range(0, len(inputs), batch):
        x0, target = inputs[start : start + batch], targets[start : start + batch]
        xhat, fps = [x0], []
        for layer, weight in enumerate(weights):
            a = xhat[-1] @ weight.T
            activation = ACTIVATIONS[model.layers[layer + 1].activation]
            xhat.append(activation.f(a))
            fps.append(activation.fprime(a).astype(dtype, copy=False))  # relu's f' is float64
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


def _time_reference(model, protocol, params, inputs, targets, dtype=np.float64) -> float:
    """Samples per second of :func:`numpy_reference` on ``inputs`` (after a warm-up)."""
    numpy_reference(model, protocol, params, inputs[:128], targets[:128], dtype)
    start = time.perf_counter()
    numpy_reference(model, protocol, params, inputs, targets, dtype)
    return len(inputs) / (time.perf_counter() - start)


def timed_samples(name: str, batch: int) -> int:
    """Samples a mode is timed on at minibatch size ``batch`` (fewer for small minibatches)."""
    samples = MODES[name][3]
    return max(samples * min(batch, DEFAULT_BATCH) // DEFAULT_BATCH, 4 * batch, 64)


class _ModeTimer:
    """The network of row ``name``, built and warmed up; :meth:`time` times its samples.

    Each call of :meth:`time` simulates ``samples`` fresh samples (in chunks of the network's
    :attr:`~arsim.network.ARNetwork.chunk_samples`) and returns its samples per second.
    """

    def __init__(self, name: str, model, protocol, params, rng):
        mode, device, target, _ = MODES[name]
        self.samples = timed_samples(name, protocol.batch_size)
        set_codegen_target(target or "numpy")
        self.rng, self.model = rng, model
        self._job = ExitStack()  # the session and the network, left by close()
        self._job.enter_context(session(protocol, mode, device))
        start = time.perf_counter()
        network = build_network(model, protocol, params, mode, device, record=False)
        self.network = self._job.enter_context(network)
        self.build_s = time.perf_counter() - start
        inputs, targets = self._samples(min(self.network.chunk_samples, 64))
        start = time.perf_counter()
        self._check(self.network.run_chunk(inputs, targets), len(inputs))  # compiles (cython)
        self.warm_s, self.warm_samples = time.perf_counter() - start, len(inputs)

    def _samples(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        inputs = self.rng.random((count, self.model.input.size))
        return inputs, np.eye(10)[self.rng.integers(0, 10, count)]

    def time(self) -> float:
        """Samples per second of ``samples`` more samples."""
        inputs, targets = self._samples(self.samples)
        chunk = self.network.chunk_samples
        start = time.perf_counter()
        for begin in range(0, self.samples, chunk):
            stop = begin + chunk
            result = self.network.run_chunk(inputs[begin:stop], targets[begin:stop])
            self._check(result, len(inputs[begin:stop]))  # a comparison: nothing to time
        return self.samples / (time.perf_counter() - start)

    def _check(self, result, samples: int) -> None:
        """Raise unless ``result`` ran ``samples`` samples to their end, one update a minibatch."""
        expected = -(-samples // self.network.protocol.batch_size)
        if not result.complete or len(result.batch_params) != expected:
            raise RuntimeError(
                f"a timed chunk of {samples} samples made {len(result.batch_params)} updates "
                f"(expected {expected}, complete: {result.complete})"
            )

    def close(self) -> None:
        """Close the row's network, then leave its Brian2 session (preferences, device restored)."""
        self._job.close()


def _paper_setup(name: str, batch: int):
    """The paper network and protocol as row ``name`` runs them at minibatch size ``batch``."""
    model = load_model(PAPER_MODEL)
    protocol = replace(
        load_protocol(PAPER_PROTOCOL), record=RecordSpec(samples=()), batch_size=batch
    )
    if name in SINGLE:
        protocol = replace(protocol, precision="single")
    if name.startswith("dense-spiking"):
        spikes = load_protocol(PAPER_SPIKING).spikes
        if name.endswith("poisson"):
            spikes = replace(spikes, encoder="poisson")
        protocol = replace(protocol, spikes=spikes)
    if name == "dense-leaky":
        protocol = replace(protocol, feedforward=0.010, forward=LEAKY_FORWARD)
    return model, protocol


def measure(
    name: str, threads: int | None = None, batch: int = DEFAULT_BATCH, rounds: int = ROUNDS
) -> dict:
    """Time one configuration and the NumPy reference in this process (see module docstring).

    The reference is float64 with the instant sweep whatever the row. The row and the
    reference take turns, ``rounds`` times: reference, row, reference, …, row, reference. Each
    round's ratio divides the row's speed by the mean of the reference's speeds just before
    and after it, and the round with the median ratio is reported (``round_ratios`` lists all),
    because the pace of a shared machine changes from one second to the next.
    """
    used = thread_policy.apply(threads)
    model, protocol = _paper_setup(name, batch)
    reference_protocol = _paper_setup(REFERENCE, batch)[1]  # float64, the instant sweep
    rng = np.random.default_rng(0)
    params = oracle.init_params(model, seed=0)
    reference_inputs = rng.random((REFERENCE_SAMPLES, model.input.size))
    reference_targets = np.eye(10)[rng.integers(0, 10, REFERENCE_SAMPLES)]
    timing = (model, reference_protocol, params, reference_inputs, reference_targets)
    row = {"mode": name, "batch_size": batch, "precision": protocol.precision}
    timer = None
    if name == REFERENCE:
        row.update(build_s=0.0, compile_s=0.0, samples=REFERENCE_SAMPLES)
    elif name == REFERENCE_SINGLE:
        dtype = FLOAT_DTYPES[protocol.precision]
        row.update(build_s=0.0, compile_s=0.0, samples=REFERENCE_SAMPLES)
    else:
        timer = _ModeTimer(name, model, protocol, params, rng)
        row.update(build_s=timer.build_s, samples=timer.samples)
        row["openmp_threads"] = getattr(timer.network, "threads", None)
    try:
        references, speeds = [_time_reference(*timing)], []
        for _ in range(rounds):
            if name == REFERENCE:
                speeds.append(references[-1])
            elif name == REFERENCE_SINGLE:
                speeds.append(_time_reference(*timing, dtype))
            else:
                speeds.append(timer.time())
            references.append(_time_reference(*timing))
    finally:
        if timer is not None:
            timer.close()
    pairs = zip(references[:-1], references[1:], strict=True)
    around = [(before + after) / 2 for before, after in pairs]
    ratios = [speed / reference for speed, reference in zip(speeds, around, strict=True)]
    median = sorted(range(rounds), key=ratios.__getitem__)[rounds // 2]
    row["samples_per_s"], row["reference_samples_per_s"] = speeds[median], around[median]
    if name == REFERENCE:
        row["samples_per_s"] = row["reference_samples_per_s"]
    row["ratio_to_numpy"] = row["samples_per_s"] / row["reference_samples_per_s"]
    row["round_ratios"] = [1.0] * rounds if name == REFERENCE else ratios
    if timer is not None:
        row["compile_s"] = max(0.0, timer.warm_s - timer.warm_samples / row["samples_per_s"])
    row["peak_memory_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    row["threads"] = used
    row["blas"] = _blas()
    return row


def relaxation_products_s(model, protocol, params, steps: int = 400, repeats: int = 5) -> float:
    """Seconds of the relaxation's matrix products for one minibatch step (the ceiling's unit).

    For every connection whose source layer relaxes, the top-down product
    ``np.matmul(δ_target, W, out=fb_source)`` of a minibatch of ``protocol.batch_size``
    samples, in the protocol's precision, with the BLAS threads this process has: nothing but
    the products, in a loop of ``steps`` steps; the median of ``repeats`` loops, divided by
    ``steps``.
    """
    dtype = FLOAT_DTYPES[protocol.precision]
    batch, rng = protocol.batch_size, np.random.default_rng(0)
    sizes = {layer.name: layer.size for layer in model.layers}
    products = [
        (
            rng.standard_normal((batch, sizes[connection.target])).astype(dtype),
            weight.astype(dtype),
            np.empty((batch, sizes[connection.source]), dtype),
        )
        for connection, weight in zip(model.connections, params.W, strict=True)
        if model.relaxes(connection.source)
    ]
    loops = []
    for _ in range(repeats + 1):  # the first loop warms up
        start = time.perf_counter()
        for _ in range(steps):
            for delta, weight, feedback in products:
                np.matmul(delta, weight, out=feedback)
        loops.append((time.perf_counter() - start) / steps)
    return float(np.median(loops[1:]))


BARE_OPTIONS = {"baseline": False, "metrics_every": 100_000}
"""Training options of the bare epoch: no baseline, no ``batch`` rows (the epoch row only)."""


def _time_training(model, protocol, samples: int | None, **options) -> tuple[float, dict]:
    """Seconds of one training epoch on Fashion-MNIST (data loading included) and its status."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        dataset = load_dataset("fashion-mnist", train_limit=samples)
        _, status = train(
            model, protocol, dataset, Path(folder) / "run", 1, train_samples=samples,
            progress=False, **options,
        )  # fmt: skip
    return time.perf_counter() - start, status


def measure_epoch(name: str, threads: int | None = None, samples: int | None = None):
    """Time one training epoch on Fashion-MNIST, the bare epoch, the ceiling and the reference.

    The epoch is ``arsim run`` with ``--data fashion-mnist`` and the default training
    options (data loading, the backprop baseline, metrics and test evaluation included) in
    the row's precision; the bare epoch is the same with ``--baseline none --metrics-every
    100000`` (:data:`BARE_OPTIONS`), and ``bookkeeping_ratio`` is the one's time over the
    other's. The ceiling is the relaxation's matrix products alone
    (:func:`relaxation_products_s`) times the relaxation steps of the epoch's minibatches;
    ``ceiling_ratio`` is the bare epoch's time over it. The reference is the float64
    :func:`numpy_reference` on the same training images, timed in the same process: its
    first half before the epochs and its second half (from the first half's weights) after
    them, so that both see the machine at the same pace on average. ``samples`` limits the
    training set (the whole 60,000 by default).
    """
    used = thread_policy.apply(threads)
    model = load_model(PAPER_MODEL)
    protocol = load_protocol(PAPER_PROTOCOL)
    protocol = replace(protocol, precision="single" if name in SINGLE else "double")
    reference_protocol = replace(protocol, precision="double")
    dataset = load_dataset("fashion-mnist", train_limit=samples)
    images, targets = dataset.train_images, dataset.one_hot(dataset.train_labels)
    half = len(images) // 2 // protocol.batch_size * protocol.batch_size
    params = oracle.init_params(model)
    start = time.perf_counter()
    weights = numpy_reference(model, reference_protocol, params, images[:half], targets[:half])
    reference = time.perf_counter() - start
    step_s = relaxation_products_s(model, protocol, params)
    epoch, status = _time_training(model, protocol, samples)
    bare, _ = _time_training(model, protocol, samples, **BARE_OPTIONS)
    params = replace(params, W=weights)
    start = time.perf_counter()
    numpy_reference(model, reference_protocol, params, images[half:], targets[half:])
    reference += time.perf_counter() - start
    steps = Schedule(None, protocol).phase_steps["relaxation"]
    ceiling = len(images) / protocol.batch_size * steps * step_s
    return {
        "mode": name,
        "batch_size": protocol.batch_size,
        "precision": protocol.precision,
        "samples": len(images),
        "epoch_s": epoch,
        "bare_epoch_s": bare,
        "bookkeeping_ratio": epoch / bare,
        "products_step_s": step_s,
        "ceiling_s": ceiling,
        "ceiling_ratio": bare / ceiling,
        "reference_s": reference,
        "epoch_ratio": epoch / reference,
        "samples_per_s": len(images) / epoch,
        "reference_samples_per_s": len(images) / reference,
        "ratio_to_numpy": reference / epoch,
        "ar_test_acc": status.get("ar_test_acc"),
        "peak_memory_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "threads": used,
        "blas": _blas(),
    }


def _blas() -> list[dict]:
    keys = ("internal_api", "num_threads", "version", "architecture")
    return [{k: info.get(k) for k in keys} for info in threadpool_info()]


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


def start_competitor() -> subprocess.Popen:
    """A CPU-bound process (a busy Python loop) pinned to the last core this process may use."""
    core = max(os.sched_getaffinity(0))
    return subprocess.Popen(
        [sys.executable, "-c", "while True: pass"],
        stdin=subprocess.DEVNULL,
        preexec_fn=lambda: os.sched_setaffinity(0, {core}),
    )


def _measure_in_child(request: dict, environment: dict) -> dict:
    """Run :func:`measure` (or :func:`measure_epoch`) in a fresh process; its row or error."""
    done = subprocess.run(
        [sys.executable, "-m", "arsim.bench", json.dumps(request)],
        capture_output=True,
        text=True,
        env=environment,
    )
    if done.returncode != 0:
        return {
            "mode": request["name"],
            "error": (done.stderr.strip().splitlines() or ["failed"])[-1],
        }
    return json.loads(done.stdout.strip().splitlines()[-1])


def _contended(request: dict, environment: dict, row: dict) -> dict:
    """``row`` with the same measurement repeated while a competitor occupies one core."""
    competitor = start_competitor()
    try:
        busy = _measure_in_child(request, environment)
    finally:
        competitor.kill()
        competitor.wait()
    if "error" in busy:
        return row | {"contended_error": busy["error"]}
    return row | {
        "contended_samples_per_s": busy["samples_per_s"],
        "contended_reference_samples_per_s": busy["reference_samples_per_s"],
        "contended_ratio": busy["samples_per_s"] / row["samples_per_s"],
    }


def _line(row: dict) -> str:
    """One line of the printed table."""
    name = row["mode"]
    if "error" in row:
        return f"{name:<24} failed: {row['error']}"
    if "epoch_s" in row:
        return (
            f"{name:<24}{row['samples_per_s']:>11.1f}{row['ratio_to_numpy']:>8.3f}"
            f"{row['reference_samples_per_s']:>11.1f}   epoch {row['epoch_s']:.1f} s, "
            f"reference {row['reference_s']:.1f} s, epoch_ratio {row['epoch_ratio']:.3f}; "
            f"bare {row['bare_epoch_s']:.1f} s (bookkeeping_ratio "
            f"{row['bookkeeping_ratio']:.3f}), ceiling {row['ceiling_s']:.1f} s "
            f"(ceiling_ratio {row['ceiling_ratio']:.3f})"
        )
    text = (
        f"{name:<24}{row['samples_per_s']:>11.1f}{row['ratio_to_numpy']:>8.3f}"
        f"{row['reference_samples_per_s']:>11.1f}{row['build_s']:>9.2f}{row['compile_s']:>11.2f}"
        f"{row['peak_memory_mib']:>10.0f}"
    )
    if "contended_ratio" in row:
        text += f"{row['contended_ratio']:>11.3f}"
    return text


def run_benchmark(
    modes: list[str],
    threads: int | None = None,
    out: Path | None = None,
    echo=print,
    contended: bool = False,
    batch: int = DEFAULT_BATCH,
    epoch_samples: int | None = None,
    rounds: int = ROUNDS,
) -> list[dict]:
    """Measure ``modes`` (each in a subprocess) and print the table; optionally write JSON.

    Parameters
    ----------
    modes : list of str
        Rows to measure (:data:`ROWS`).
    threads : int, optional
        BLAS/OpenMP threads of every measurement (default: :func:`arsim.threads.resolve`).
    out : Path, optional
        Write the rows as a JSON list here.
    echo : callable
        Prints a line of the table.
    contended : bool
        Measure every row (not the epochs) a second time while a CPU-bound process occupies
        one core; adds ``contended_samples_per_s`` and ``contended_ratio`` (contended ÷
        idle samples per second).
    batch : int
        Minibatch size of the modes and the reference (the epochs keep the protocol's 64).
    epoch_samples : int, optional
        Training samples of the epoch rows (default: all 60,000).
    rounds : int
        Turns each row (not the epochs) and the reference take (:func:`measure`).
    """
    count = thread_policy.resolve(threads)
    environment = dict(os.environ) | {
        variable: str(count) for variable in thread_policy.THREAD_VARIABLES
    }
    facts = machine(count)
    echo(
        f"arsim bench: paper network 784-300-300-100-10, 100 relaxation steps, batch {batch}, "
        f"{count} BLAS threads" + (", contended: a busy process on one core" if contended else "")
    )
    echo(
        f"{'mode':<24}{'samples/s':>11}{'ratio':>8}{'numpy ref':>11}{'build s':>9}"
        f"{'compile s':>11}{'peak MiB':>10}" + (f"{'contended':>11}" if contended else "")
    )
    rows = []
    for name in modes:
        request = {"name": name, "threads": count}
        if name in EPOCHS:
            request["samples"] = epoch_samples
        else:
            request |= {"batch": batch, "rounds": rounds}
        row = _measure_in_child(request, environment)
        if contended and "error" not in row and name not in EPOCHS:
            row = _contended(request, environment, row)
        if "error" not in row:
            row.update(machine=facts, arsim=__version__)
        rows.append(row)
        echo(_line(row))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(rows, indent=2))
        echo(f"wrote {out}")
    return rows


def _main(request: dict) -> dict:
    """One measurement, as a child of :func:`run_benchmark`."""
    name = request.pop("name")
    if name in EPOCHS:
        return measure_epoch(name, **request)
    return measure(name, **request)


if __name__ == "__main__":
    print(json.dumps(_main(json.loads(sys.argv[1]))))

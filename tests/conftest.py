"""Shared fixtures: model and protocol builders, and a Brian2 run that returns relaxed traces."""

from __future__ import annotations

import gc
import logging
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from brian2.utils.logger import BrianLogger, std_silent

from arsim import oracle, threads
from arsim.datasets import DatasetError, find_dataset_folder, load_dataset
from arsim.modes import set_codegen_target
from arsim.run import simulate
from arsim.spec import RecordSpec, load_model, load_protocol, model_from_dict, protocol_from_dict
from arsim.spec.schedule import Schedule

ROOT = Path(__file__).resolve().parents[1]
PAPER_MODEL = ROOT / "models" / "paper-mlp.toml"
PAPER_PROTOCOL = ROOT / "protocols" / "paper.toml"
# Layer names are shared by the test networks so that compiled Brian2 code is reused.
LAYER_NAMES = ("input", "h1", "h2", "h3", "output")


def make_model(
    sizes, activations, loss="mse", bias=False, feedback="transpose", derivative=True, **extra
):
    """A chain model from sizes and the activations of layers 1 … L; weights N(0, 0.05)
    unless ``init`` says otherwise."""
    names = LAYER_NAMES[: len(sizes) - 1] + ("output",)
    layers = [{"name": names[0], "size": sizes[0]}]
    layers += [
        {"name": n, "size": s, "activation": a}
        for n, s, a in zip(names[1:], sizes[1:], activations, strict=True)
    ]
    data = {
        "name": "test",
        "loss": loss,
        "layers": layers,
        "defaults": {"bias": bias, "feedback": feedback, "derivative": derivative},
    }
    data.update(extra)
    data["init"] = {"variance": 0.05} | data.get("init", {})  # the variance the tests assume
    return model_from_dict(data, "test-model.toml")


def make_protocol(
    relax_steps,
    eta_x=0.1,
    batch_size=64,
    rate=0.0005,
    feedback_rate=None,
    start="feedforward",
    update_steps=1,
    record=None,
):
    """A protocol with τ = 10 ms and dt = η_x τ; records every neuron's x in every phase."""
    tau_ms = 10.0
    dt_ms = eta_x * tau_ms
    data = {
        "tau": f"{tau_ms} ms",
        "dt": f"{dt_ms!r} ms",
        "phases": {
            "feedforward": f"{dt_ms!r} ms",
            "relaxation": f"{relax_steps * dt_ms!r} ms",
            "update": f"{update_steps * dt_ms!r} ms",
            "start": start,
        },
        "learning": {
            "rate": rate,
            "batch_size": batch_size,
            "feedback_rate": rate if feedback_rate is None else feedback_rate,
        },
    }
    protocol = protocol_from_dict(data, "test-protocol.toml")
    return replace(
        protocol, record=record or RecordSpec(variables=("x",), neurons=None, samples=None)
    )


def relaxation_history(traces, protocol, layer, n_samples):
    """x of ``layer`` after m relaxation steps, m = 0 … n_relax: array (n_relax+1, samples, n)."""
    rows = traces[(traces.layer == layer) & (traces.variable == "x")]
    step = np.rint(rows.t.to_numpy() / protocol.dt).astype(int) - 1
    schedule = Schedule(None, protocol)
    k = step - rows["sample"].to_numpy() * schedule.sample_steps
    m = k - schedule.phase_steps["feedforward"] + 1
    n_relax = schedule.phase_steps["relaxation"]
    n_neurons = rows.neuron.max() + 1
    keep = (m >= 0) & (m <= n_relax)
    history = np.full((n_relax + 1, n_samples, n_neurons), np.nan)
    history[m[keep], rows["sample"].to_numpy()[keep], rows.neuron.to_numpy()[keep]] = (
        rows.value.to_numpy()[keep]
    )
    assert not np.isnan(history).any(), f"missing trace rows for layer {layer}"
    return history


class _UnusedBrianObjects(logging.Handler):
    """Collects Brian2's warnings about objects deleted without ever being in a network."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        if "never included in a network" in record.getMessage():
            self.messages.append(record.getMessage())


@pytest.fixture(autouse=True, scope="session")
def _no_unused_brian_objects():
    """Fail the session when a test builds Brian2 objects that never run (Brian2 warns on
    stderr when they are deleted): arsim builds what it runs, and so do the tests."""
    handler = _UnusedBrianObjects()
    logging.getLogger("brian2").addHandler(handler)
    yield
    gc.collect()
    logging.getLogger("brian2").removeHandler(handler)
    assert not handler.messages, "; ".join(handler.messages[:3])


@pytest.fixture(autouse=True, scope="session")
def _thread_policy():
    """The tests run with the thread policy every arsim command applies."""
    threads.apply()


def pytest_configure(config):
    """The processes the tests start get a temp folder of their own (TMPDIR), which
    :func:`pytest_sessionfinish` checks for Brian2's files and removes."""
    if "ARSIM_TEST_TMPDIR" in os.environ:  # a pytest-xdist worker: its controller checks
        return
    build = Path(tempfile.gettempdir()) / "arsim-standalone"
    os.environ.setdefault("ARSIM_BUILD_DIR", str(build))  # compiled programs stay reusable
    folder = tempfile.mkdtemp(prefix="arsim-tests-")
    os.environ["ARSIM_TEST_TMPDIR"] = os.environ["TMPDIR"] = folder
    config.arsim_tmpdir = Path(folder)


def pytest_sessionfinish(session, exitstatus):
    """Fail the run if the tests' processes left Brian2 files in their temp folder, or if
    this process keeps named ones (debug log, script copy, captured compiler output)."""
    folder = getattr(session.config, "arsim_tmpdir", None)
    if folder is None:
        return
    left = sorted(path.name for path in folder.glob("brian_*"))
    shutil.rmtree(folder, ignore_errors=True)
    named = [BrianLogger.tmp_log, BrianLogger.tmp_script]
    named.append(getattr(std_silent, "dest_fname_stdout", None))
    left += [str(name) for name in named if name and not str(name).startswith("/proc/")]
    if left:
        print(f"\nBrian2 files left in the temp folder: {', '.join(left)}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(autouse=True)
def _numpy_target_by_default():
    set_codegen_target("numpy")


@pytest.fixture(scope="session")
def paper_model():
    """The paper network with weights N(0, variance 0.05), as the paper's text states it
    (``models/paper-mlp.toml`` itself uses the authors' std 0.05, which trains)."""
    model = load_model(PAPER_MODEL)
    return replace(model, init=replace(model.init, variance=0.05))


@pytest.fixture(scope="session")
def paper_protocol():
    return load_protocol(PAPER_PROTOCOL)


def random_batch(model, n, seed=1):
    rng = np.random.default_rng(seed)
    inputs = rng.random((n, model.input_size))
    targets = np.eye(model.output.size)[rng.integers(0, model.output.size, n)]
    return inputs, targets


def run_brian(model, protocol, inputs, targets, params=None, mode="dense", device="runtime"):
    """Run the Brian2 network; returns (RunResult, params used)."""
    params = oracle.init_params(model) if params is None else params
    result = simulate(model, protocol, inputs, targets, params.copy(), mode=mode, device=device)
    return result, params


@pytest.fixture(params=["dense", "synapses"])
def mode(request):
    """Every execution mode."""
    return request.param


def relative_norm_error(got, expected) -> float:
    """``|got − expected| / |expected|`` (Euclidean norms over all entries)."""
    return float(np.linalg.norm(got - expected) / max(np.linalg.norm(expected), 1e-300))


def assert_gradient_step(before, after, weight_grads, bias_grads, rate, connections, worst):
    """The change of W and b of each of ``connections`` equals ``−rate ∇`` within 1e-6
    relative; the largest weight error so far is kept in ``worst["update"]``."""
    for c in connections:
        error = relative_norm_error(after.W[c] - before.W[c], -rate * weight_grads[c])
        worst["update"] = max(worst["update"], error)
        assert error < 1e-6, f"W{c}: update off −η∇W by {error:.2e}"
        if bias_grads[c] is not None:
            error = relative_norm_error(after.b[c] - before.b[c], -rate * bias_grads[c])
            assert error < 1e-6, f"b{c}: update off −η∇b by {error:.2e}"


def oscillating(oscillation=None, stimulus=None, record=None, **learning):
    """τ = 10 ms, dt = 1 ms, minibatches of 4; the phases set by a 50 Hz ``oscillation`` (a
    20-step cycle, 18° a step); ``record`` replaces the protocol's recording."""
    data = {
        "tau": "10 ms",
        "dt": "1 ms",
        "oscillation": {"frequency": "50 Hz", "relaxation": ["36 deg", "324 deg"]}
        | (oscillation or {}),
        "learning": {"rate": 0.02, "batch_size": 4} | learning,
    }
    if stimulus is not None:
        data["stimulus"] = stimulus
    protocol = protocol_from_dict(data, "oscillation.toml")
    return protocol if record is None else replace(protocol, record=record)


def every_feature_model(output_derivative=False, **connection_settings):
    """input → h1 (tanh, bias, Wᵀ) → h2 (relu, learned ψ) → h3 (sigmoid, fixed ψ, no f')
    → softmax output (learned ψ, bias; f' as ``output_derivative``), cross-entropy;
    ``connection_settings`` on every connection."""
    layers = [
        {"name": "input", "size": 5},
        {"name": "h1", "size": 4, "activation": "tanh"},
        {"name": "h2", "size": 4, "activation": "relu"},
        {"name": "h3", "size": 3, "activation": "sigmoid"},
        {"name": "output", "size": 3, "activation": "softmax"},
    ]
    connections = [
        {"source": "input", "target": "h1", "bias": True},
        {"source": "h1", "target": "h2", "feedback": "learned", "bias": True},
        {"source": "h2", "target": "h3", "feedback": "fixed", "derivative": False},
        {
            "source": "h3",
            "target": "output",
            "feedback": "learned",
            "derivative": output_derivative,
            "bias": True,
        },
    ]
    for connection in connections:
        connection.update(connection_settings)
    data = {"name": "every-feature", "loss": "cross-entropy", "layers": layers}
    data["init"] = {"variance": 0.05}
    data["connections"] = connections
    return model_from_dict(data, "every-feature.toml")


def fashion_mnist_or_skip(train_limit: int | None = None, test_limit: int | None = None):
    """Skip the test unless Fashion-MNIST is installed; with limits, load that much of it."""
    try:
        find_dataset_folder("fashion-mnist")
    except DatasetError as error:
        pytest.skip(f"Fashion-MNIST not installed: {error}")
    if train_limit is None:
        return None
    return load_dataset("fashion-mnist", train_limit=train_limit, test_limit=test_limit)

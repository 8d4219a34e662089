"""Single precision (``precision = "single"``) against the float64 oracle; the thread policy."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from conftest import PAPER_MODEL, PAPER_PROTOCOL, make_protocol, random_batch, relaxation_history
from test_cli import arsim

from arsim import oracle, threads
from arsim.activations import loss_value
from arsim.bench import numpy_reference
from arsim.dense import DenseNetwork
from arsim.modes import check_execution
from arsim.run import simulate
from arsim.spec import SpecError, load_model, load_protocol, protocol_from_dict
from arsim.spec.schedule import Schedule


def _relative(got, expected) -> float:
    return float(np.linalg.norm(got - expected) / np.linalg.norm(expected))


def test_single_precision_traces_and_update_agree_with_the_float64_oracle(paper_model):
    """Paper network, 8 samples, 100 relaxation steps in float32: every traced x agrees with
    the float64 NumPy AR within 1e-5 relative (per layer and step), and so do the per-sample
    update factors and the weight change of the minibatch."""
    protocol = replace(make_protocol(relax_steps=100, batch_size=8), precision="single")
    params = oracle.init_params(paper_model, seed=0)
    inputs, targets = random_batch(paper_model, 8, seed=5)
    result = simulate(paper_model, protocol, inputs, targets, params.copy(), mode="dense")
    reference = oracle.relax(paper_model, params, inputs, targets, 100, 0.1, keep_history=True)
    worst = 0.0
    for layer in (1, 2, 3):
        traced = relaxation_history(result.traces, protocol, paper_model.layers[layer].name, 8)
        for step in (0, 1, 50, 100):
            worst = max(worst, _relative(traced[step], reference.history[step][layer]))
    print(f"largest relative error of the traces: {worst:.3g}")
    assert 0 < worst < 1e-5  # not zero: the run was float32
    rate = protocol.learning_rate
    for layer in range(4):
        change = result.params.W[layer] - params.W[layer]
        error = _relative(change, -rate * reference.W[layer])
        print(f"W{layer}: relative error of the update {error:.3g}")
        assert error < 1e-5
    assert result.params.W[0].dtype == np.float64  # handed out as float64


def test_single_precision_network_computes_in_float32(paper_model):
    """Neuron variables, weights and the per-sample factors are float32; the factors give
    the float64 oracle's update within 1e-5."""
    protocol = replace(make_protocol(relax_steps=100, batch_size=4), precision="single")
    params = oracle.init_params(paper_model, seed=1)
    inputs, targets = random_batch(paper_model, 4, seed=2)
    network = DenseNetwork(paper_model, protocol, params, record=False)
    result = network.run_chunk(inputs, targets)
    assert network.groups[1].variables["x"].get_value().dtype == np.float32
    assert {w.dtype for w in network.W} == {np.dtype(np.float32)}
    (signals,) = result.batch_signals
    schedule = Schedule(None, protocol)
    reference = oracle.relax(paper_model, params, inputs, targets, 100, schedule.eta_x)
    for layer, (delta, presynaptic, _) in enumerate(signals):
        assert delta.dtype == np.float32
        update = delta.astype(np.float64).T @ presynaptic.astype(np.float64)
        assert _relative(update, reference.W[layer]) < 1e-5


def test_double_precision_stays_float64(paper_model):
    protocol = make_protocol(relax_steps=3, batch_size=2)
    assert protocol.precision == "double"
    network = DenseNetwork(paper_model, protocol, oracle.init_params(paper_model), record=False)
    network.run_chunk(*random_batch(paper_model, 2))  # a network built is a network run
    assert network.groups[1].variables["x"].get_value().dtype == np.float64
    assert {w.dtype for w in network.W} == {np.dtype(np.float64)}


def test_single_precision_reference_agrees_with_the_float64_one(paper_protocol):
    """The benchmark's float32 reference changes the weights as the float64 one within 1e-5
    relative, besides rounding W itself to float32 (paper network, its own initialisation,
    two minibatches: W is rounded when loaded and after each update)."""
    model = load_model(PAPER_MODEL)
    params = oracle.init_params(model, seed=0)
    inputs, targets = random_batch(model, 16, seed=4)
    protocol = replace(paper_protocol, batch_size=8)
    double = numpy_reference(model, protocol, params, inputs, targets)
    single = numpy_reference(model, protocol, params, inputs, targets, np.float32)
    for layer in range(4):
        assert single[layer].dtype == np.float32
        change = single[layer].astype(np.float64) - params.W[layer]
        expected = double[layer] - params.W[layer]
        rounding = np.linalg.norm(params.W[layer].astype(np.float32) - params.W[layer])
        error = np.linalg.norm(change - expected)
        print(f"W{layer}: |error| {error:.3g}, |change| {np.linalg.norm(expected):.3g}")
        assert 0 < error < 1e-5 * np.linalg.norm(expected) + 3 * rounding


def test_precision_key_and_its_refusals(tmp_path):
    protocol = load_protocol(PAPER_PROTOCOL)
    assert protocol.precision == "double"
    single = protocol_from_dict(
        {"tau": "10 ms", "dt": "1 ms", "precision": "single", "phases": {"relaxation": "5 ms"}},
        "p.toml",
    )
    assert single.precision == "single"
    with pytest.raises(SpecError, match=r"p\.toml: precision: expected one of double, single"):
        protocol_from_dict(
            {"tau": "10 ms", "dt": "1 ms", "precision": "half", "phases": {"relaxation": "5 ms"}},
            "p.toml",
        )
    for mode, device in (
        ("dense", "runtime"),
        ("synapses", "runtime"),
        ("synapses", "cpp_standalone"),
    ):
        check_execution(single, mode, device)


def test_run_folder_records_precision_and_threads(tmp_path, monkeypatch):
    """``--precision single`` and ``--threads 2`` reach the run and its config.json; the
    default is one thread and double precision (also through $ARSIM_THREADS)."""
    out = tmp_path / "single"
    args = ("run", PAPER_MODEL, PAPER_PROTOCOL, "--samples", 4, "--quiet")
    done = arsim(*args, "--out", out, "--precision", "single", "--threads", 2)
    assert done.returncode == 0, done.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["protocol"]["precision"] == "single" and config["threads"]["threads"] == 2
    assert all(pool["num_threads"] == 2 for pool in config["threads"]["pools"])
    for variable in threads.THREAD_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    done = arsim(*args, "--out", tmp_path / "double")
    config = json.loads((tmp_path / "double" / "config.json").read_text())
    assert config["protocol"]["precision"] == "double" and config["threads"]["threads"] == 1
    monkeypatch.setenv(threads.VARIABLE, "0")
    done = arsim(*args, "--out", tmp_path / "bad")
    assert done.returncode == 2 and "$ARSIM_THREADS: expected a positive integer" in done.stderr
    assert not (tmp_path / "bad").exists()
    monkeypatch.delenv(threads.VARIABLE)
    done = arsim(
        *args, "--out", tmp_path / "synapses", "--precision", "single", "--mode", "synapses"
    )
    assert done.returncode == 0, done.stderr  # the synapses mode runs in single precision too
    config = json.loads((tmp_path / "synapses" / "config.json").read_text())
    assert config["protocol"]["precision"] == "single"


@pytest.mark.parametrize("precision", ["double", "single"])
def test_minibatch_loss_from_the_network_sweep_equals_the_oracle_loss(paper_model, precision):
    """The output x̂ the dense network keeps of each minibatch's sweep gives the float64
    oracle's loss at the minibatch's weights: exactly in float64, within 1e-5 relative in
    float32; a partial minibatch keeps none (the loop sweeps it again)."""
    protocol = replace(make_protocol(relax_steps=20, batch_size=4), precision=precision)
    params = oracle.init_params(paper_model, seed=1)
    inputs, targets = random_batch(paper_model, 10, seed=4)
    network = DenseNetwork(paper_model, protocol, params, record=False)
    with np.errstate(all="ignore"):  # as the run loop runs a chunk
        result = network.run_chunk(inputs, targets)
    assert len(result.batch_outputs) == 3 and result.batch_outputs[2] is None
    befores = [params, *result.batch_params[:2]]
    for k in range(2):
        rows = slice(4 * k, 4 * k + 4)
        expected = oracle.loss(paper_model, befores[k], inputs[rows], targets[rows])
        output = result.batch_outputs[k].astype(np.float64)
        got = loss_value(paper_model.loss, output, targets[rows], paper_model.loss_scale)
        if precision == "double":
            np.testing.assert_array_equal(got, expected)
        else:
            assert _relative(got, expected) < 1e-5

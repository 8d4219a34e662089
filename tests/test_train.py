"""Training on Fashion-MNIST: AR against the NumPy backprop oracle, resume, bad data, variants."""

from __future__ import annotations

import argparse
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import fashion_mnist_or_skip

from arsim import oracle, stops
from arsim.cli import add_train_arguments, run_from_args
from arsim.datasets import load_dataset
from arsim.metrics import angle_degrees
from arsim.spec import load_model, load_protocol
from arsim.sweep import BLAS_THREAD_VARIABLES
from arsim.train import epoch_order, train

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
PAPER_PROTOCOL = ROOT / "protocols" / "paper.toml"
RELAX150 = ROOT / "protocols" / "paper-relax150.toml"


@pytest.fixture(scope="module")
def fmnist():
    fashion_mnist_or_skip()
    return load_dataset("fashion-mnist", train_limit=640, test_limit=1000)


def _weights(path):
    with np.load(path) as arrays:
        return {key: arrays[key] for key in arrays.files}


def _params(model, arrays):
    return oracle.Params(
        [arrays[f"W{layer}"] for layer in range(len(model.connections))],
        [None] * len(model.connections),
        [None] * len(model.connections),
    )


# --------------------------------------------------------------------------------------------
# AR on real images against the NumPy backprop oracle
# --------------------------------------------------------------------------------------------
def test_one_real_minibatch_update_is_the_backprop_step(fmnist, tmp_path):
    """64 real samples, paper protocol: AR's single update against W − η ∇L from the oracle."""
    model, protocol = load_model(MODELS / "paper-mlp.toml"), load_protocol(PAPER_PROTOCOL)
    folder, status = train(
        model, protocol, fmnist, tmp_path / "run", 1, train_samples=64, progress=False
    )
    assert status["status"] == "completed"
    initial = _weights(folder / "weights" / "initial.npz")
    final_ar = _weights(folder / "weights" / "final.npz")
    final_bp = _weights(folder / "weights" / "backprop-final.npz")
    x, t = fmnist.train_images[:64], fmnist.one_hot(fmnist.train_labels[:64])
    grads = oracle.backprop(model, _params(model, initial), x, t)  # the sum: order-free
    ar_change = [initial[f"W{k}"] - final_ar[f"W{k}"] for k in range(4)]
    assert angle_degrees(ar_change, grads.W) <= 1.0
    for k in range(4):
        np.testing.assert_allclose(
            final_bp[f"W{k}"], initial[f"W{k}"] - protocol.learning_rate * grads.W[k], rtol=1e-12
        )
        assert not np.array_equal(final_ar[f"W{k}"], initial[f"W{k}"])


def test_single_precision_baseline_and_evaluations_compute_in_float32(fmnist, tmp_path):
    """``precision = "single"``: the baseline's step is float32 (the float64 oracle's
    W − η∇L within float32 rounding), and the accuracies and losses of the metrics are those
    of a hand-written float32 sweep of the saved weights."""
    model = load_model(MODELS / "paper-mlp.toml")
    protocol = replace(load_protocol(PAPER_PROTOCOL), precision="single")
    folder, status = train(
        model, protocol, fmnist, tmp_path / "run", 1, train_samples=64, progress=False
    )
    assert status["status"] == "completed"
    initial = _weights(folder / "weights" / "initial.npz")
    x, t = fmnist.train_images[:64], fmnist.one_hot(fmnist.train_labels[:64])
    grads = oracle.backprop(model, _params(model, initial), x, t)
    weights = {"ar": _weights(folder / "weights" / "final.npz")}
    weights["bp"] = _weights(folder / "weights" / "backprop-final.npz")
    for k in range(4):
        assert weights["bp"][f"W{k}"].dtype == np.float32
        expected = initial[f"W{k}"] - protocol.learning_rate * grads.W[k]
        np.testing.assert_allclose(weights["bp"][f"W{k}"], expected, rtol=1e-6, atol=1e-8)
    row = pd.read_csv(folder / "metrics.csv").iloc[-1]
    assert row.kind == "epoch"
    for who in ("ar", "bp"):
        output = fmnist.test_images.astype(np.float32)
        for k in range(4):
            output = output @ weights[who][f"W{k}"].astype(np.float32).T
            output = np.maximum(output, np.float32(0)) if k < 3 else output
        accuracy = np.mean(output.argmax(axis=1) == fmnist.test_labels)
        loss = np.mean(np.sum((output - fmnist.one_hot(fmnist.test_labels)) ** 2, axis=1))
        assert row[f"{who}_test_acc"] == accuracy
        assert row[f"{who}_test_loss"] == pytest.approx(loss, rel=1e-6)  # scale 2 × ½ Σ


def _accuracy(weights, images, labels):
    """Accuracy of a hand-written float64 sweep of the paper network (ReLU hidden, linear out)."""
    output = images
    for k in range(4):
        output = output @ weights[f"W{k}"].T
        output = np.maximum(output, 0.0) if k < 3 else output
    return np.mean(output.argmax(axis=1) == labels)


def test_batch_rows_evaluate_the_first_eval_samples_and_epoch_rows_the_whole_sets(fmnist, tmp_path):
    """Two minibatches with a metrics row after the second: the ``batch`` row and the ``epoch``
    row see the same final weights; the batch row's accuracies are those of the first
    ``eval_samples`` training and test images, the epoch row's those of the whole sets."""
    model, protocol = load_model(MODELS / "paper-mlp.toml"), load_protocol(PAPER_PROTOCOL)
    folder, _ = train(
        model, protocol, fmnist, tmp_path / "run", 1, train_samples=128, metrics_every=2,
        eval_samples=100, progress=False,
    )  # fmt: skip
    metrics = pd.read_csv(folder / "metrics.csv")
    batch = metrics[metrics.kind == "batch"].iloc[0]
    epoch = metrics[metrics.kind == "epoch"].iloc[0]
    for who, name in (("ar", "final.npz"), ("bp", "backprop-final.npz")):
        weights = _weights(folder / "weights" / name)
        train_x, train_y = fmnist.train_images[:128], fmnist.train_labels[:128]
        test_x, test_y = fmnist.test_images, fmnist.test_labels
        assert batch[f"{who}_train_acc"] == _accuracy(weights, train_x[:100], train_y[:100])
        assert batch[f"{who}_test_acc"] == _accuracy(weights, test_x[:100], test_y[:100])
        assert epoch[f"{who}_train_acc"] == _accuracy(weights, train_x, train_y)
        assert epoch[f"{who}_test_acc"] == _accuracy(weights, test_x, test_y)


def test_relaxation_error_is_measured_on_the_first_samples_of_the_rows_last_minibatch(
    fmnist, tmp_path
):
    """One minibatch with its row: ``relax_relerr_<layer>`` is |x − ∂L/∂x̂| / |∂L/∂x̂| over the
    first 16 samples, from a hand-written relaxation (100 parallel Euler steps of
    x ← x + η_x (−x + (x_above ⊙ f') W)) and a hand-written backprop at the initial weights."""
    model, protocol = load_model(MODELS / "paper-mlp.toml"), load_protocol(PAPER_PROTOCOL)
    folder, _ = train(
        model, protocol, fmnist, tmp_path / "run", 1, train_samples=64, metrics_every=1,
        baseline=False, progress=False,
    )  # fmt: skip
    row = pd.read_csv(folder / "metrics.csv").iloc[0]
    assert row.kind == "batch"
    weights = _weights(folder / "weights" / "initial.npz")
    w = [weights[f"W{k}"] for k in range(4)]
    order = epoch_order(model.seed, 0, 64)[:16]
    x0, target = fmnist.train_images[:64][order], fmnist.one_hot(fmnist.train_labels[:64])[order]
    xhat, fprime = [x0], [None]
    for k in range(4):
        a = xhat[-1] @ w[k].T
        xhat.append(np.maximum(a, 0.0) if k < 3 else a)
        fprime.append((a > 0).astype(float) if k < 3 else np.ones_like(a))
    gradient = [None] * 5
    gradient[4] = 2.0 * (xhat[4] - target)  # loss_scale 2
    for k in (3, 2, 1):
        gradient[k] = (gradient[k + 1] * fprime[k + 1]) @ w[k]
    x = [None] + [h.copy() for h in xhat[1:4]] + [gradient[4]]
    eta = protocol.dt / protocol.tau
    for _ in range(100):
        top_down = [None] + [(x[k + 1] * fprime[k + 1]) @ w[k] for k in (1, 2, 3)]
        for k in (1, 2, 3):
            x[k] = x[k] + eta * (top_down[k] - x[k])
    for k, name in ((1, "h1"), (2, "h2"), (3, "h3")):
        expected = np.linalg.norm(x[k] - gradient[k]) / np.linalg.norm(gradient[k])
        assert row[f"relax_relerr_{name}"] == pytest.approx(expected, rel=1e-9)


def test_ar_tracks_backprop_and_loss_falls_on_real_data(fmnist, tmp_path):
    """640 real samples, 2 epochs, every minibatch: angle ≤ 1°, training loss falls."""
    model, protocol = load_model(MODELS / "paper-mlp.toml"), load_protocol(RELAX150)
    folder, _ = train(model, protocol, fmnist, tmp_path / "run", 2, metrics_every=1, progress=False)
    metrics = pd.read_csv(folder / "metrics.csv")
    batches = metrics[metrics.kind == "batch"]
    assert len(batches) == 2 * 10
    assert (batches.angle_deg <= 1.0).all(), batches.angle_deg.max()
    # independent of the run's own metrics: the oracle's loss at the saved weights
    x, t = fmnist.train_images, fmnist.one_hot(fmnist.train_labels)
    initial = oracle.loss(model, _params(model, _weights(folder / "weights/initial.npz")), x, t)
    final = oracle.loss(model, _params(model, _weights(folder / "weights/final.npz")), x, t)
    bp_final = oracle.loss(
        model, _params(model, _weights(folder / "weights/backprop-final.npz")), x, t
    )
    assert final.mean() < 0.75 * initial.mean()
    assert abs(final.mean() - bp_final.mean()) < 0.01 * initial.mean()
    assert batches.ar_loss.iloc[-5:].mean() < batches.ar_loss.iloc[:5].mean()


# --------------------------------------------------------------------------------------------
# Resume
# --------------------------------------------------------------------------------------------
def _assert_same_runs(a: Path, b: Path):
    for name in ("final.npz", "backprop-final.npz"):
        wa, wb = _weights(a / "weights" / name), _weights(b / "weights" / name)
        assert wa.keys() == wb.keys()
        for key in wa:
            assert np.array_equal(wa[key], wb[key]), (name, key)
    assert (a / "metrics.csv").read_text() == (b / "metrics.csv").read_text()


def test_resume_after_an_epoch_is_bit_identical(fmnist, tmp_path):
    model, protocol = load_model(MODELS / "paper-mlp-learned.toml"), load_protocol(PAPER_PROTOCOL)
    common = dict(train_samples=200, metrics_every=2, progress=False)
    whole, _ = train(model, protocol, fmnist, tmp_path / "whole", 2, **common)
    part, status = train(model, protocol, fmnist, tmp_path / "part", 1, **common)
    assert status["epochs_done"] == 1
    first = _weights(part / "weights" / "final.npz")
    resumed, status = train(model, protocol, fmnist, part, 2, resume=True, **common)
    assert status["epochs_done"] == 2 and resumed == part
    _assert_same_runs(whole, resumed)
    assert not np.array_equal(first["psi1"], _weights(resumed / "weights/final.npz")["psi1"])


def _first(paths):
    return next(iter(paths), None)


def _wait_for(found, process, deadline_s: float = 900.0):
    """Poll ``found()`` until it gives something (returned) or the process ends or the
    deadline passes (None); a generous deadline: the machine may be busy."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline and process.poll() is None:
        result = found()
        if result:
            return result
        time.sleep(0.05)
    return found() or None


def test_resume_after_kill_9_is_bit_identical(fmnist, tmp_path):
    model, protocol = load_model(MODELS / "paper-mlp.toml"), load_protocol(PAPER_PROTOCOL)
    common = dict(train_samples=512, metrics_every=1, progress=False)
    epochs = 4
    killed = tmp_path / "killed"
    code = (
        "from pathlib import Path; from arsim.datasets import load_dataset; "
        "from arsim.spec import load_model, load_protocol; from arsim.train import train; "
        f"train(load_model({str(MODELS / 'paper-mlp.toml')!r}), "
        f"load_protocol({str(PAPER_PROTOCOL)!r}), "
        "load_dataset('fashion-mnist', train_limit=512, test_limit=1000), "
        f"Path({str(killed)!r}), {epochs}, train_samples=512, metrics_every=1, progress=False)"
    )
    # The subprocess uses the BLAS threads this process uses, whatever the environment says
    # (Dask's nanny, started by a sweep test in this process, leaves OPENBLAS_NUM_THREADS=1 in
    # os.environ while this process's BLAS keeps its threads): the sums are split the same way.
    threads = stops.blas_threads()
    env = dict(os.environ) | {name: str(threads) for name in BLAS_THREAD_VARIABLES}
    process = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        checkpoint = _wait_for(
            lambda: _first(tmp_path.glob(".killed.partial-*/checkpoints/epoch-1.json")), process
        )
        if checkpoint is not None:  # into the second epoch: some of its metric rows are written
            kept = json.loads(checkpoint.read_text())["metrics_rows"]
            metrics = checkpoint.parents[1] / "metrics.csv"
            _wait_for(lambda: len(metrics.read_text().splitlines()) > kept + 1 or None, process)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
    assert checkpoint is not None, "the subprocess never wrote its first checkpoint"
    assert not killed.exists(), "the run finished before it was killed; nothing was tested"
    partial = checkpoint.parents[1]
    assert json.loads((partial / "status.json").read_text())["status"] == "running"
    assert json.loads((partial / "config.json").read_text())["options"]["blas_threads"] == threads
    resumed, status = train(model, protocol, fmnist, killed, epochs, resume=True, **common)
    assert resumed == killed and status["status"] == "completed"
    whole, _ = train(model, protocol, fmnist, tmp_path / "whole", epochs, **common)
    _assert_same_runs(whole, resumed)


def test_epoch_order_is_a_seeded_permutation():
    order = epoch_order(0, 1, 100)
    assert sorted(order) == list(range(100))
    assert np.array_equal(order, epoch_order(0, 1, 100))
    assert not np.array_equal(order, epoch_order(0, 2, 100))
    assert not np.array_equal(order, epoch_order(1, 1, 100))


# --------------------------------------------------------------------------------------------
# Bad data
# --------------------------------------------------------------------------------------------
def _args(**overrides):
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path)
    parser.add_argument("--quiet", action="store_true")
    add_train_arguments(parser)
    args = parser.parse_args(["--quiet", "--data", "fashion-mnist"])
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


def _idx(path: Path, dims: tuple[int, ...], payload: bytes, code: int = 0x08):
    header = bytes([0, 0, code, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)
    path.write_bytes(gzip.compress(header + payload))


def test_missing_data_folder_exits_2_with_one_line(tmp_path, capsys):
    model, protocol = load_model(MODELS / "paper-mlp.toml"), load_protocol(PAPER_PROTOCOL)
    args = _args(data_dir=tmp_path / "nowhere", out=tmp_path / "run")
    assert run_from_args(args, model, protocol) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nowhere" in err and err.startswith("arsim: error:")
    assert not (tmp_path / "run").exists()


def test_truncated_data_file_exits_2_with_one_line(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    _idx(data / "train-images-idx3-ubyte.gz", (60000, 28, 28), bytes(28 * 28 * 3))  # truncated
    _idx(data / "train-labels-idx1-ubyte.gz", (3,), bytes(3))
    _idx(data / "t10k-images-idx3-ubyte.gz", (2, 28, 28), bytes(28 * 28 * 2))
    _idx(data / "t10k-labels-idx1-ubyte.gz", (2,), bytes(2))
    model, protocol = load_model(MODELS / "paper-mlp.toml"), load_protocol(PAPER_PROTOCOL)
    args = _args(data_dir=data, out=tmp_path / "run")
    assert run_from_args(args, model, protocol) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train-images" in err
    assert not (tmp_path / "run").exists()


def test_resume_of_nothing_exits_2(tmp_path, capsys):
    model, protocol = load_model(MODELS / "paper-mlp.toml"), load_protocol(PAPER_PROTOCOL)
    assert run_from_args(_args(resume=tmp_path / "none"), model, protocol) == 2
    assert capsys.readouterr().err.count("\n") == 1


# --------------------------------------------------------------------------------------------
# Variant model files
# --------------------------------------------------------------------------------------------
def _plain(model):
    data = model.to_dict()
    data.pop("source")
    data.pop("name")
    return data


@pytest.mark.parametrize(
    "variant, feedback, derivative, loss",
    [
        ("fa", "fixed", True, "mse"),
        ("learned", "learned", True, "mse"),
        ("noderiv", "transpose", False, "mse"),
        ("learned-noderiv", "learned", False, "mse"),
        ("ce", "transpose", True, "cross-entropy"),
    ],
)
def test_variant_model_files_differ_as_intended(variant, feedback, derivative, loss):
    reference = load_model(MODELS / "paper-mlp.toml")  # exact AR
    model = load_model(MODELS / f"paper-mlp-{variant}.toml")
    assert model.name == f"paper-mlp-{variant}"
    assert model.sizes == (784, 300, 300, 100, 10) == reference.sizes
    assert {(c.feedback, c.derivative, c.bias) for c in model.connections} == {
        (feedback, derivative, False)
    }
    assert model.loss == loss
    expected = _plain(reference)
    for connection in expected["connections"]:
        connection.update(feedback=feedback, derivative=derivative)
    if loss == "cross-entropy":
        expected.update(loss="cross-entropy", loss_scale=1.0)
        expected["layers"][-1]["activation"] = "softmax"
        assert model.output.activation == "softmax" and model.loss_scale == 1.0
    assert _plain(model) == expected
    # the same forward weights from the same seed, whatever the feedback
    assert all(
        np.array_equal(a, b)
        for a, b in zip(oracle.init_params(model).W, oracle.init_params(reference).W, strict=True)
    )


def test_batch_metrics_equal_the_flattened_vector_formulas():
    """A minibatch's angle, relative error and per-matrix angles equal the textbook formulas
    on the explicitly concatenated vectors (weights and biases) of −ΔW and ∇L."""
    from conftest import make_model, random_batch

    from arsim.metrics import batch_metrics

    model = make_model([6, 5, 4, 3], ["tanh", "relu", "linear"], bias=True)
    before = oracle.init_params(model, seed=1)
    inputs, targets = random_batch(model, 7, seed=1)
    rng = np.random.default_rng(2)
    after = before.copy()
    for c in range(len(after.W)):  # an update that is not backprop's: a nonzero angle
        after.W[c] = after.W[c] + 0.01 * rng.standard_normal(after.W[c].shape)
        after.b[c] = after.b[c] + 0.01 * rng.standard_normal(after.b[c].shape)
    rate = 0.05
    row = batch_metrics(model, before, after, inputs, targets, rate)

    grads = oracle.backprop(model, before, inputs, targets)
    descent = np.concatenate(
        [(b - a).ravel() for a, b in zip(after.W, before.W, strict=True)]
        + [(b - a).ravel() for a, b in zip(after.b, before.b, strict=True)]
    )
    gradient = np.concatenate([g.ravel() for g in grads.W] + [g.ravel() for g in grads.b])
    cosine = descent @ gradient / np.sqrt((descent @ descent) * (gradient @ gradient))
    assert row["angle_deg"] == pytest.approx(np.degrees(np.arccos(cosine)), rel=1e-12)
    expected_error = np.linalg.norm(-descent + rate * gradient) / np.linalg.norm(rate * gradient)
    assert row["update_rel_error"] == pytest.approx(expected_error, rel=1e-12)
    for c, g in enumerate(grads.W):
        d = (before.W[c] - after.W[c]).ravel()
        expected = np.degrees(np.arccos(d @ g.ravel() / np.linalg.norm(d) / np.linalg.norm(g)))
        assert row[f"angle_deg_W{c}"] == pytest.approx(expected, rel=1e-12)
    assert row["loss"] == pytest.approx(oracle.loss(model, before, inputs, targets).mean())

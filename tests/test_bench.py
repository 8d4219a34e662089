"""The benchmark's NumPy reference computes what the simulator computes; the JSON it writes."""

from __future__ import annotations

import json
import os
from dataclasses import replace

import numpy as np
import pytest
from conftest import PAPER_MODEL, PAPER_PROTOCOL, make_model, make_protocol, random_batch

from arsim import oracle
from arsim.bench import (
    numpy_reference,
    relaxation_products_s,
    run_benchmark,
    start_competitor,
    timed_samples,
)
from arsim.datasets import DatasetError, find_dataset_folder
from arsim.spec import load_model, load_protocol
from arsim.spec.schedule import Schedule


def test_numpy_reference_is_exact_ar():
    """The reference that speeds are divided by must do the same work: two minibatches of AR."""
    model = make_model([20, 12, 10, 8, 5], ["relu", "tanh", "relu", "linear"], loss_scale=2.0)
    protocol = make_protocol(relax_steps=30, batch_size=4, rate=0.01)
    params = oracle.init_params(model, seed=3)
    inputs, targets = random_batch(model, 8, seed=3)
    got = numpy_reference(model, protocol, params, inputs, targets)
    expected = params
    for start in (0, 4):
        batch = slice(start, start + 4)
        schedule = Schedule(None, protocol)
        relaxed = oracle.relax(model, expected, inputs[batch], targets[batch], 30, schedule.eta_x)
        expected = oracle.apply_update(model, expected, relaxed, 0.01, 0.01)
    for layer in range(4):
        np.testing.assert_allclose(got[layer], expected.W[layer], rtol=1e-12, atol=1e-14)


def test_bench_writes_a_json_row_per_mode(tmp_path):
    out = tmp_path / "bench.json"
    lines = []
    rows = run_benchmark(["numpy-reference", "dense-numpy"], threads=1, out=out, echo=lines.append)
    saved = json.loads(out.read_text())
    assert (
        [row["mode"] for row in saved]
        == ["numpy-reference", "dense-numpy"]
        == [r["mode"] for r in rows]
    )
    for row in saved:
        assert {"samples_per_s", "ratio_to_numpy", "peak_memory_mib", "machine", "blas"} <= set(row)
        assert row["samples_per_s"] > 0 and row["machine"]["blas_threads"] == 1
        assert len(row["round_ratios"]) == 3  # the default rounds; the median one is reported
        assert row["ratio_to_numpy"] == sorted(row["round_ratios"])[1]
        assert row["ratio_to_numpy"] == row["samples_per_s"] / row["reference_samples_per_s"]
    assert saved[0]["ratio_to_numpy"] == 1.0
    assert any(line.startswith("dense") for line in lines)


def test_contended_single_precision_rows_at_another_batch_size(tmp_path):
    """``contended`` adds the busy-machine speed and its ratio to the idle one; ``batch``
    reaches the measurement; the single-precision reference is compared with the float64
    one."""
    rows = run_benchmark(
        ["numpy-reference-single"],
        threads=1,
        echo=lambda line: None,
        contended=True,
        batch=8,
        rounds=1,
    )
    (row,) = rows
    assert row["mode"] == "numpy-reference-single" and "error" not in row
    assert row["batch_size"] == 8 and row["precision"] == "single" and row["threads"] == 1
    assert row["ratio_to_numpy"] == row["samples_per_s"] / row["reference_samples_per_s"]
    assert row["contended_ratio"] == row["contended_samples_per_s"] / row["samples_per_s"]
    assert row["contended_samples_per_s"] > 0


def test_competitor_is_pinned_to_one_core():
    competitor = start_competitor()
    try:
        assert os.sched_getaffinity(competitor.pid) == {max(os.sched_getaffinity(0))}
        assert competitor.poll() is None  # still busy
    finally:
        competitor.kill()
        competitor.wait()


def test_timed_samples_shrink_with_the_batch():
    assert timed_samples("dense", 64) == 2048
    assert timed_samples("dense", 1) == 64
    assert timed_samples("dense", 8) == 256
    assert timed_samples("dense", 256) == 2048


def test_epoch_row_times_a_training_epoch_and_the_reference(tmp_path):
    """A tiny epoch (128 samples): its seconds, the reference's on the same images, and
    their ratio."""
    try:
        find_dataset_folder("fashion-mnist")
    except DatasetError as error:
        pytest.skip(f"Fashion-MNIST not installed: {error}")
    (row,) = run_benchmark(["epoch-single"], threads=1, echo=lambda line: None, epoch_samples=128)
    assert "error" not in row, row.get("error")
    assert row["samples"] == 128 and row["precision"] == "single" and row["batch_size"] == 64
    assert row["epoch_ratio"] == row["epoch_s"] / row["reference_s"]
    assert row["bookkeeping_ratio"] == row["epoch_s"] / row["bare_epoch_s"]
    # 128 samples = 2 minibatches of 100 relaxation steps, each step the products' time
    assert row["ceiling_s"] == pytest.approx(2 * 100 * row["products_step_s"], rel=1e-12)
    assert row["ceiling_ratio"] == row["bare_epoch_s"] / row["ceiling_s"]
    assert 0 <= row["ar_test_acc"] <= 1


def test_ceiling_times_the_top_down_products_of_the_relaxing_layers(monkeypatch):
    """The paper network relaxes h1, h2, h3: the products δ_h2·W1, δ_h3·W2 and δ_out·W3
    (shapes (64, out) @ (out, in)) and nothing else, in the precision of the protocol."""
    model = load_model(PAPER_MODEL)
    protocol = replace(load_protocol(PAPER_PROTOCOL), precision="single")
    calls = []
    matmul = np.matmul

    def recording_matmul(a, b, out):
        calls.append((a.shape, b.shape, out.shape, a.dtype, b.dtype, out.dtype))
        return matmul(a, b, out=out)

    monkeypatch.setattr(np, "matmul", recording_matmul)
    seconds = relaxation_products_s(model, protocol, oracle.init_params(model), steps=2, repeats=1)
    assert seconds > 0
    f32 = np.dtype(np.float32)
    expected = [
        ((64, 300), (300, 300), (64, 300), f32, f32, f32),
        ((64, 100), (100, 300), (64, 300), f32, f32, f32),
        ((64, 10), (10, 100), (64, 100), f32, f32, f32),
    ]
    assert calls == expected * 4  # (warm-up + 1 repeat) × 2 steps

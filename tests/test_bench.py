"""The benchmark's NumPy reference computes what the simulator computes; the JSON it writes."""

from __future__ import annotations

import json

import numpy as np
from conftest import make_model, make_protocol, random_batch

from arsim import oracle
from arsim.bench import numpy_reference, run_benchmark
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
    assert saved[0]["ratio_to_numpy"] == 1.0
    assert any(line.startswith("dense") for line in lines)

"""Recording in every mode, during training, and population summaries."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import fashion_mnist_or_skip

from arsim import oracle
from arsim.params import init_params
from arsim.recording import MemoryRecorder
from arsim.run import random_data, simulate
from arsim.spec import RecordSpec, load_model, load_protocol, protocol_from_dict
from arsim.spec.schedule import Schedule
from arsim.traces import load
from arsim.train import _params_from_arrays, epoch_order, train

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "traces"
MODEL, PROTOCOL = DATA / "small-mlp.toml", DATA / "small.toml"


def _small(record: RecordSpec):
    return load_model(MODEL), replace(load_protocol(PROTOCOL), record=record)


@pytest.mark.slow
def test_every_mode_records_the_same_rows():
    """Samples at minibatch boundaries (batch 4: 3, 4, 8): dense, synapses and cpp_standalone
    record the same rows (no duplicate of the tick that ends a program run), values to 1e-10."""
    model, protocol = _small(RecordSpec(neurons=(0, 1, 2), samples=(3, 4, 8, 9)))
    inputs, targets = random_data(model, 10, 0)
    tables = {}
    for mode, device in (
        ("dense", "runtime"),
        ("synapses", "runtime"),
        ("synapses", "cpp_standalone"),
    ):
        params = init_params(model, 0)
        result = simulate(model, protocol, inputs, targets, params, mode=mode, device=device)
        tables[mode, device] = result.traces
    reference = tables["dense", "runtime"]
    assert len(reference) == 4 * 7 * (3 * 3 + 3 * 3 + 3 * 3 + 3)  # samples × steps × values
    keys = ["sample", "layer", "variable", "neuron", "t"]
    for key, table in tables.items():
        assert len(table) == len(reference), key
        assert not table.duplicated(keys).any(), key
        merged = reference.merge(table, on=keys, suffixes=("", "_other"), validate="1:1")
        assert len(merged) == len(reference), key
        np.testing.assert_allclose(merged.value_other, merged.value, rtol=1e-10, atol=1e-10)


def test_summaries_equal_the_full_recording_and_the_oracle_gradient():
    model, protocol = _small(
        RecordSpec(variables=("x", "xhat"), neurons=(), samples=(1, 5, 6), summary=True)
    )
    inputs, targets = random_data(model, 10, 0)
    params = init_params(model, 0)
    recorder = MemoryRecorder(protocol)
    summarized = simulate(model, protocol, inputs, targets, params.copy(), recorder=recorder)
    full_protocol = replace(protocol, record=replace(protocol.record, neurons=None, summary=False))
    full = simulate(model, full_protocol, inputs, targets, params.copy()).traces
    assert len(summarized.traces) == 0  # no neuron asked for: summaries only
    table = pd.concat(recorder.summaries, ignore_index=True)
    assert sorted(table["sample"].unique()) == [1, 5, 6]
    period = Schedule(None, protocol).sample_steps
    full = full.assign(step=np.rint(full.t / protocol.dt).astype(int) - 1 - full["sample"] * period)
    for (layer, variable), rows in full.groupby(["layer", "variable"], observed=True):
        grouped = rows.groupby(["sample", "step"]).value
        mean, std = grouped.mean(), grouped.std(ddof=0)
        mine = table[table.layer == layer].set_index(["sample", "step"]).loc[mean.index]
        assert len(mine) == len(table[table.layer == layer])
        np.testing.assert_allclose(mine[f"{variable}_mean"], mean, rtol=0, atol=1e-12)
        np.testing.assert_allclose(mine[f"{variable}_std"], std, rtol=0, atol=1e-12)
    # the distance to the oracle's gradient, with the weights each sample's minibatch started from
    h2 = full[(full.layer == "h2") & (full.variable == "x")]
    before = _weights_before_batches(model, protocol, inputs, targets, params)
    for sample in (1, 5, 6):
        grad = oracle.backprop(
            model, before[sample // 4], inputs[sample : sample + 1], targets[sample : sample + 1]
        ).activity[model.index("h2")][0]
        rows = h2[h2["sample"] == sample].sort_values(["step", "neuron"])
        x = rows.value.to_numpy().reshape(-1, 4)
        expected = np.linalg.norm(x - grad, axis=1) / np.linalg.norm(grad)
        mine = table[(table.layer == "h2") & (table["sample"] == sample)].sort_values("step")
        np.testing.assert_allclose(mine.x_grad_distance, expected, rtol=0, atol=1e-12)


def _weights_before_batches(model, protocol, inputs, targets, params):
    """Weights before each minibatch, from runs of 0, 4, 8 samples (the AR updates)."""
    found = [params]
    for n in (4, 8):
        record = replace(protocol, record=RecordSpec(samples=()))
        found.append(simulate(model, record, inputs[:n], targets[:n], params.copy()).params)
    return found


def _fashion_mnist():
    return fashion_mnist_or_skip(train_limit=128, test_limit=100)


def test_record_epochs_all_records_every_epoch_of_a_training(tmp_path):
    data = _fashion_mnist()
    model = load_model(ROOT / "models" / "paper-mlp.toml")
    protocol = load_protocol(ROOT / "protocols" / "paper.toml")
    table = {"variables": ["x"], "layers": ["h3"], "samples": [0], "epochs": "all"}
    parsed = protocol_from_dict(
        {"tau": "10 ms", "dt": "1 ms", "phases": {"relaxation": "5 ms"}, "record": table}
    ).record
    assert parsed.epochs == "all"
    protocol = replace(protocol, record=replace(parsed, phases=("relaxation",)))
    folder, _ = train(model, protocol, data, tmp_path / "run", 2, train_samples=64,
                      progress=False, baseline=False, target="numpy")  # fmt: skip
    assert sorted(load(folder).epoch.unique()) == [0, 1]


def test_training_records_the_chosen_epochs_and_x_is_the_oracle_relaxation(tmp_path):
    """Epochs 0 and 2 of 3, the first minibatch's samples 0 and 5: the relaxed x of h2 equals
    the oracle's relaxation of those images with the weights the epoch started from."""
    data = _fashion_mnist()
    model = load_model(ROOT / "models" / "paper-mlp.toml")
    protocol = load_protocol(ROOT / "protocols" / "paper.toml")
    record = RecordSpec(
        variables=("x",),
        layers=("h2",),
        neurons=None,
        samples=(0, 5),
        minibatches=(0,),
        epochs=(0, 2),
        phases=("relaxation",),
    )
    protocol = replace(protocol, record=record)
    folder, status = train(
        model,
        protocol,
        data,
        tmp_path / "run",
        3,
        train_samples=128,
        progress=False,
        baseline=False,
        target="numpy",
    )
    assert status["status"] == "completed"
    traces = load(folder)
    assert sorted(traces.epoch.unique()) == [0, 2]
    schedule = Schedule(model, protocol)
    for epoch in (0, 2):
        order = epoch_order(model.seed, epoch, 128)
        if epoch == 0:
            with np.load(folder / "weights" / "initial.npz") as arrays:
                params = _params_from_arrays(model, arrays)
        else:
            with np.load(folder / "checkpoints" / f"epoch-{epoch}.npz") as arrays:
                params = _params_from_arrays(model, arrays, "ar_")
        rows = traces[traces.epoch == epoch]
        assert sorted(rows["sample"].unique()) == [0, 5]
        images = order[[0, 5]]
        assert sorted(rows.image.unique()) == sorted(images)
        x = data.train_images[order[:64]]
        y = data.one_hot(data.train_labels[order[:64]])
        relaxed = oracle.relax(
            model, params, x, y, schedule.phase_steps["relaxation"], schedule.eta_x
        ).x[model.index("h2")]
        last = rows[rows.t == rows.groupby("sample").t.transform("max")]
        for sample in (0, 5):
            got = last[last["sample"] == sample].sort_values("neuron").value.to_numpy()
            np.testing.assert_allclose(got, relaxed[sample], rtol=0, atol=1e-10)

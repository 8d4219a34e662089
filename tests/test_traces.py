"""Trace files: the loader's table equals the traces arsim cd88529 wrote, filters, xarray,
and a run stopped after k chunks keeps exactly their rows."""

from __future__ import annotations

import json
import shutil
import tomllib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from arsim.dense import DenseNetwork
from arsim.loop import ChunkLoop
from arsim.params import init_params
from arsim.run import random_data, run_to_folder, simulate
from arsim.spec import RecordSpec, load_model, load_protocol, model_from_dict, protocol_from_dict
from arsim.spec.schedule import Schedule
from arsim.traces import TraceWriter, load

DATA = Path(__file__).resolve().parent / "data" / "traces"
MODEL, PROTOCOL = DATA / "small-mlp.toml", DATA / "small.toml"
REFERENCE = DATA / "reference-traces.parquet"
"""The long trace table arsim cd88529 recorded for ``arsim run small-mlp.toml small.toml
--samples 10``: its ``simulate`` of the inputs and targets that :func:`random_data` gives now
(sample i no longer depends on the sample count) and the model's initial weights."""


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("traces") / "run"
    run_to_folder(load_model(MODEL), load_protocol(PROTOCOL), out, 10, progress=False)
    return out


@pytest.fixture(scope="module")
def layout1_run(tmp_path_factory):
    """A run folder of the ``arsim-traces-1`` layout: one float column ``n<index>`` a neuron
    (arsim 4f69341's ``arsim run small-mlp.toml small.toml --samples 10``)."""
    out = tmp_path_factory.mktemp("layout1") / "run"
    shutil.copytree(DATA / "layout-1", out)
    return out


@pytest.fixture(scope="module")
def legacy_run(tmp_path_factory):
    """A run folder of earlier versions: the long table ``traces.parquet``, no ``traces/``."""
    out = tmp_path_factory.mktemp("legacy") / "run"
    out.mkdir()
    shutil.copy(REFERENCE, out / "traces.parquet")
    return out


def test_loader_reads_the_long_table_of_earlier_run_folders(legacy_run):
    pd.testing.assert_frame_equal(load(legacy_run), pd.read_parquet(REFERENCE), check_exact=True)
    with pytest.raises(ValueError, match="as_xarray"):
        load(legacy_run, as_xarray=True)


def test_loader_table_equals_the_reference_traces_parquet(small_run):
    reference = pd.read_parquet(REFERENCE)
    pd.testing.assert_frame_equal(load(small_run), reference, check_exact=True)


def test_in_memory_table_equals_the_reference():
    model, protocol = load_model(MODEL), load_protocol(PROTOCOL)
    inputs, targets = random_data(model, 10, model.seed)
    result = simulate(model, protocol, inputs, targets, init_params(model, model.seed))
    pd.testing.assert_frame_equal(result.traces, pd.read_parquet(REFERENCE), check_exact=True)


def test_on_disk_layout_is_one_binary_row_per_sample_and_step(small_run):
    files = sorted(p.relative_to(small_run / "traces") for p in small_run.glob("traces/*/*"))
    assert Path("h1/x.parquet") in files and Path("input/xhat.parquet") in files
    assert json.loads((small_run / "traces" / "meta.json").read_text())["format"] == (
        "arsim-traces-2"
    )
    file = pq.ParquetFile(small_run / "traces" / "h1" / "x.parquet")
    described = json.loads(file.schema_arrow.metadata[b"arsim.values"])
    assert described == {"dtype": "float64", "neurons": [0, 2, 4]}
    table = file.read()
    assert table.column_names == ["sample", "step", "values"]
    assert (
        str(table.schema.field("sample").type) == str(table.schema.field("step").type) == ("int32")
    )
    assert table.num_rows == 4 * 7  # 4 samples × 7 steps, one row per step
    # each row: the 3 neurons' float64 values, little-endian, equal to the reference's
    full = pd.read_parquet(REFERENCE)
    h1 = full[(full.layer == "h1") & (full.variable == "x")]
    sample, step = table.column("sample").to_numpy(), table.column("step").to_numpy()
    for row, raw in enumerate(table.column("values").to_pylist()):
        assert len(raw) == 3 * 8
        t = (int(sample[row]) * 7 + int(step[row]) + 1) * 0.001
        rows = h1[(h1["sample"] == sample[row]) & np.isclose(h1.t, t, rtol=0, atol=1e-9)]
        expected = rows.sort_values("neuron").value.to_numpy()
        np.testing.assert_array_equal(np.frombuffer(raw, dtype="<f8"), expected)


def test_loader_reads_the_one_column_per_neuron_layout_alike(layout1_run, small_run):
    """``arsim-traces-1`` files (one float column per neuron, written by arsim 4f69341) and
    the binary layout give the same table, also filtered."""
    meta = json.loads((layout1_run / "traces" / "meta.json").read_text())
    assert meta["format"] == "arsim-traces-1"
    assert "n0" in pq.ParquetFile(layout1_run / "traces/h1/x.parquet").schema_arrow.names
    pd.testing.assert_frame_equal(load(layout1_run), load(small_run), check_exact=True)
    query = {"layers": ["h1"], "neurons": [4, 2], "samples": [1], "phases": ["relaxation"]}
    pd.testing.assert_frame_equal(load(layout1_run, **query), load(small_run, **query))
    old, new = load(layout1_run, as_xarray=True), load(small_run, as_xarray=True)
    assert old.equals(new)


@pytest.mark.parametrize(
    "query",
    [
        {"layers": ["h2"]},
        {"variables": ["xhat"], "samples": [3]},
        {"neurons": [2], "phases": ["relaxation"]},
        {"layers": ["h1", "output"], "variables": ["x", "fp"], "phases": ["update", "feedforward"]},
        {"t": (0.030, 0.040)},
        {"samples": [4, 8], "neurons": [0, 4], "t": (0.0, 0.0315)},
        {"samples": [7]},  # not recorded
    ],
)
@pytest.mark.parametrize("folder", ["small_run", "layout1_run", "legacy_run"])
def test_filters_equal_filtering_the_whole_table(request, folder, query):
    run = request.getfixturevalue(folder)
    full = pd.read_parquet(REFERENCE)
    keep = np.ones(len(full), bool)
    for key, column in (("layers", "layer"), ("variables", "variable"), ("samples", "sample")):
        if key in query:
            keep &= full[column].isin(query[key]).to_numpy()
    if "neurons" in query:
        keep &= full.neuron.isin(query["neurons"]).to_numpy()
    if "phases" in query:
        keep &= full.phase.astype(str).isin(query["phases"]).to_numpy()
    if "t" in query:
        keep &= ((full.t >= query["t"][0]) & (full.t <= query["t"][1])).to_numpy()
    expected = full[keep].reset_index(drop=True)
    got = load(run, **query)
    assert len(got) == keep.sum()
    columns = ["sample", "t", "neuron", "value"]
    pd.testing.assert_frame_equal(got[columns], expected[columns], check_exact=True)
    for column in ("phase", "layer", "variable"):
        assert got[column].astype(str).tolist() == expected[column].astype(str).tolist()


def test_xarray_view_holds_the_same_values(small_run):
    full = pd.read_parquet(REFERENCE)
    data = load(small_run, as_xarray=True)
    x = data["h1.x"]
    assert x.dims == ("sample", "step", "neuron")
    period = Schedule(None, load_protocol(PROTOCOL)).sample_steps
    rows = full[(full.layer == "h1") & (full.variable == "x")]
    step = np.rint(rows.t.to_numpy() / 0.001).astype(int) - 1 - rows["sample"].to_numpy() * period
    got = x.sel(sample=xr_index(rows["sample"]), step=xr_index(step), neuron=xr_index(rows.neuron))
    np.testing.assert_array_equal(got.to_numpy(), rows.value.to_numpy())


def xr_index(values):
    import xarray as xr

    return xr.DataArray(np.asarray(values), dims="row")


@pytest.mark.parametrize("chunks_done", [1, 2])
def test_run_stopped_after_k_chunks_keeps_exactly_their_rows(tmp_path, chunks_done):
    """One minibatch per chunk; the loop's consumer fails after k minibatches: the files keep
    exactly the rows of the samples of those k chunks, equal to a whole run's."""
    model = load_model(MODEL)
    protocol = replace(load_protocol(PROTOCOL), record=RecordSpec(neurons=None, samples=None))
    inputs, targets = random_data(model, 12, 0)
    params = init_params(model, 0)
    full = simulate(model, protocol, inputs, targets, params.copy()).traces

    network = DenseNetwork(model, protocol, params.copy(), batches_per_chunk=1)
    writer = TraceWriter(tmp_path / "run" / "traces", protocol)
    loop = ChunkLoop(network, model, protocol, inputs, targets, params, recorder=writer)
    with pytest.raises(RuntimeError, match="stopped"):
        for batch in loop:
            if batch.index == chunks_done - 1:
                raise RuntimeError("stopped")
    got = load(tmp_path / "run")
    expected = full[full["sample"] < chunks_done * protocol.batch_size].reset_index(drop=True)
    assert len(got) == len(expected) > 0
    pd.testing.assert_frame_equal(got, expected, check_exact=True, check_categorical=False)


def _bytes_read() -> int:
    """Bytes this process has passed through read system calls (``rchar``), cached or not."""
    text = Path("/proc/self/io").read_text()
    return int(text.split("rchar:")[1].split()[0])


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs Linux /proc/self/io")
def test_slice_of_one_layer_variable_and_sample_reads_a_small_fraction(tmp_path):
    """32 chunks of 32 samples, every neuron: loading h1's x of one sample opens one file and
    reads its footer and one row group, under 5 % of the bytes of the trace files (about 2 %;
    the whole h1/x file is about 45 %)."""
    model = model_from_dict(
        {
            "name": "sliced",
            "loss": "mse",
            "layers": [
                {"name": "input", "size": 16},
                {"name": "h1", "size": 32, "activation": "tanh"},
                {"name": "h2", "size": 32, "activation": "relu"},
                {"name": "output", "size": 4, "activation": "linear"},
            ],
        }
    )
    data = tomllib.loads(PROTOCOL.read_text())
    data["phases"]["relaxation"] = "20 ms"
    data["learning"]["batch_size"] = 32
    protocol = replace(
        protocol_from_dict(data, PROTOCOL), record=RecordSpec(neurons=None, samples=None)
    )
    inputs, targets = random_data(model, 32 * 32, 0)
    params = init_params(model, 0)
    network = DenseNetwork(model, protocol, params.copy(), batches_per_chunk=1)
    with TraceWriter(tmp_path / "run" / "traces", protocol) as writer:
        for _ in ChunkLoop(network, model, protocol, inputs, targets, params, recorder=writer):
            pass
    on_disk = sum(p.stat().st_size for p in (tmp_path / "run" / "traces").rglob("*.parquet"))
    load(tmp_path / "run", layers=["output"], variables=["fp"], samples=[0])  # first use
    before = _bytes_read()
    table = load(tmp_path / "run", layers=["h1"], variables=["x"], samples=[700])
    read = _bytes_read() - before
    period = Schedule(None, protocol).sample_steps
    assert len(table) == period * 32 and set(table["sample"]) == {700}
    assert 0 < read < 0.05 * on_disk, (read, on_disk)

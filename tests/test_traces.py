"""Trace files: the loader's table equals the traces arsim cd88529 wrote, filters, xarray,
and a run stopped after k chunks keeps exactly their rows."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from arsim.dense import DenseNetwork
from arsim.loop import ChunkLoop
from arsim.params import init_params
from arsim.run import random_data, run_to_folder, simulate
from arsim.spec import RecordSpec, load_model, load_protocol
from arsim.spec.schedule import Schedule
from arsim.traces import TraceWriter, load

DATA = Path(__file__).resolve().parent / "data" / "traces"
MODEL, PROTOCOL = DATA / "small-mlp.toml", DATA / "small.toml"
REFERENCE = DATA / "reference-traces.parquet"
"""``arsim run small-mlp.toml small.toml --samples 10 --target numpy`` by arsim cd88529."""


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("traces") / "run"
    run_to_folder(load_model(MODEL), load_protocol(PROTOCOL), out, 10, progress=False)
    return out


def test_loader_table_equals_the_reference_traces_parquet(small_run):
    reference = pd.read_parquet(REFERENCE)
    pd.testing.assert_frame_equal(load(small_run), reference, check_exact=True)


def test_in_memory_table_equals_the_reference():
    model, protocol = load_model(MODEL), load_protocol(PROTOCOL)
    inputs, targets = random_data(model, 10, model.seed)
    result = simulate(model, protocol, inputs, targets, init_params(model, model.seed))
    pd.testing.assert_frame_equal(result.traces, pd.read_parquet(REFERENCE), check_exact=True)


def test_on_disk_layout_is_wide_per_layer_and_variable(small_run):
    files = sorted(p.relative_to(small_run / "traces") for p in small_run.glob("traces/*/*"))
    assert Path("h1/x.parquet") in files and Path("input/xhat.parquet") in files
    wide = pd.read_parquet(small_run / "traces" / "h1" / "x.parquet")
    assert list(wide.columns) == ["sample", "step", "n0", "n2", "n4"]
    assert wide["sample"].dtype == np.int32 and wide["step"].dtype == np.int32
    assert len(wide) == 4 * 7  # 4 samples × 7 steps, one row per step


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
def test_filters_equal_filtering_the_whole_table(small_run, query):
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
    got = load(small_run, **query)
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

"""Trace files written by a background thread, in float32 when asked; a resumed epoch's folder."""

from __future__ import annotations

import errno
import json
import threading
import time

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import fashion_mnist_or_skip

from arsim import stops
from arsim import train as training
from arsim.datasets import load_dataset
from arsim.dense import DenseNetwork
from arsim.loop import ChunkLoop
from arsim.params import init_params
from arsim.recording import Block, MemoryRecorder, chunk_values_cap
from arsim.run import random_data, run_to_folder, simulate
from arsim.spec import SpecError, model_from_dict, protocol_from_dict
from arsim.tracebuffer import TraceBuffer, _new_arrays
from arsim.traces import TraceWriter, load

MODEL = {
    "name": "tiny",
    "layers": [
        {"name": "input", "size": 3},
        {"name": "h1", "size": 6, "activation": "tanh"},
        {"name": "out", "size": 2},
    ],
}
PROTOCOL = {
    "tau": "10 ms",
    "dt": "1 ms",
    "phases": {"feedforward": "1 ms", "relaxation": "8 ms", "update": "1 ms"},
    "learning": {"batch_size": 2},
    "record": {"variables": ["x", "xhat", "fp"], "neurons": "all", "samples": "all"},
}


def _run(tmp_path, name, record=None, precision="double"):
    model = model_from_dict(MODEL, "tiny.toml")
    data = PROTOCOL | {"precision": precision}
    data["record"] = PROTOCOL["record"] | (record or {})
    protocol = protocol_from_dict(data, f"{name}.toml")
    folder, result = run_to_folder(
        model, protocol, tmp_path / name, 8, seed=0, target="numpy", progress=False
    )
    assert result.diverged is None
    return folder


def _stored(folder):
    """The recording dtype and bytes a row of ``h1/x.parquet``."""
    file = pq.ParquetFile(folder / "traces" / "h1" / "x.parquet")
    dtype = json.loads(file.schema_arrow.metadata[b"arsim.values"])["dtype"]
    return dtype, file.schema_arrow.field("values").type.byte_width


def test_float32_traces_are_the_float64_ones_rounded(tmp_path):
    double = _run(tmp_path, "double")
    single = _run(tmp_path, "single", {"dtype": "float32"})
    assert _stored(single) == ("float32", 6 * 4)  # 6 neurons of 4 bytes a row
    assert _stored(double) == ("float64", 6 * 8)
    wide, narrow = load(double), load(single)
    # 8 samples of 10 steps: x̂ of the 3 inputs, x, x̂ and f' of the 6 + 2 others
    assert len(wide) == len(narrow) == 8 * 10 * (3 + (6 + 2) * 3)
    np.testing.assert_array_equal(narrow.value.to_numpy(), wide.value.to_numpy(np.float32))
    pd.testing.assert_frame_equal(narrow.drop(columns="value"), wide.drop(columns="value"))


def test_single_precision_records_float32_by_default(tmp_path):
    folder = _run(tmp_path, "auto", precision="single")
    assert _stored(folder) == ("float32", 6 * 4)


def test_an_unknown_trace_dtype_is_refused():
    data = PROTOCOL | {"record": {"dtype": "float16"}}
    with pytest.raises(SpecError, match=r"p\.toml: record\.dtype: expected one of auto, float64"):
        protocol_from_dict(data, "p.toml")


def _block(sample: int) -> Block:
    values = np.asfortranarray(np.full((2, 3), float(sample)))
    steps = np.arange(2, dtype=np.int32)
    return Block("h1", "x", np.full(2, sample, np.int32), steps, np.arange(3), values)


def _protocol():
    return protocol_from_dict(PROTOCOL, "p.toml")


def test_the_writer_queue_is_bounded_and_close_writes_everything(tmp_path, monkeypatch):
    """While the writer thread is held, a producer of 6 chunks can hand over at most the one
    being written and QUEUE_CHUNKS waiting ones, then waits; released, every chunk is on
    disk after close."""
    release = threading.Event()
    writer = TraceWriter(tmp_path / "run" / "traces", _protocol())
    real = writer._write_blocks

    def held(blocks):
        release.wait()
        real(blocks)

    monkeypatch.setattr(writer, "_write_blocks", held)
    handed = []

    def produce():
        for sample in range(6):
            writer.write([_block(sample)])
            handed.append(sample)

    producer = threading.Thread(target=produce)
    producer.start()
    deadline = time.monotonic() + 600
    while writer._queue.qsize() < TraceWriter.QUEUE_CHUNKS and time.monotonic() < deadline:
        time.sleep(0.01)
    assert writer._queue.qsize() == TraceWriter.QUEUE_CHUNKS
    assert producer.is_alive() and len(handed) <= TraceWriter.QUEUE_CHUNKS + 1
    release.set()
    producer.join()
    writer.close()
    table = load(tmp_path / "run")
    assert sorted(set(table["sample"])) == list(range(6)) and len(table) == 6 * 2 * 3
    assert (table.value == table["sample"]).all()


def test_a_writer_error_reaches_the_simulating_thread(tmp_path, monkeypatch):
    writer = TraceWriter(tmp_path / "run" / "traces", _protocol())

    def full_disk(blocks):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "run"))

    monkeypatch.setattr(writer, "_write_blocks", full_disk)
    writer.write([_block(0)])
    with pytest.raises(OSError, match="No space left on device"):
        for sample in range(1, 100):  # a later write, or the close, says what happened
            writer.write([_block(sample)])
        writer.close()
    writer.close()  # closing again raises nothing more


# --------------------------------------------------------------------------------------------
# A resumed training rewrites the trace folder of the epoch it repeats
# --------------------------------------------------------------------------------------------
IMAGE_MODEL = {
    "name": "tiny-images",
    "layers": [
        {"name": "input", "size": 784},
        {"name": "h1", "size": 8, "activation": "relu"},
        {"name": "output", "size": 10},
    ],
    "init": {"variance": 0.0025},
}
RECORDED = {
    "tau": "10 ms",
    "dt": "1 ms",
    "phases": {"feedforward": "1 ms", "relaxation": "6 ms", "update": "1 ms"},
    "learning": {"batch_size": 16},
    "record": {"variables": ["x"], "neurons": [0, 1], "samples": "all", "epochs": [0, 1]},
}


def test_a_resumed_training_rewrites_the_trace_folder_of_the_repeated_epoch(tmp_path, monkeypatch):
    """An attempt stopped in epoch 1 after its first chunk has recorded part of epoch 1;
    the resumed run repeats epoch 1 and its folder then holds what an uninterrupted run's
    holds, file for file and value for value."""
    fashion_mnist_or_skip()
    images = load_dataset("fashion-mnist", train_limit=64, test_limit=50)
    model = model_from_dict(IMAGE_MODEL, "tiny-images.toml")
    protocol = protocol_from_dict(RECORDED, "recorded.toml")
    common = {"metrics_every": 1, "baseline": False, "progress": False}
    whole, _ = training.train(model, protocol, images, tmp_path / "whole", 2, **common)

    monkeypatch.setattr("arsim.dense.DenseNetwork.chunk_samples_at_least", 16)
    monkeypatch.setattr("arsim.dense.DenseNetwork.batches_per_chunk", 1)  # a chunk a minibatch
    calls = {"after_first_epoch": 0}
    real_checkpoint = training.Training.checkpoint

    def checkpoint(self):
        real_checkpoint(self)
        calls["after_first_epoch"] = 1

    def requested():  # after epoch 0: let the first chunk of epoch 1 run, then stop
        if not calls["after_first_epoch"]:
            return None
        calls["after_first_epoch"] += 1
        return 2 if calls["after_first_epoch"] > 4 else None

    real_requested = stops.requested
    monkeypatch.setattr(training.Training, "checkpoint", checkpoint)
    monkeypatch.setattr(stops, "requested", requested)
    stopped, status = training.train(model, protocol, images, tmp_path / "part", 2, **common)
    assert status["status"] == "interrupted" and status["epochs_done"] == 1
    partial = load(stopped, epochs=[1])
    assert 0 < partial["sample"].max() < 63  # part of epoch 1 was recorded
    monkeypatch.setattr(stops, "requested", real_requested)
    monkeypatch.setattr(training.Training, "checkpoint", real_checkpoint)

    resumed, status = training.train(model, protocol, images, stopped, 2, resume=True, **common)
    assert status["status"] == "completed"
    files = sorted(p.relative_to(resumed) for p in (resumed / "traces").rglob("*") if p.is_file())
    assert files == sorted(
        p.relative_to(whole) for p in (whole / "traces").rglob("*") if p.is_file()
    )
    pd.testing.assert_frame_equal(load(resumed), load(whole), check_exact=True)


@pytest.mark.parametrize("recorder", ["slow writer", "memory"])
def test_reused_chunk_arrays_never_overwrite_rows_not_yet_stored(tmp_path, monkeypatch, recorder):
    """One minibatch a chunk (12 chunks): with a slow writer thread the chunk arrays are
    reused once written, and a recorder that keeps the blocks in memory keeps arrays never
    reused; both store exactly the traces of a run in one chunk (no reuse)."""
    model, protocol = model_from_dict(MODEL, "tiny.toml"), _protocol()
    inputs, targets = random_data(model, 24, 0)
    params = init_params(model, 0)
    expected = simulate(model, protocol, inputs, targets, params.copy(), mode="dense").traces
    sets, real_set = [], TraceBuffer._free_set

    def spied(self, *args):
        sets.append(real_set(self, *args))
        return sets[-1]

    monkeypatch.setattr(TraceBuffer, "_free_set", spied)
    real_write = TraceWriter._write_blocks

    def slow(self, blocks):
        time.sleep(0.05)  # the simulation fills the queue and waits
        real_write(self, blocks)

    monkeypatch.setattr(TraceWriter, "_write_blocks", slow)
    network = DenseNetwork(model, protocol, params.copy(), batches_per_chunk=1)
    keeper = MemoryRecorder(protocol) if recorder == "memory" else None
    writer = keeper or TraceWriter(tmp_path / "run" / "traces", protocol)
    loop = ChunkLoop(network, model, protocol, inputs, targets, params, recorder=writer)
    for _ in loop:
        pass
    got = keeper.frame() if keeper else load(tmp_path / "run")
    pd.testing.assert_frame_equal(got, expected, check_exact=True, check_categorical=False)
    distinct = len({id(arrays) for arrays in sets})
    assert len(sets) == 12
    if keeper:
        assert distinct == 12
    else:
        assert distinct < 12 and distinct <= TraceBuffer.SPARE_SETS + 1


def test_the_chunk_cap_counts_bytes_so_float32_chunks_hold_twice_the_values():
    """3 + 6 + 2 neurons × 3 variables × 10 steps × 2 replicas = 660 values a minibatch."""
    model = model_from_dict(MODEL, "tiny.toml")
    caps = {}
    for dtype in ("float64", "float32"):
        data = PROTOCOL | {"record": PROTOCOL["record"] | {"dtype": dtype}}
        caps[dtype] = chunk_values_cap(model, protocol_from_dict(data, "p.toml"), 2)
    assert caps == {"float64": 2**27 // (660 * 8), "float32": 2**27 // (660 * 4)}


def test_new_chunk_arrays_leave_numpys_huge_page_switch_as_it_was():
    from numpy._core import multiarray

    for state in (True, False):
        multiarray._set_madvise_hugepage(state)
        arrays = _new_arrays({("h1", "x"): (2, 3, 4, 5)}, np.float32)
        assert arrays["h1", "x"].shape == (2, 3, 4, 5) and arrays["h1", "x"].dtype == np.float32
        assert multiarray._set_madvise_hugepage(True) is state

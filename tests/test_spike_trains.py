"""Recorded spike trains: the dense mode's files against the period oracle's spikes, the
integrate-and-fire counts against their closed form, the clipped-step counts against the
oracle's signals, reading back, the raster, and the refusal without ``[spikes]``."""

from __future__ import annotations

import math
import os
import re
import shlex
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import PAPER_MODEL, ROOT, fashion_mnist_or_skip
from test_forward_dynamics import dag_model, make, protocol_data

from arsim import oracle, plot, spiketrains
from arsim.cli import main
from arsim.params import Params
from arsim.period_oracle import simulate_periods
from arsim.run import random_data, run_to_folder, simulate
from arsim.spec import RecordSpec, model_from_dict
from arsim.spiketrains import COLUMNS, SpikeLog
from arsim.traces import read_spikes

SPIKES = {"max_rate": "500 Hz", "synapse_tau": "2 ms", "scale": 0.5, "layer_scale": {"out": 0.8}}


def spiking(encoder: str, population: int = 2, relax_ms: int = 12, **record):
    """The DAG's spiking protocol (batch 3, dt 1 ms), recording x and every spike."""
    spikes = SPIKES | {"encoder": encoder, "population": population}
    protocol = make(protocol_data(relax_ms=relax_ms, spikes=spikes))
    settings = {"variables": ("x", "spikes"), "neurons": None, "samples": None} | record
    return replace(protocol, record=RecordSpec(**settings))


@pytest.mark.parametrize("encoder", ["integrate-and-fire", "poisson"])
def test_dense_mode_records_exactly_the_period_oracles_spikes(tmp_path, encoder):
    """Every spike (sample, step, t, unit, sign, encoder, receiver) of a run folder equals the
    oracle's; Poisson encoders draw the same random stream in both."""
    model, protocol = dag_model(), spiking(encoder)
    folder, result = run_to_folder(model, protocol, tmp_path / "run", 6, seed=7, progress=False)
    assert result.diverged is None
    log = SpikeLog(model, protocol)
    inputs, targets = random_data(model, 6, 7)
    params = oracle.init_params(model, 7)
    simulate_periods(model, protocol, params, inputs, targets, seed_key=(7,), spike_log=log)
    for layer in ("h2", "out"):  # h1 sends to the inputs only, which do not relax
        got, want = read_spikes(folder, layer), log.frame(layer)
        assert list(got.columns) == list(COLUMNS) and len(got) > 20
        pd.testing.assert_frame_equal(got, want)
        assert set(got["sample"]) == set(range(6)) and set(got.encoder) == {0, 1}
    assert set(read_spikes(folder, "out").receiver) == {"h1", "h2"}
    assert read_spikes(folder, "h1").empty
    assert not (folder / "traces" / "spikes-h1.parquet").exists()


def test_spikes_of_a_run_without_folder_and_a_writer_that_flushes_in_parts(tmp_path, monkeypatch):
    """In memory (``RunResult.spikes``) and in a file appended every few spikes (bounded
    memory), the same spikes as the oracle's."""
    model, protocol = dag_model(), spiking("poisson")
    inputs, targets = random_data(model, 6, 7)
    params = oracle.init_params(model, 7)
    log = SpikeLog(model, protocol)
    simulate_periods(model, protocol, params, inputs, targets, seed_key=(7,), spike_log=log)
    result = simulate(model, protocol, inputs, targets, params, seed=7)
    pd.testing.assert_frame_equal(result.spikes.frame("out"), log.frame("out"))
    monkeypatch.setattr(spiketrains, "FLUSH_ROWS", 50)
    folder, _ = run_to_folder(model, protocol, tmp_path / "run", 6, seed=7, progress=False)
    path = folder / "traces" / "spikes-out.parquet"
    assert pq.ParquetFile(path).metadata.num_row_groups >= 3
    pd.testing.assert_frame_equal(read_spikes(folder, "out"), log.frame("out"))


def test_record_table_selects_samples_units_and_sending_layers(tmp_path):
    model = dag_model()
    protocol = spiking("poisson", layers=("out",), neurons=(1, 2), samples=(4,))
    folder, _ = run_to_folder(model, protocol, tmp_path / "run", 6, seed=7, progress=False)
    spikes = read_spikes(folder, "out")
    assert set(spikes["sample"]) == {4} and set(spikes.neuron) <= {1, 2} and len(spikes) > 5
    assert not (folder / "traces" / "spikes-h2.parquet").exists()
    everything = SpikeLog(model, spiking("poisson"))
    inputs, targets = random_data(model, 6, 7)
    params = oracle.init_params(model, 7)
    simulate_periods(model, protocol, params, inputs, targets, seed_key=(7,), spike_log=everything)
    want = everything.frame("out")
    want = want[(want["sample"] == 4) & want.neuron.isin([1, 2])].reset_index(drop=True)
    pd.testing.assert_frame_equal(spikes, want)
    nothing = spiking("poisson", phases=("feedforward", "update"))
    folder, _ = run_to_folder(model, nothing, tmp_path / "none", 3, seed=7, progress=False)
    assert not list((folder / "traces").glob("spikes-*"))


def constant_output_model():
    """in(4) → h(5, tanh) → out(3, linear), biases: with W_out = 0 the output's x̂ is its bias."""
    data = {
        "name": "constant-output",
        "init": {"variance": 0.05},
        "layers": [
            {"name": "in", "size": 4},
            {"name": "h", "size": 5, "activation": "tanh"},
            {"name": "out", "size": 3, "activation": "linear"},
        ],
        "connections": [
            {"source": "in", "target": "h", "bias": True},
            {"source": "h", "target": "out", "bias": True},
        ],
    }
    return model_from_dict(data, "constant-output.toml")


def test_integrate_and_fire_counts_equal_the_closed_form(tmp_path):
    """The clamped output sends a constant v = x̂ − T = b − T all relaxation long: encoder k of
    N fires floor(k/N + T·r) times in T = 12 ms, r = max_rate·|v|/scale; by hand, with
    max_rate 500 Hz, scale 0.8, b = (0.3, −0.1, 0.05) and T = (1, 0, 0): r·dt = 0.4375,
    0.0625, 0.03125 per step (OFF, OFF, ON), so encoder 0 fires 5, 0, 0 times and encoder 1
    (starting at 1/2) 5, 1, 0 times; encoder 0 of unit 0 at relaxation steps 2, 4, 6, 9, 11."""
    model = constant_output_model()
    protocol = spiking("integrate-and-fire", population=2, relax_ms=12)
    protocol = replace(protocol, batch_size=1)
    base = oracle.init_params(model, 3)
    params = Params(
        [base.W[0], np.zeros_like(base.W[1])], [base.b[0], np.array([0.3, -0.1, 0.05])], base.psi
    )
    inputs, targets = np.full((1, 4), 0.5), np.array([[1.0, 0.0, 0.0]])
    log = SpikeLog(model, protocol)
    simulate_periods(model, protocol, params, inputs, targets, spike_log=log)
    spikes = log.frame("out")
    counts = spikes.groupby(["neuron", "encoder"]).size().to_dict()
    expected = {(0, 0): 5, (0, 1): 5, (1, 1): 1}
    assert counts == expected
    for (neuron, encoder), count in expected.items():  # the closed form, as stated
        v = (0.3, -0.1, 0.05)[neuron] - (1.0, 0.0, 0.0)[neuron]
        assert count == math.floor(encoder / 2 + 0.012 * 500 * abs(v) / 0.8)
    assert set(spikes[spikes.neuron == 0].sign) == {-1} and set(
        spikes[spikes.neuron == 1].sign
    ) == {-1}
    first = 8  # the feedforward phase's steps: the relaxation starts at step 8 of the period
    steps = spikes[(spikes.neuron == 0) & (spikes.encoder == 0)].step.to_numpy() - first
    np.testing.assert_array_equal(steps, [2, 4, 6, 9, 11])
    np.testing.assert_allclose(spikes.t, spikes.step * 1e-3)  # sample 0: t = step·dt


def test_clipped_steps_per_layer_are_the_oracles_saturated_signals(tmp_path):
    """``spikes_clipped_<layer>`` of each minibatch: the unit-steps of the relaxation whose
    signal x ⊙ f' (at the step's start, from the oracle's history) exceeds the layer's scale."""
    model, protocol = dag_model(), spiking("integrate-and-fire")
    folder, result = run_to_folder(model, protocol, tmp_path / "run", 6, seed=7, progress=False)
    inputs, targets = random_data(model, 6, 7)
    params = oracle.init_params(model, 7)
    _, periods = simulate_periods(
        model, protocol, params, inputs, targets, keep_history=True, seed_key=(7,)
    )
    names = [layer.name for layer in model.layers]
    scale = {"h2": 0.5, "out": 0.8}
    first = 8
    for batch, period in enumerate(periods):
        for layer, receivers in {"h2": 1, "out": 2}.items():  # connections it sends on
            index = names.index(layer)
            signal = [
                period.history[k].x[index] * period.history[k].fp[index]
                for k in range(first, first + 12)
            ]
            want = receivers * sum(int(np.sum(np.abs(s) > scale[layer])) for s in signal)
            assert result.metrics[f"spikes_clipped_{layer}"][batch] == want
        assert result.metrics["spikes_clipped_out"][batch] > 0
    on_disk = pd.read_csv(folder / "metrics.csv")
    assert list(on_disk.spikes_clipped_out) == list(result.metrics.spikes_clipped_out)


def test_raster_draws_the_spikes_beside_x(tmp_path):
    model = dag_model()
    folder, _ = run_to_folder(
        model, spiking("poisson"), tmp_path / "run", 3, seed=7, progress=False
    )
    reference = replace(make(protocol_data(relax_ms=12)), record=RecordSpec(variables=("x",)))
    rate, _ = run_to_folder(model, reference, tmp_path / "rate", 3, seed=7, progress=False)
    fig = plot.raster(folder, "out", sample=1, reference=rate)
    top, bottom = fig.axes
    spikes = read_spikes(folder, "out", samples=[1])
    first = spikes[spikes.receiver == spikes.receiver.iloc[0]]
    drawn = sum(len(c.get_offsets()) for c in bottom.collections)
    assert drawn == len(first) > 0
    assert len(top.lines) >= 2 * 3  # x of every unit, and the reference's
    assert any(p.get_facecolor()[:3] != (1, 1, 1) for p in bottom.patches)  # phases shaded
    plot.save(fig, tmp_path / "raster.png")
    empty = plot.raster(folder, "h1", sample=1)
    assert empty.axes[1].texts or empty.axes[0].lines  # h1 sends no spikes: x only, or words


def test_spikes_recorded_without_a_spikes_table_exit_2(tmp_path, capsys):
    bad = tmp_path / "record-spikes.toml"
    bad.write_text(
        'tau = "10 ms"\ndt = "1 ms"\n[phases]\nfeedforward = "1 ms"\nrelaxation = "5 ms"\n'
        '[record]\nvariables = ["x", "spikes"]\n'
    )
    out = tmp_path / "run"
    argv = ["run", str(PAPER_MODEL), str(bad), "--samples", "2", "--out", str(out), "--quiet"]
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "record.variables:" in lines[0], lines
    assert "[spikes]" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["record-spikes.toml"]


def test_read_spikes_of_a_folder_without_traces_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="no recorded spikes"):
        read_spikes(Path(tmp_path) / "nothing", "out")


# --------------------------------------------------------------------------------------------
# docs/spikes.md: the tutorial's files and commands, run as written on a small budget
# --------------------------------------------------------------------------------------------
PAGE = ROOT / "docs" / "spikes.md"


def _tutorial_blocks() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The fenced blocks of the recording section and of the tutorial: (language, code)."""
    text = PAGE.read_text(encoding="utf-8")
    recording = text.split("## Recording the spikes", 1)[1].split("## Tutorial", 1)[0]
    tutorial = text.split("## Tutorial: a spiking relaxation, recorded", 1)[1].split("\n## ")[0]
    blocks = r"```(\w+)\n(.*?)```"
    return re.findall(blocks, recording, flags=re.S), re.findall(blocks, tutorial, flags=re.S)


def test_the_spike_tutorial_runs_as_written(tmp_path):
    fashion_mnist_or_skip()
    (tmp_path / "models").symlink_to(ROOT / "models")
    env = dict(os.environ) | {"PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
    recording, tutorial = _tutorial_blocks()
    printed = ""
    for language, code in tutorial:
        if language == "toml":  # the first line names the file
            (tmp_path / code.splitlines()[0].removeprefix("# ").strip()).write_text(code)
            continue
        assert language == "bash"
        for line in code.strip().splitlines():
            words = shlex.split(line.replace("--train-samples 128", "--train-samples 64"))
            if words[0] == "arsim":
                command = [sys.executable, "-m", "arsim", *words[1:], "--quiet"]
            else:  # an analysis script of the repository; its figure goes to the test's folder
                assert words[:2] == ["python", "analysis/spike_raster.py"], line
                out = words.index("--out") + 1
                words[out] = str(tmp_path / "spike-raster.png")
                command = [sys.executable, str(ROOT / words[1]), *words[2:]]
            done = subprocess.run(
                command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800
            )
            assert done.returncode == 0, f"{line}: {done.stderr}"
            assert "Traceback" not in done.stderr and "Warning" not in done.stderr, done.stderr
            printed += done.stdout
    assert (tmp_path / "spike-raster.png").stat().st_size > 10_000
    table = pd.read_csv(tmp_path / "spike-raster.csv")
    assert list(table.run) == ["spiking", "rate"]
    assert table.angle_deg.notna().all() and (table.angle_deg < 45).all()
    assert table.spikes_clipped_h3[0] >= 0 and pd.isna(table.spikes_clipped_h3[1])
    spikes = read_spikes(tmp_path / "runs" / "spiking", "h3")
    assert len(spikes) > 0 and set(spikes["sample"]) == {0} and set(spikes.receiver) == {"h2"}
    assert set(spikes.neuron) <= set(range(6))
    ((language, code),) = recording  # the recording section's snippet, on the tutorial's folders
    assert language == "python"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr

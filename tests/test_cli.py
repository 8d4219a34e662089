"""The ``arsim run`` command end to end: run folder contents, and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import PAPER_MODEL, PAPER_PROTOCOL, ROOT

from arsim import oracle
from arsim.spec import load_model
from arsim.traces import load as load_traces


def arsim(*args, cwd=ROOT):
    return subprocess.run(
        [sys.executable, "-m", "arsim.cli", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_run_paper_network_writes_a_complete_run_folder(tmp_path):
    """The README's main job: 64 samples of the paper network."""
    out = tmp_path / "run"
    done = arsim("run", PAPER_MODEL, PAPER_PROTOCOL, "--samples", 64, "--out", out, "--quiet")
    assert done.returncode == 0, done.stderr
    config = json.loads((out / "config.json").read_text())
    assert set(config["versions"]) >= {"arsim", "brian2", "numpy"}
    assert config["protocol"]["dt"] == pytest.approx(1e-3) and config["derived"][
        "eta_x"
    ] == pytest.approx(0.1)
    assert config["model"]["layers"][1]["size"] == 300 and config["seed"] == 0
    assert config["codegen_target"] == "numpy"  # 'auto': a short job does not compile
    assert json.loads((out / "status.json").read_text())["status"] == "completed"

    initial, final = (
        np.load(out / "weights" / "initial.npz"),
        np.load(out / "weights" / "final.npz"),
    )
    shapes = {"W0": (300, 784), "W1": (300, 300), "W2": (100, 300), "W3": (10, 100)}
    for key, shape in shapes.items():
        assert initial[key].shape == final[key].shape == shape
        assert final[f"psi{key[1:]}"].shape == shape[::-1]
        np.testing.assert_array_equal(final[f"psi{key[1:]}"], final[key].T)  # exact AR: ψ = Wᵀ
    # initial weights are the model's seeded draw
    model = load_model(PAPER_MODEL)
    np.testing.assert_array_equal(initial["W2"], oracle.init_params(model, seed=0).W[2])
    assert not np.array_equal(initial["W0"], final["W0"])

    traces = load_traces(out)
    assert list(traces.columns) == ["sample", "phase", "t", "layer", "neuron", "variable", "value"]
    assert set(traces.phase) == {"feedforward", "relaxation", "update"}
    assert set(traces["sample"]) == {0, 1} and set(traces.layer) == {
        "input",
        "h1",
        "h2",
        "h3",
        "output",
    }
    one = traces[
        (traces["sample"] == 0)
        & (traces.layer == "h1")
        & (traces.neuron == 0)
        & (traces.variable == "x")
    ]
    assert len(one) == 102 and one.t.iloc[0] == pytest.approx(0.001)
    assert (one.phase == "relaxation").sum() == 100
    # x starts the relaxation at x̂ (recorded at the feedforward step)
    xhat = traces[
        (traces["sample"] == 0)
        & (traces.layer == "h1")
        & (traces.neuron == 0)
        & (traces.variable == "xhat")
    ]
    assert one.value.iloc[0] == pytest.approx(xhat.value.iloc[0])

    metrics = pd.read_csv(out / "metrics.csv")
    assert len(metrics) == 1 and metrics.angle_deg.iloc[0] < 1.0


def _paths_after(tmp_path):
    return sorted(p.name for p in tmp_path.iterdir())


BAD = {
    "syntax": ("protocol", 'tau = "10 ms"\n[phases\n', "TOML syntax error"),
    "unknown-key": (
        "protocol",
        'tau = "10 ms"\ndt = "1 ms"\ncolour = 1\n[phases]\nrelaxation = "1 ms"\n',
        "colour",
    ),
    "negative-tau": (
        "protocol",
        'tau = "-1 ms"\ndt = "1 ms"\n[phases]\nrelaxation = "1 ms"\n',
        "tau",
    ),
    "missing-unit": ("protocol", 'tau = "10 ms"\ndt = 1\n[phases]\nrelaxation = "1 ms"\n', "dt"),
    "unstable-euler": (
        "protocol",
        'tau = "1 ms"\ndt = "2 ms"\n[phases]\nrelaxation = "2 ms"\n',
        "dt",
    ),
    "oscillation-frequency-not-positive": (
        "protocol",
        'tau = "10 ms"\ndt = "1 ms"\n[oscillation]\nfrequency = "0 Hz"\n'
        'relaxation = ["30 deg", "300 deg"]\n',
        "oscillation.frequency",
    ),
    "oscillation-window-longer-than-cycle": (
        "protocol",
        'tau = "10 ms"\ndt = "1 ms"\n[oscillation]\nfrequency = "8 Hz"\n'
        'relaxation = ["30 deg", "420 deg"]\n',
        "oscillation.relaxation",
    ),
    "delay-not-multiple-of-dt": (
        "protocol",
        'tau = "10 ms"\ndt = "1 ms"\n[phases]\nrelaxation = "10 ms"\n'
        '[feedback_delay]\n"h1-h2" = "1.5 ms"\n',
        "feedback_delay.h1-h2",
    ),
    "forward-tau-below-half-a-step": (
        "protocol",
        'tau = "10 ms"\ndt = "1 ms"\n[phases]\nrelaxation = "10 ms"\n'
        '[feedforward]\nkind = "leaky"\ntau = "0.5 ms"\n',
        "feedforward.tau",
    ),
    "onset-outside-the-period": (
        "protocol",
        'tau = "10 ms"\ndt = "1 ms"\n[phases]\nrelaxation = "10 ms"\n'
        '[feedforward]\nkind = "leaky"\ntau = "2 ms"\nrelaxation_onset = "50 ms"\n',
        "feedforward.relaxation_onset",
    ),
    "onset-before-the-stimulus": (
        "protocol",
        'tau = "10 ms"\ndt = "1 ms"\n[phases]\nrelaxation = "10 ms"\n'
        '[feedforward]\nkind = "leaky"\ntau = "2 ms"\nrelaxation_onset = "-2 ms"\n',
        "feedforward.relaxation_onset",
    ),
    "continuous-with-a-plasticity-phase": (
        "protocol",
        'tau = "10 ms"\ndt = "1 ms"\n[oscillation]\nfrequency = "8 Hz"\n'
        'relaxation = ["30 deg", "300 deg"]\nplasticity = "310 deg"\n'
        "[plasticity]\ncontinuous = true\n",
        "plasticity.continuous",
    ),
    "unknown-derivative-variant": (
        "model",
        '[[layers]]\nname = "a"\nsize = 3\n[[layers]]\nname = "b"\nsize = 2\n'
        '[defaults]\nderivative_at = "later"\n',
        "defaults.derivative_at",
    ),
    "sizes-do-not-chain": (
        "model",
        '[[layers]]\nname = "a"\nsize = 3\n[[layers]]\nname = "b"\nsize = 2\n'
        '[[connections]]\nsource = "a"\ntarget = "b"\nshape = [3, 3]\n',
        "connections[0].shape",
    ),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_exits_2_with_one_line_and_no_run_folder(tmp_path, case):
    kind, text, key = BAD[case]
    bad = tmp_path / f"bad-{kind}.toml"
    bad.write_text(text)
    model, protocol = (bad, PAPER_PROTOCOL) if kind == "model" else (PAPER_MODEL, bad)
    out = tmp_path / "run"
    done = arsim("run", model, protocol, "--samples", 2, "--out", out, "--quiet")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and key in lines[0], done.stderr
    assert _paths_after(tmp_path) == [bad.name]  # nothing written, not even a partial folder


def test_existing_output_folder_is_not_overwritten(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    done = arsim("run", PAPER_MODEL, PAPER_PROTOCOL, "--samples", 1, "--out", out)
    assert done.returncode == 2 and "not empty" in done.stderr
    assert (out / "keep.txt").read_text() == "precious" and os.listdir(out) == ["keep.txt"]


def test_diverging_run_exits_3_and_keeps_the_recording(tmp_path):
    model = tmp_path / "huge.toml"
    model.write_text(
        'name = "huge"\n[init]\nvariance = 1e300\n[[layers]]\nname = "input"\nsize = 3\n'
        '[[layers]]\nname = "h1"\nsize = 3\nactivation = "linear"\n'
        '[[layers]]\nname = "output"\nsize = 2\n'
    )
    out = tmp_path / "run"
    done = arsim("run", model, PAPER_PROTOCOL, "--samples", 3, "--out", out, "--quiet")
    assert done.returncode == 3
    # std 1e150: x̂ of h1 ~1e150, output ~1e300, h1's top-down input overflows in the first step
    assert done.stderr.count("\n") == 1, done.stderr
    assert "diverged" in done.stderr and "layer 'h1'" in done.stderr and "sample 0" in done.stderr
    assert json.loads((out / "status.json").read_text())["status"] == "diverged"
    assert len(load_traces(out)) > 0


def test_cli_usage_error_exits_2():
    done = arsim("run", PAPER_MODEL)
    assert done.returncode == 2 and "arsim: error:" in done.stderr


def test_console_script_is_installed():
    assert Path(sys.executable).with_name("arsim").exists() or any(
        (Path(p) / "arsim").exists() for p in os.environ.get("PATH", "").split(os.pathsep)
    )


def test_noise_in_cpp_standalone_is_refused_before_anything_is_written(tmp_path):
    protocol = tmp_path / "noisy.toml"
    protocol.write_text(
        PAPER_PROTOCOL.read_text().replace('name = "paper"', 'name = "noisy"\nnoise = 0.1')
    )
    out = tmp_path / "run"
    done = arsim(
        "run",
        PAPER_MODEL,
        protocol,
        "--mode",
        "synapses",
        "--device",
        "cpp_standalone",
        "--out",
        out,
    )
    assert (
        done.returncode == 2
        and "noise" in done.stderr
        and len(done.stderr.strip().splitlines()) == 1
    )
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["noisy.toml"]


def test_training_refuses_a_mode_it_does_not_run(tmp_path):
    out = tmp_path / "run"
    done = arsim(
        "run",
        PAPER_MODEL,
        PAPER_PROTOCOL,
        "--data",
        "fashion-mnist",
        "--mode",
        "synapses",
        "--out",
        out,
    )
    assert done.returncode == 2 and "dense mode" in done.stderr and not out.exists()


def test_auto_target_compiles_only_for_long_jobs(monkeypatch):
    """``--target auto``: NumPy below ``COMPILE_PAYS_OFF`` presentations, Cython from there
    (NumPy where Cython cannot compile); explicit targets stand for themselves."""
    from brian2.codegen.runtime.cython_rt import CythonCodeObject

    from arsim.modes import COMPILE_PAYS_OFF, resolve_codegen_target

    assert resolve_codegen_target("auto", COMPILE_PAYS_OFF - 1) == "numpy"
    assert resolve_codegen_target("auto", COMPILE_PAYS_OFF) == "cython"
    assert resolve_codegen_target("numpy", 10**7) == "numpy"
    assert resolve_codegen_target("cython", 1) == "cython"
    monkeypatch.setattr(CythonCodeObject, "is_available", classmethod(lambda cls: False))
    assert resolve_codegen_target("auto", 10**7) == "numpy"
    with pytest.raises(ValueError, match="'fortran'"):
        resolve_codegen_target("fortran", 1)


def test_a_variant_the_mode_cannot_run_exits_2_before_writing(tmp_path):
    """A protocol variant the synapses mode does not build (the top-down order; the f'
    variants it builds since the components were composed there)."""
    protocol = tmp_path / "top-down.toml"
    protocol.write_text(PAPER_PROTOCOL.read_text() + '\n[relaxation]\norder = "top-down"\n')
    out = tmp_path / "run"
    done = arsim("run", PAPER_MODEL, protocol, "--samples", 2, "--mode", "synapses", "--out", out)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert str(protocol) in lines[0] and "relaxation.order" in lines[0]
    assert "--mode dense" in lines[0]
    assert _paths_after(tmp_path) == [protocol.name]

"""arsim.plot draws what a tiny real run recorded, and says so when there is too little."""

from __future__ import annotations

import importlib.util
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from conftest import ROOT  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from arsim import plot  # noqa: E402
from arsim.run import run_to_folder  # noqa: E402
from arsim.spec import model_from_dict, protocol_from_dict  # noqa: E402
from arsim.traces import load  # noqa: E402

MODEL = {
    "name": "tiny",
    "layers": [
        {"name": "input", "size": 3},
        {"name": "h1", "size": 12, "activation": "tanh"},
        {"name": "out", "size": 2},
    ],
    "init": {"variance": 0.1},
}
PROTOCOL = {
    "tau": "10 ms",
    "dt": "1 ms",
    "phases": {"feedforward": "2 ms", "relaxation": "20 ms", "update": "3 ms"},
    "learning": {"batch_size": 2},
    "record": {"variables": ["x", "xhat", "fb"], "neurons": "all", "samples": [0, 1]},
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("plot") / "run"
    model, protocol = model_from_dict(MODEL, "tiny.toml"), protocol_from_dict(PROTOCOL, "p.toml")
    folder, result = run_to_folder(model, protocol, out, 6, seed=0, target="numpy", progress=False)
    assert result.diverged is None
    return folder


def test_traces_draw_the_chosen_neurons_with_phases_and_plasticity(run):
    fig = plot.traces(run, sample=1, variables=("x", "xhat"))
    axes = fig.axes
    assert [a.get_ylabel() for a in axes] == ["input", "h1", "out"]
    hidden = axes[1]
    # 12 recorded neurons, at most 8 drawn, two variables each, plus the plasticity line
    curves = [line for line in hidden.get_lines() if line.get_label() != "plasticity"]
    assert len(curves) == 2 * 8
    assert sum(line.get_label() == "plasticity" for line in hidden.get_lines()) == 1
    spans = [p for p in hidden.patches if isinstance(p, Rectangle)]
    assert len(spans) == 3  # feedforward, relaxation, update
    # the relaxation span covers steps 2..22 (ms)
    xs = sorted(round(p.get_x() + p.get_width(), 6) for p in spans)
    assert xs == [2.0, 22.0, 25.0]
    # the traces span the whole 25-step sample
    x_data = curves[0].get_xdata()
    assert x_data.min() == pytest.approx(1.0) and x_data.max() == pytest.approx(25.0)
    plt.close(fig)


def test_traces_of_chosen_neurons_and_fb(run):
    fig = plot.traces(run, sample=0, variables=("fb",), layers=["h1"], neurons=[0, 3])
    (axis,) = fig.axes
    curves = [line for line in axis.get_lines() if line.get_label() != "plasticity"]
    assert sorted(line.get_label() for line in curves) == ["fb 0", "fb 3"]
    plt.close(fig)


def test_traces_draw_a_layers_own_variable(tmp_path):
    """A layer's own ``adapt``, recorded with x, is drawn in a style of its own, and the
    drawn values are the recorded ones."""
    data = MODEL | {"layers": [*MODEL["layers"]]}
    data["layers"][1] = data["layers"][1] | {
        "equations": "dadapt/dt = (0.3*x - adapt) / (40*ms) : 1",
        "drive": "-adapt",
    }
    record = PROTOCOL["record"] | {"variables": ["x", "adapt"]}
    protocol = protocol_from_dict(PROTOCOL | {"record": record}, "p.toml")
    model = model_from_dict(data, "adapt.toml")
    folder, _ = run_to_folder(model, protocol, tmp_path / "run", 2, 0, "numpy", progress=False)
    fig = plot.traces(folder, sample=1, variables=("x", "adapt"), layers=["h1"], neurons=[2])
    (axis,) = fig.axes
    lines = {line.get_label(): line for line in axis.get_lines()}
    assert lines["adapt 2"].get_linestyle() != lines["x 2"].get_linestyle()
    recorded = load(folder, layers=["h1"], variables=["adapt"], samples=[1], neurons=[2])
    assert list(lines["adapt 2"].get_ydata()) == list(recorded.value)
    assert "adapt dashed" in axis.get_title()
    plt.close(fig)


def test_traces_of_an_unrecorded_sample_say_so(run):
    fig = plot.traces(run, sample=5)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == ["no traces of sample 5 (x, xhat)"] and not fig.axes[0].get_lines()
    plt.close(fig)


def test_learning_curves_of_a_random_data_run(run):
    metrics = pd.read_csv(run / "metrics.csv")
    assert len(metrics) == 3  # 6 samples in minibatches of 2
    fig = plot.learning_curves(run)
    left, right = fig.axes
    assert len(left.get_lines()) == 1 and len(left.get_lines()[0].get_xdata()) == 3
    labels = [line.get_label() for line in right.get_lines()]
    assert labels == ["all weights", "W0", "W1"]
    assert list(right.get_lines()[0].get_ydata()) == list(metrics.angle_deg)
    plt.close(fig)


def test_learning_curves_with_one_row_say_too_little_data(run, tmp_path):
    short = tmp_path / "short"
    short.mkdir()
    (short / "config.json").write_text((run / "config.json").read_text())
    pd.read_csv(run / "metrics.csv").head(1).to_csv(short / "metrics.csv", index=False)
    fig = plot.learning_curves(short)
    for axis in fig.axes:
        assert not axis.get_lines()
        assert [t.get_text() for t in axis.texts] == [
            "too little data: 1 metrics row(s); at least 2 are needed"
        ]
    plt.close(fig)


def test_sweep_results_mean_over_seeds_against_a_parameter():
    table = pd.DataFrame(
        {
            "protocol.oscillation.frequency": ["4 Hz", "4 Hz", "8 Hz", "8 Hz", "16 Hz"],
            "status": ["completed"] * 4 + ["failed"],
            "angle_deg": [1.0, 3.0, 5.0, 7.0, None],
        }
    )
    fig = plot.sweep_results(table, "protocol.oscillation.frequency")
    (axis,) = fig.axes
    dots, mean = axis.get_lines()
    assert list(dots.get_xdata()) == [4, 4, 8, 8]
    assert list(mean.get_xdata()) == [4, 8] and list(mean.get_ydata()) == [2.0, 6.0]
    plt.close(fig)
    fig = plot.sweep_results(table.head(2), "protocol.oscillation.frequency")
    assert "too little data: 1 value(s)" in fig.axes[0].texts[0].get_text()
    plt.close(fig)


def _training_folder(folder, angles):
    """A training run folder whose metrics.csv has one ``batch`` row per angle."""
    folder.mkdir(parents=True)
    config = {
        "model": {"name": "paper-mlp", "loss": "mse", "connections": [{}]},
        "protocol": {"name": "paper"},
        "data": {"train_samples": 64},
    }
    (folder / "config.json").write_text(json.dumps(config))
    rows = [
        {"kind": "batch", "samples": 32 * (k + 1), "angle_deg": a} for k, a in enumerate(angles)
    ]
    pd.DataFrame(rows).to_csv(folder / "metrics.csv", index=False)
    return folder


def test_variants_figure_goes_into_the_first_run_and_leaves_out_short_runs(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("vp", ROOT / "analysis" / "variants_plot.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    figures = []
    script.save = lambda fig, out, dpi: figures.append(fig) or out
    short = _training_folder(tmp_path / "short", [40.0])
    long = _training_folder(tmp_path / "long", [30.0, 20.0, 10.0])
    assert script.main([str(short), "--figure", "4"]) == 0
    assert str(short / "figures" / "fig4-variants-angle.png") in capsys.readouterr().out
    for axis in figures[0].axes:
        assert not axis.get_lines()
        assert axis.texts[0].get_text().startswith("too little data: no run has 2 batch rows")
    assert script.main([str(short), str(long), "--figure", "4"]) == 0
    assert "short: 1 batch row(s) in metrics.csv; left out" in capsys.readouterr().out
    linear, logarithmic = figures[1].axes
    (line,) = linear.get_lines()
    assert list(line.get_ydata()) == [30.0, 20.0, 10.0] and not linear.texts
    assert list(line.get_xdata()) == [0.5, 1.0, 1.5]  # samples / training samples
    plt.close("all")

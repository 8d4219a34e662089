"""What a newcomer's path needs: plots of training folders, clear refusals, useful last lines."""

from __future__ import annotations

import argparse
from dataclasses import replace

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from conftest import ROOT, fashion_mnist_or_skip  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from arsim import plot  # noqa: E402
from arsim.cli import add_run_arguments, add_train_arguments, main, run_from_args  # noqa: E402
from arsim.datasets import DatasetError, load_dataset  # noqa: E402
from arsim.spec import SpecError, model_from_dict, protocol_from_dict  # noqa: E402
from arsim.spec.schema import check_name  # noqa: E402
from arsim.train import epoch_order, train  # noqa: E402

TINY_IMAGE_MODEL = {
    "name": "tiny-images",
    "layers": [
        {"name": "input", "size": 784},
        {"name": "h1", "size": 12, "activation": "relu"},
        {"name": "output", "size": 10},
    ],
    "init": {"variance": 0.0025},
}
TINY_PROTOCOL = {
    "tau": "10 ms",
    "dt": "1 ms",
    "phases": {"feedforward": "1 ms", "relaxation": "12 ms", "update": "1 ms"},
    "learning": {"batch_size": 16, "rate": 0.0005},
    "record": {"variables": ["x", "xhat"], "neurons": [0, 1, 2], "samples": [0, 1],
               "epochs": [0]},
}  # fmt: skip


@pytest.fixture(scope="module")
def images():
    fashion_mnist_or_skip()
    return load_dataset("fashion-mnist", train_limit=64, test_limit=100)


@pytest.fixture(scope="module")
def trained(images, tmp_path_factory):
    """Two epochs that record epoch 0: fewer minibatches per epoch than --metrics-every."""
    model = model_from_dict(TINY_IMAGE_MODEL, "tiny-images.toml")
    protocol = protocol_from_dict(TINY_PROTOCOL, "tiny.toml")
    out = tmp_path_factory.mktemp("newcomer") / "run"
    folder, status = train(model, protocol, images, out, 2, metrics_every=50, progress=False)
    assert status["status"] == "completed"
    return model, protocol, folder


# --------------------------------------------------------------------------------------------
# Plots of a training folder
# --------------------------------------------------------------------------------------------
def test_traces_of_a_training_folder_shade_its_phases(trained):
    _, _, folder = trained
    fig = plot.traces(folder, sample=1)
    assert [a.get_ylabel() for a in fig.axes] == ["input", "h1", "output"]
    spans = [p for p in fig.axes[1].patches if isinstance(p, Rectangle)]
    # 1 ms feedforward, 12 ms relaxation, 1 ms update: ends at 1, 13 and 14 ms
    assert sorted(round(p.get_x() + p.get_width(), 6) for p in spans) == [1.0, 13.0, 14.0]
    curves = [line for line in fig.axes[1].get_lines() if line.get_label() != "plasticity"]
    assert len(curves) == 2 * 3  # x and xhat of the 3 recorded neurons
    plt.close(fig)


def test_learning_curves_of_a_short_training_use_the_epoch_rows(trained):
    _, _, folder = trained
    metrics = pd.read_csv(folder / "metrics.csv")
    assert list(metrics.kind) == ["epoch", "epoch"]  # 4 minibatches < --metrics-every 50
    fig = plot.learning_curves(folder)
    left, right = fig.axes
    ar, bp = left.get_lines()
    assert ar.get_xdata().tolist() == [64, 128] and bp.get_xdata().tolist() == [64, 128]
    # the epoch rows' test accuracy is the feedforward sweep of the saved weights (NumPy)
    with np.load(folder / "weights" / "final.npz") as arrays:
        w0, w1 = arrays["W0"], arrays["W1"]
    data = load_dataset("fashion-mnist", train_limit=64, test_limit=100)
    output = np.maximum(data.test_images @ w0.T, 0) @ w1.T
    final = 100 * np.mean(output.argmax(axis=1) == data.test_labels)
    assert ar.get_ydata()[-1] == pytest.approx(final)
    assert right.get_lines()[0].get_ydata().tolist() == pytest.approx(metrics.angle_deg.tolist())
    assert "epoch" in left.get_title()
    assert not any(t.get_text().startswith("too little") for a in fig.axes for t in a.texts)
    plt.close(fig)


def test_sweep_results_on_a_categorical_parameter_pair_means_with_their_values():
    table = pd.DataFrame(
        {
            "status": "completed",
            "model.defaults.feedback": ["transpose", "transpose", "fixed", "fixed", "learned"],
            "angle_deg": [1.0, 3.0, 40.0, 50.0, 30.0],
        }
    )
    fig = plot.sweep_results(table, "model.defaults.feedback", values=["angle_deg"])
    (axis,) = fig.axes
    _, mean = axis.get_lines()
    labels = [t.get_text() for t in axis.get_xticklabels()]
    drawn = dict(zip([labels[int(x)] if not isinstance(x, str) else x for x in mean.get_xdata()],
                     mean.get_ydata(), strict=True))  # fmt: skip
    assert drawn == {"transpose": 2.0, "fixed": 45.0, "learned": 30.0}
    plt.close(fig)


# --------------------------------------------------------------------------------------------
# Epoch rows and the last line
# --------------------------------------------------------------------------------------------
def test_epoch_rows_carry_the_relaxation_error_of_the_last_minibatch(images, tmp_path):
    """Learning rate 0: the epoch's last minibatch relaxes with the initial weights; its
    relative error is recomputed here by 12 Euler steps written out against the exact
    gradient (the output clamped to ∂L/∂x̂ = x̂ − T, linear output, ReLU hidden layer)."""
    model = model_from_dict(TINY_IMAGE_MODEL, "tiny-images.toml")
    still = TINY_PROTOCOL | {"learning": {"batch_size": 16, "rate": 0.0}, "record": {}}
    protocol = protocol_from_dict(still, "still.toml")
    folder, _ = train(model, protocol, images, tmp_path / "run", 1, metrics_every=50,
                      baseline=False, progress=False)  # fmt: skip
    row = pd.read_csv(folder / "metrics.csv").iloc[-1]
    last = epoch_order(model.seed, 0, 64)[48:64]
    x, t = images.train_images[last], images.one_hot(images.train_labels[last])
    with np.load(folder / "weights" / "initial.npz") as arrays:
        w0, w1 = arrays["W0"], arrays["W1"]
    a = x @ w0.T
    hidden, fp = np.maximum(a, 0), (a > 0).astype(float)
    error = hidden @ w1.T - t  # loss_scale 1
    gradient = error @ w1  # ∂L/∂x̂ of the hidden layer
    relaxed = hidden.copy()
    for _ in range(12):  # η_x = dt/τ = 0.1
        relaxed += 0.1 * (-relaxed + error @ w1)
    expected = np.linalg.norm(relaxed - gradient) / np.linalg.norm(gradient)
    assert np.isfinite(row.relax_relerr_h1)
    assert row.relax_relerr_h1 == pytest.approx(expected, rel=1e-9)
    assert fp.any()  # the hidden layer is active


def _train_args(**overrides):
    parser = argparse.ArgumentParser()
    add_run_arguments(parser)
    add_train_arguments(parser)
    args = parser.parse_args(["m", "p"])
    for key, value in overrides.items():
        setattr(args, key, value)
    args.quiet = True
    return args


def test_the_last_line_of_a_training_names_the_angle_to_backprop(images, tmp_path, capsys):
    fashion_mnist_or_skip()
    model = model_from_dict(TINY_IMAGE_MODEL, "tiny-images.toml")
    protocol = protocol_from_dict(TINY_PROTOCOL | {"record": {"samples": []}}, "tiny.toml")
    args = _train_args(data="fashion-mnist", train_samples=32, out=tmp_path / "run")
    assert run_from_args(args, model, protocol) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    angle = pd.read_csv(tmp_path / "run" / "metrics.csv").angle_deg.iloc[-1]
    assert f"angle to backprop {angle:.3g} deg" in line, line


# --------------------------------------------------------------------------------------------
# Clear refusals
# --------------------------------------------------------------------------------------------
def test_resume_of_a_random_data_run_is_one_line_and_exit_2(tmp_path, capsys):
    model, protocol = ROOT / "models" / "paper-mlp.toml", ROOT / "protocols" / "paper.toml"
    out = tmp_path / "random"
    assert main(["run", str(model), str(protocol), "--samples", "2", "--out", str(out),
                 "--quiet", "--target", "numpy"]) == 0  # fmt: skip
    capsys.readouterr()
    status = main(["run", str(model), str(protocol), "--resume", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1, err
    assert str(out) in err and "random data" in err and "Traceback" not in err


def test_a_misspelt_required_key_is_named():
    data = dict(TINY_PROTOCOL)
    data["phases"] = {"feedforward": "1 ms", "relaxaton": "12 ms", "update": "1 ms"}
    with pytest.raises(SpecError) as error:
        protocol_from_dict(data, "typo.toml")
    assert "phases.relaxation" in str(error.value)
    assert "did you mean" in str(error.value) and "'relaxaton'" in str(error.value)
    data = {key: value for key, value in TINY_PROTOCOL.items() if key != "phases"}
    data["phses"] = TINY_PROTOCOL["phases"]
    with pytest.raises(SpecError, match=r"phases: missing .*did you mean 'phses'"):
        protocol_from_dict(data, "typo.toml")


def test_missing_mnist_tells_a_command_line_user_about_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ARSIM_DATA_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError) as error:
        load_dataset("mnist", tmp_path / "empty")
    assert "--data-dir" in str(error.value)


@pytest.mark.parametrize("name", ["modèle", "τ-sweep", "模型_2", "x" * 100, "a.b-c_d"])
def test_names_of_unicode_letters_and_digits_are_accepted(name):
    assert check_name(name, "f.toml", "name") == name
    protocol = protocol_from_dict(TINY_PROTOCOL | {"name": name}, "f.toml")
    assert protocol.name == name


@pytest.mark.parametrize(
    "name", ["a/b", "a\\b", "a b", "tab\there", "nul\x00", ".hidden", "x" * 101, "", "a:b"]
)
def test_names_with_separators_control_characters_or_a_leading_dot_are_refused(name):
    with pytest.raises(SpecError) as error:
        check_name(name, "f.toml", "name")
    message = str(error.value)
    assert "Unicode letters, digits" in message and "leading dot" in message
    assert "100 characters" in message and "\n" not in message


def test_a_single_precision_chunk_warns_nothing():
    """Brian2 compares float32 variables with 1e50 after each run; NumPy's cast of that
    constant must not print ``RuntimeWarning: overflow encountered in cast``."""
    import warnings

    from arsim.dense import DenseNetwork
    from arsim.oracle import init_params

    model = model_from_dict(TINY_IMAGE_MODEL, "tiny-images.toml")
    protocol = protocol_from_dict(TINY_PROTOCOL | {"precision": "single"}, "single.toml")
    network = DenseNetwork(model, protocol, init_params(model), record=False)
    rng = np.random.default_rng(0)
    inputs, targets = rng.random((16, 784)), np.eye(10)[rng.integers(0, 10, 16)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        network.run_chunk(inputs, targets)
    assert network.groups[1].variables["x"].get_value().dtype == np.float32
    assert [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)] == []


# --------------------------------------------------------------------------------------------
# An oscillation whose period is no whole number of milliseconds
# --------------------------------------------------------------------------------------------
ALPHA = {
    "tau": "10 ms",
    "oscillation": {
        "frequency": "12 Hz",
        "steps_per_cycle": 250,
        "relaxation": ["30 deg", "330 deg"],
    },
    "learning": {"batch_size": 4},
}


def test_steps_per_cycle_derives_dt_and_the_phases():
    from arsim.spec.schedule import Schedule

    protocol = protocol_from_dict(ALPHA, "alpha.toml")
    assert protocol.dt == pytest.approx(1 / 3000, rel=1e-12)  # 83.33 ms / 250
    assert protocol.oscillation.steps_per_cycle == 250
    steps = Schedule(None, protocol).phase_steps
    # 30 deg of 250 steps is step 20.8 → 21; 330 deg is 229.2 → 229 (nearest step)
    assert steps == {"feedforward": 21, "relaxation": 229 - 21, "update": 250 - 229}


def test_steps_per_cycle_and_dt_together_are_refused_and_the_refusal_of_dt_names_it():
    with pytest.raises(SpecError, match=r"alpha\.toml: dt: oscillation\.steps_per_cycle sets"):
        protocol_from_dict(ALPHA | {"dt": "1 ms"}, "alpha.toml")
    plain = ALPHA | {"dt": "1 ms", "oscillation": ALPHA["oscillation"] | {}}
    del plain["oscillation"]["steps_per_cycle"]
    with pytest.raises(SpecError, match=r"not a multiple of dt = 1 ms; give oscillation\.steps_"):
        protocol_from_dict(plain, "alpha.toml")
    for bad in (1, 2.5, "250"):
        with pytest.raises(SpecError, match=r"oscillation\.steps_per_cycle: expected"):
            protocol_from_dict(ALPHA | {"oscillation": ALPHA["oscillation"] | {
                "steps_per_cycle": bad}}, "alpha.toml")  # fmt: skip


# --------------------------------------------------------------------------------------------
# The progress bar and a stop
# --------------------------------------------------------------------------------------------
class _Bar:
    """A progress bar that remembers every position it was moved to."""

    def __init__(self):
        self.n, self.shown = 0, []

    def update(self, step):
        self.n += step
        self.shown.append(self.n)


def test_the_progress_bar_never_shows_more_than_a_stop_keeps(monkeypatch):
    """A chunk of 8 minibatches of 16 is cut by a stop just after its simulated time was
    reported 75 % done: 6 sample periods have passed, and the 6th minibatch's update lands in
    the 7th period, so 5 minibatches are complete and kept. The bar must end at the 80 samples
    kept and never show more."""
    import signal

    from arsim import loop as chunk_loop
    from arsim.dense import DenseNetwork
    from arsim.oracle import init_params

    model = model_from_dict(TINY_IMAGE_MODEL, "tiny-images.toml")
    protocol = protocol_from_dict(TINY_PROTOCOL | {"record": {"samples": []}}, "tiny.toml")
    params = init_params(model)
    network = DenseNetwork(model, protocol, params, record=False, batches_per_chunk=8)
    real_run = network.run_chunk
    stop = {"now": False}

    def cut_run(inputs, targets, *upcoming, report=None):
        result = real_run(inputs, targets, *upcoming)
        report(0.75)  # 6 of 8 minibatches' time, as a report would say just before the cut
        stop["now"] = True
        return replace(
            result,
            batch_params=result.batch_params[:5],
            batch_signals=result.batch_signals[:5],
            complete=False,
        )

    monkeypatch.setattr(network, "run_chunk", cut_run)
    monkeypatch.setattr(
        chunk_loop.stops, "requested", lambda: signal.SIGINT if stop["now"] else None
    )
    rng = np.random.default_rng(0)
    inputs, targets = rng.random((256, 784)), np.eye(10)[rng.integers(0, 10, 256)]
    bar = _Bar()
    loop = chunk_loop.ChunkLoop(network, model, protocol, inputs, targets, params, bar=bar)
    kept = list(loop)
    assert len(kept) == 5 and loop.samples_done == 80 and loop.interrupted == signal.SIGINT
    assert max(bar.shown) == 80 and bar.n == 80, bar.shown


# --------------------------------------------------------------------------------------------
# Phase labels of a jittered boundary
# --------------------------------------------------------------------------------------------
def test_trace_phase_labels_follow_each_minibatchs_jittered_boundary(tmp_path):
    """Each minibatch's relaxation starts at its own step; in the traces, x of a hidden layer
    stays at x̂ until it relaxes, so the first step whose x differs from x̂ is the first step
    the labels must call relaxation, in every sample, in memory and on disk."""
    from arsim import traces as trace_files
    from arsim.run import random_data, run_to_folder, simulate

    model = model_from_dict(
        TINY_IMAGE_MODEL | {"layers": [{"name": "input", "size": 5},
                                       {"name": "h1", "size": 6, "activation": "tanh"},
                                       {"name": "output", "size": 3}]},
        "tiny.toml",
    )  # fmt: skip
    data = {
        "tau": "10 ms",
        "dt": "1 ms",
        "phases": {"feedforward": "5 ms", "relaxation": "20 ms", "update": "1 ms",
                   "jitter": "4 ms"},
        "learning": {"batch_size": 2},
        "record": {"variables": ["x", "xhat"], "layers": ["h1"], "neurons": "all",
                   "samples": "all"},
    }  # fmt: skip
    protocol = protocol_from_dict(data, "jittered.toml")
    folder, result = run_to_folder(
        model, protocol, tmp_path / "run", 16, seed=0, target="numpy", progress=False
    )
    inputs, targets = random_data(model, 16, 0)
    in_memory = simulate(model, protocol, inputs, targets, seed=0).traces
    for table in (in_memory, trace_files.load(folder)):
        wide = table.pivot_table(
            index=["sample", "t"], columns="variable", values="value", aggfunc="sum",
            observed=True,
        )  # fmt: skip
        phases = table[table.variable == "x"].groupby(["sample", "t"], observed=True).phase.first()
        starts = set()
        for sample in range(16):
            moved = wide.loc[sample]
            first_moved = moved.index[~np.isclose(moved["x"], moved["xhat"], rtol=0, atol=0)][0]
            labels = phases.loc[sample]
            first_relaxing = labels.index[labels == "relaxation"][0]
            assert first_relaxing == first_moved, sample
            starts.add(round(first_relaxing * 1e3))
        assert len(starts) > 1  # the boundary did move between minibatches
    relaxing = trace_files.load(folder, phases=["relaxation"])
    assert set(relaxing.phase) == {"relaxation"}
    assert len(relaxing) == (table.phase == "relaxation").sum()


# --------------------------------------------------------------------------------------------
# Leaky forward dynamics with relaxation until converged
# --------------------------------------------------------------------------------------------
LEAKY_TOLERANT = {
    "tau": "10 ms",
    "dt": "1 ms",
    "phases": {"feedforward": "8 ms", "relaxation": "40 ms", "update": "1 ms"},
    "feedforward": {"kind": "leaky", "tau": "2 ms"},
    "learning": {"batch_size": 3, "rate": 0.05},
    "record": {"variables": ["x", "fb"], "layers": ["h1"], "neurons": "all",
               "samples": "all", "phases": ["relaxation"]},
}  # fmt: skip


def _leaky_model():
    return model_from_dict(
        {
            "name": "leaky",
            "layers": [
                {"name": "input", "size": 4},
                {"name": "h1", "size": 5, "activation": "tanh"},
                {"name": "output", "size": 2},
            ],
            "init": {"variance": 0.3},
        },
        "leaky.toml",
    )


def test_leaky_forward_dynamics_relax_until_converged():
    """Every sample stops relaxing once its drive |−x + fb| is below the tolerance in every
    hidden neuron, read from its own traces (the values at the end of relaxation step k give
    the drive that step k + 1 checks: k + 1 steps are taken); a tolerance nothing reaches
    changes nothing against the full relaxation."""
    from arsim.run import random_data, simulate

    model = _leaky_model()
    tolerance = 0.02
    tolerant = protocol_from_dict(
        LEAKY_TOLERANT | {"phases": LEAKY_TOLERANT["phases"] | {"tolerance": tolerance}},
        "tolerant.toml",
    )
    inputs, targets = random_data(model, 9, 0)
    result = simulate(model, tolerant, inputs, targets, seed=0)
    traces = result.traces
    wide = traces.pivot_table(index=["sample", "t"], columns=["variable", "neuron"],
                              values="value", observed=True)  # fmt: skip
    for sample in range(9):
        rows = wide.loc[sample]
        drive = (rows["fb"] - rows["x"]).abs().max(axis=1).to_numpy()
        first = int(np.flatnonzero(drive < tolerance)[0])
        assert result.relaxation_steps[sample] == first + 1, sample
        x = rows["x"].to_numpy()
        assert np.array_equal(x[first + 1], x[-1])  # frozen from there on
    assert len(set(result.relaxation_steps)) > 1
    never = protocol_from_dict(
        LEAKY_TOLERANT | {"phases": LEAKY_TOLERANT["phases"] | {"tolerance": 1e-300}},
        "never.toml",
    )
    full = protocol_from_dict(LEAKY_TOLERANT, "full.toml")
    a = simulate(model, never, inputs, targets, seed=0)
    b = simulate(model, full, inputs, targets, seed=0)
    for w_never, w_full in zip(a.params.W, b.params.W, strict=True):
        np.testing.assert_array_equal(w_never, w_full)
    assert (a.relaxation_steps == 40).all()


@pytest.mark.parametrize("notebook", ["first-simulation", "timing-hypothesis"])
def test_rendered_tutorials_show_no_warning_and_no_build_machine_path(notebook):
    import json

    cells = json.loads((ROOT / "docs" / "tutorials" / f"{notebook}.ipynb").read_text())["cells"]
    texts = [
        "".join(output.get("text", ""))
        for cell in cells
        for output in cell.get("outputs", [])
    ]  # fmt: skip
    assert texts, "the tutorial is rendered with its outputs"
    for text in texts:
        assert "Warning" not in text and "site-packages" not in text, text

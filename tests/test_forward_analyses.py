"""The shipped forward-dynamics protocols give their intended steps; the unfrozen-variants table
reports the mean and spread of hand-made run folders."""

from __future__ import annotations

import importlib.util
import json

import pandas as pd
import pytest
from conftest import ROOT

from arsim.spec import load_protocol, read_toml
from arsim.spec.schedule import Schedule


def load_script(name: str):
    """An analysis script as a module (the analysis folder is not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "analysis" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "name, steps, eta_x, tau_f, continuous, jitter",
    [
        ("leabra-quarters", (75, 25, 1), 0.4, 0.005, None, 0),
        ("guerguiev-segregated", (50, 50, 1), 0.2, 0.005, (80, 100), 10),
        ("paper-leaky", (10, 100, 1), 0.1, 0.002, None, 0),
    ],
)
def test_shipped_protocols_give_their_steps(name, steps, eta_x, tau_f, continuous, jitter):
    protocol = load_protocol(ROOT / "protocols" / f"{name}.toml")
    schedule = Schedule(None, protocol)
    assert tuple(schedule.phase_steps.values()) == steps
    assert schedule.eta_x == pytest.approx(eta_x)
    assert protocol.forward.leaky and protocol.forward.tau == pytest.approx(tau_f)
    assert schedule.continuous_steps == continuous
    assert schedule.jitter_steps == jitter
    for shift in range(-jitter, jitter + 1):  # the plasticity window stays put in the period
        assert schedule.shifted(shift).continuous_steps == continuous
    paper = load_protocol(ROOT / "protocols" / "paper.toml")
    for key in ("learning_rate", "feedback_learning_rate", "batch_size", "batch_reduction"):
        assert getattr(protocol, key) == getattr(paper, key)


def make_run(folder, seed, ar, bp, angle, derivative_at="stored", continuous=False):
    """A finished run folder with one epoch row of known numbers."""
    folder.mkdir(parents=True)
    connection = {"derivative_at": derivative_at, "update_uses": "stored"}
    config = {
        "seed": seed,
        "model": {
            "connections": [connection, connection],
            "layers": [{"activation": a} for a in ("linear", "relu", "linear")],
        },
        "protocol": {"plasticity": {"continuous": continuous}, "forward": {"kind": "instant"}},
    }
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "status.json").write_text(json.dumps({"status": "completed", "message": None}))
    rows = [
        {"kind": "batch", "ar_test_acc": 0.1, "bp_test_acc": 0.1, "angle_deg": 80.0},
        {"kind": "epoch", "ar_test_acc": ar, "bp_test_acc": bp, "angle_deg": angle},
    ]
    pd.DataFrame(rows).to_csv(folder / "metrics.csv", index=False)


def test_unfrozen_variants_table_reports_mean_and_spread(tmp_path):
    script = load_script("unfrozen_variants")
    make_run(tmp_path / "sweep" / "points" / "a", 0, ar=0.70, bp=0.71, angle=10.0)
    make_run(tmp_path / "sweep" / "points" / "b", 1, ar=0.72, bp=0.74, angle=14.0)
    out = tmp_path / "table.md"
    assert script.main([str(tmp_path / "sweep"), "--out", str(out)]) == 0
    table = pd.read_csv(out.with_suffix(".csv"))
    assert list(table.variant) == ["exact AR"] and table.runs[0] == 2
    row = table.iloc[0]
    assert row.ar_mean == pytest.approx(71.0) and row.ar_std == pytest.approx(2**0.5)
    assert (row.ar_min, row.ar_max) == pytest.approx((70.0, 72.0))
    assert row.bp_mean == pytest.approx(72.5)
    assert row.diff_mean == pytest.approx(-1.5) and row.diff_std == pytest.approx(0.5**0.5)
    assert row.angle_mean == pytest.approx(12.0) and row.angle_std == pytest.approx(8**0.5)
    text = out.read_text()
    assert "71.00 ± 1.41 [70.00, 72.00]" in text and "cannot be judged" in text


def test_unfrozen_variants_table_counts_runs_of_an_earlier_table(tmp_path, capsys):
    """Runs whose folders are gone count through the earlier table's -runs.csv; a folder's run
    replaces the same setting, variant and seed; a file that is not a runs table is refused."""
    script = load_script("unfrozen_variants")
    make_run(tmp_path / "first" / "a", 0, ar=0.70, bp=0.71, angle=10.0)
    make_run(tmp_path / "first" / "b", 1, ar=0.90, bp=0.91, angle=30.0)
    earlier = tmp_path / "earlier.md"
    assert script.main([str(tmp_path / "first"), "--out", str(earlier)]) == 0
    earlier_runs = tmp_path / "earlier-runs.csv"
    make_run(tmp_path / "second" / "b", 1, ar=0.72, bp=0.74, angle=14.0)  # seed 1 rerun
    make_run(tmp_path / "second" / "c", 2, ar=0.74, bp=0.75, angle=12.0)
    out = tmp_path / "table.md"
    argv = [str(tmp_path / "second"), "--runs", str(earlier_runs), "--out", str(out)]
    assert script.main(argv) == 0
    row = pd.read_csv(out.with_suffix(".csv")).iloc[0]
    assert row.runs == 3 and row.ar_mean == pytest.approx(72.0)  # 70, 72 (not 90), 74
    assert row.angle_mean == pytest.approx(12.0)
    assert sorted(pd.read_csv(tmp_path / "table-runs.csv").seed) == [0, 1, 2]
    assert script.main(["--runs", str(earlier_runs), "--out", str(tmp_path / "t2.md")]) == 0
    assert pd.read_csv(tmp_path / "t2.csv").iloc[0].ar_mean == pytest.approx(80.0)
    bad = tmp_path / "bad.csv"
    bad.write_text("setting,seed\nx,0\n")
    capsys.readouterr()
    assert script.main(["--runs", str(bad), "--out", str(tmp_path / "t3.md")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "bad.csv: not a runs table" in error
    assert "missing variant, status" in error and not (tmp_path / "t3.md").exists()


def test_unfrozen_variants_verdict(tmp_path):
    script = load_script("unfrozen_variants")
    make_run(tmp_path / "exact", 0, ar=0.70, bp=0.71, angle=10.0)
    make_run(tmp_path / "current", 0, ar=0.695, bp=0.71, angle=12.0, derivative_at="current")
    make_run(tmp_path / "continuous", 0, ar=0.68, bp=0.71, angle=15.0, continuous=True)
    folders = [tmp_path / "exact", tmp_path / "current"]
    assert script.main([*map(str, folders), "--out", str(tmp_path / "one.md")]) == 0
    assert "HOLDS" in (tmp_path / "one.md").read_text()
    folders.append(tmp_path / "continuous")
    assert script.main([*map(str, folders), "--out", str(tmp_path / "two.md")]) == 0
    table = pd.read_csv(tmp_path / "two.csv")
    assert list(table.variant) == ["exact AR", "f' at current", "continuous plasticity"]
    assert table.delta_to_exact_pp.tolist() == pytest.approx([0.0, -0.5, -2.0])
    assert "DOES NOT HOLD" in (tmp_path / "two.md").read_text()


def test_unfrozen_variants_table_counts_failed_and_unrun_sweep_points(tmp_path):
    script = load_script("unfrozen_variants")
    sweep = tmp_path / "sweep"
    make_run(sweep / "points" / "exact", 0, ar=0.70, bp=0.71, angle=10.0)
    (sweep / "sweep.json").write_text("{}")
    model = read_toml(ROOT / "models" / "paper-mlp.toml")
    protocol = read_toml(ROOT / "protocols" / "paper.toml")
    for point in ("exact", "upper", "current"):  # every point of a sweep has its payload
        model["defaults"]["derivative_at"] = "stored" if point == "exact" else point
        payload = {"id": point, "seed": 0, "model": model, "protocol": protocol}
        (sweep / "points" / f"{point}.json").write_text(json.dumps(payload))
    (sweep / "points" / "upper.outcome.json").write_text(json.dumps({"message": "it broke"}))
    assert script.main([str(sweep), "--out", str(tmp_path / "t.md")]) == 0
    table = pd.read_csv(tmp_path / "t.csv")
    assert list(table.variant) == ["exact AR", "f' at current", "f' at upper"]
    assert table.failed.tolist() == [0, 0, 1] and table.not_run.tolist() == [0, 1, 0]
    assert table.completed.tolist() == [1, 0, 0]
    text = (tmp_path / "t.md").read_text()
    assert "f' at upper, seed 0: failed: it broke" in text and "DOES NOT HOLD" in text
    # a rerun of the failed point in another folder replaces it: counted once, as completed
    make_run(tmp_path / "rerun", 0, ar=0.10, bp=0.71, angle=80.0, derivative_at="upper")
    assert script.main([str(sweep), str(tmp_path / "rerun"), "--out", str(tmp_path / "u.md")]) == 0
    table = pd.read_csv(tmp_path / "u.csv").set_index("variant")
    assert table.loc["f' at upper", ["runs", "completed", "failed"]].tolist() == [1, 1, 0]
    assert table.loc["f' at upper", "ar_mean"] == pytest.approx(10.0)


def test_forward_residual_figure_follows_the_euler_binomial_tail(tmp_path):
    """The analysis script's Brian2 residuals equal the Euler tail Σ_{j<k} C(n,j) η^j (1−η)^{n−j}
    of every layer at every step to 1e-9, and approach the dt → 0 curve as η_f shrinks."""
    script = load_script("forward_residual")
    script.main(
        ["--sizes", "6,5,4,3", "--duration", "20 ms", "--samples", "3", "--out", str(tmp_path)]
    )
    table = pd.read_csv(tmp_path / "forward-residual.csv")
    assert set(table.hops) == {1, 2, 3} and len(table) == 3 * 20
    assert (table.simulated - table.euler).abs().max() < 1e-9
    assert table.simulated.iloc[0] == pytest.approx(0.8)  # one step of η_f = 0.2 from rest
    assert (tmp_path / "forward-residual.png").stat().st_size > 10_000


def make_setting_run(folder, seed, ar, activation, data, **departures):
    """A finished run of the follow-up paper's setting with connection ``departures`` (and
    ``learning_rate``, ``derivative``) and one epoch row."""
    make_run(folder, seed, ar=ar, bp=0.75, angle=5.0)
    config = json.loads((folder / "config.json").read_text())
    rate = departures.pop("learning_rate", 0.0005)
    for connection in config["model"]["connections"]:
        connection.update(departures)
    config["model"]["layers"][1]["activation"] = activation
    config["protocol"] |= {
        "learning_rate": rate,
        "relaxation": 0.1,
        "dt": 0.001,
        "relaxation_order": "top-down",
        "relaxation_input": "relaxes",
    }
    config |= {"data": {"name": data, "train_samples": 4000}, "epochs": 3}
    (folder / "config.json").write_text(json.dumps(config))


def test_unfrozen_variants_verdict_per_setting_and_variant(tmp_path):
    """Settings apart, the authors' flags named, the rate / K run recognised, a verdict per
    variant written into the marked block of a page."""
    script = load_script("unfrozen_variants")
    runs = tmp_path / "runs"
    for activation, drop in (("tanh", 0.002), ("relu", 0.30)):
        make_setting_run(runs / f"{activation}-exact", 0, 0.75, activation, "mnist")
        make_setting_run(
            runs / f"{activation}-current",
            0,
            0.75 - drop,
            activation,
            "mnist",
            derivative_at="current",
        )
        make_setting_run(
            runs / f"{activation}-slow", 0, 0.40, activation, "mnist", learning_rate=5e-6
        )
    page = tmp_path / "page.md"
    page.write_text("before\n<!-- unfrozen-verdict -->\nold\n<!-- /unfrozen-verdict -->\nafter\n")
    out = tmp_path / "t.md"
    assert script.main([str(runs), "--out", str(out), "--docs", str(page)]) == 0
    table = pd.read_csv(out.with_suffix(".csv"))
    tanh = table[table.setting.str.startswith("tanh, MNIST 4,000 images × 3 epochs, top-down")]
    assert list(tanh.variant) == ["exact AR", "f' at current", "learning rate / K"]
    assert list(tanh.authors_flags) == ["–", "use_fderiv_x_update", "dynamical_weight_update"]
    assert tanh.delta_to_exact_pp.tolist() == pytest.approx([0.0, -0.2, -35.0])
    text = page.read_text()
    assert text.startswith("before\n<!-- unfrozen-verdict -->\n") and "old" not in text
    line = next(x for x in text.splitlines() if x.startswith("- **f' at current**"))
    assert "keeps performance in tanh, MNIST" in line and "-0.20 pp (1 seed)" in line
    assert "loses it in relu, MNIST" in line and "-30.00 pp" in line
    slow = next(x for x in text.splitlines() if x.startswith("- **learning rate / K**"))
    assert "keeps it in no setting" in slow


def test_unfrozen_curves_draw_one_line_per_variant_of_the_seed(tmp_path):
    script = load_script("unfrozen_curves")
    for name, seed, departures in (("exact", 0, {}), ("upper", 0, {"derivative_at": "upper"})):
        folder = tmp_path / "runs" / name
        make_setting_run(folder, seed, 0.7, "tanh", "fashion-mnist", **departures)
        rows = [
            {"kind": "batch", "samples": 3200, "ar_test_acc": 0.6, "bp_test_acc": 0.61},
            {"kind": "epoch", "samples": 10000, "ar_test_acc": 0.7, "bp_test_acc": 0.71},
        ]
        pd.DataFrame([r | {"angle_deg": 5.0} for r in rows]).to_csv(folder / "metrics.csv")
    make_setting_run(tmp_path / "runs" / "other-seed", 1, 0.7, "tanh", "fashion-mnist")
    out = tmp_path / "curves.png"
    assert script.main([str(tmp_path / "runs"), "--out", str(out)]) == 0
    table = pd.read_csv(out.with_suffix(".csv"))
    assert sorted(set(table.variant)) == ["exact AR", "f' at upper"]
    assert table.groupby("variant").samples.apply(list).tolist() == [[3200, 10000]] * 2
    assert out.stat().st_size > 10_000

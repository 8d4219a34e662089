"""Leaky forward dynamics, overlapping phases and the unfrozen-feedforward variants: the dense
mode against the step-by-step period oracle, closed forms, and the declarations."""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest
from conftest import every_feature_model as shared_every_feature_model
from conftest import make_model, random_batch, run_brian

from arsim import oracle
from arsim.metrics import angle_degrees, relative_error
from arsim.modes import ExecutionError, check_execution
from arsim.params import phase_shift
from arsim.period_oracle import simulate_periods
from arsim.spec import RecordSpec, SpecError, model_from_dict, protocol_from_dict
from arsim.spec.schedule import Schedule

RECORD_ALL = RecordSpec(variables=("x", "xhat", "fp"), neurons=None, samples=None)


def protocol_data(
    feedforward_ms=8, relax_ms=10, update_ms=1, batch_size=3, rate=0.05, **tables
) -> dict:
    """A protocol with dt = 1 ms, τ = 10 ms, and the given extra tables."""
    data = {
        "tau": "10 ms",
        "dt": "1 ms",
        "phases": {
            "feedforward": f"{feedforward_ms} ms",
            "relaxation": f"{relax_ms} ms",
            "update": f"{update_ms} ms",
        },
        "learning": {"rate": rate, "batch_size": batch_size, "feedback_rate": rate * 0.6},
    }
    data.update(tables)
    return data


def make(data: dict):
    return replace(protocol_from_dict(data, "leaky.toml"), record=RECORD_ALL)


LEAKY = {"kind": "leaky", "tau": "2 ms"}


def every_feature_model(**connection_settings):
    """The every-feature network with f' on every connection into a target that has one."""
    return shared_every_feature_model(output_derivative=True, **connection_settings)


def dag_model(**defaults):
    """Two inputs, a skip connection and a fan-in: a → h1 → h2 → out, b → h2, h1 → out."""
    data = {
        "name": "dag",
        "init": {"variance": 0.05},
        "layers": [
            {"name": "a", "size": 4},
            {"name": "b", "size": 3},
            {"name": "h1", "size": 5, "activation": "tanh"},
            {"name": "h2", "size": 4, "activation": "relu"},
            {"name": "out", "size": 3, "activation": "linear"},
        ],
        "connections": [
            {"source": "a", "target": "h1", "bias": True},
            {"source": "h1", "target": "h2"},
            {"source": "b", "target": "h2", "bias": True},
            {"source": "h2", "target": "out"},
            {"source": "h1", "target": "out"},
        ],
        "defaults": defaults,
    }
    return model_from_dict(data, "dag.toml")


def assert_dense_matches_period_oracle(
    model, protocol, n_samples, seed=7, tolerance=1e-10, mode="dense", device="runtime"
):
    """Traces (x, x̂, f' of every neuron at every step) and weights of ``mode`` (the dense
    mode by default) on ``device`` equal the period oracle's to ``tolerance``; the weights
    have moved from their start by more than that."""
    params = oracle.init_params(model, seed=seed)
    inputs, targets = random_batch(model, n_samples, seed=seed)
    result, _ = run_brian(model, protocol, inputs, targets, params, mode=mode, device=device)
    assert result.diverged is None
    expected, periods = simulate_periods(
        model, protocol, params, inputs, targets, keep_history=True
    )
    for c in range(len(model.connections)):
        assert np.abs(expected.W[c] - params.W[c]).max() > 1e3 * tolerance
        for name in ("W", "b", "psi"):
            want = getattr(expected, name)[c]
            if want is not None:
                got = getattr(result.params, name)[c]
                np.testing.assert_allclose(got, want, rtol=0, atol=tolerance, err_msg=f"{name}{c}")
    traces = result.traces
    period, batch = Schedule(None, protocol).sample_steps, protocol.batch_size
    step = np.rint(traces.t.to_numpy() / protocol.dt).astype(int) - 1
    sample = traces["sample"].to_numpy()
    k = step - sample * period
    layers = [layer.name for layer in model.layers]
    compared = 0
    for (layer, variable), rows in traces.groupby(["layer", "variable"], observed=True):
        index = rows.index.to_numpy()
        values = np.array(
            [
                getattr(periods[s // batch].history[kk + 1], variable)[layers.index(layer)][
                    s % batch, n
                ]
                for s, kk, n in zip(sample[index], k[index], rows.neuron.to_numpy(), strict=True)
            ]
        )
        scale = max(np.abs(values).max(), 1.0)
        np.testing.assert_allclose(
            rows.value.to_numpy(), values, rtol=0, atol=tolerance * scale, err_msg=layer + variable
        )
        compared += len(rows)
    assert compared > 100
    return params, result, expected


CASES = {
    "leaky": dict(feedforward=LEAKY),
    "overlap": dict(feedforward=LEAKY | {"relaxation_onset": "4 ms"}),
    "per-layer-onset-and-tau": dict(
        feedforward=LEAKY
        | {"layer_tau": {"h2": "3 ms"}, "layer_onset": {"h1": "6 ms", "h3": "2 ms"}}
    ),
    "carry-over": dict(feedforward=LEAKY | {"reset": False}),
    "error-unit": dict(feedforward=LEAKY | {"error_tau": "3 ms", "reset": False}),
    "continuous": dict(feedforward=LEAKY, plasticity={"continuous": True}),
    "continuous-window": dict(
        feedforward=LEAKY | {"relaxation_onset": "5 ms"},
        plasticity={"continuous": True, "window": ["4 ms", "9 ms"]},
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_leaky_forward_dynamics_match_the_period_oracle(case):
    model = every_feature_model()
    protocol = make(protocol_data(**CASES[case]))
    assert_dense_matches_period_oracle(model, protocol, n_samples=6)


@pytest.mark.parametrize("case", ["leaky", "overlap", "per-layer-onset-and-tau"])
def test_synapses_mode_runs_leaky_forward_dynamics_like_the_oracle(case):
    """The synapses mode: W and ψ as Brian2 Synapses, the sweep a summed variable every step."""
    model = every_feature_model()
    protocol = make(protocol_data(**CASES[case]))
    assert_dense_matches_period_oracle(model, protocol, n_samples=6, mode="synapses")


@pytest.mark.parametrize(
    "settings",
    [
        {"derivative_at": "current"},
        {"derivative_at": "upper"},
        {"update_uses": "current"},
        {"derivative_at": "current", "update_uses": "current"},
    ],
    ids=["current", "upper", "update-current", "combined"],
)
@pytest.mark.parametrize("forward", ["instant", "leaky"])
def test_unfrozen_variants_match_the_period_oracle(settings, forward):
    model = every_feature_model(**settings)
    tables = {"feedforward": LEAKY | {"relaxation_onset": "6 ms"}} if forward == "leaky" else {}
    tables["plasticity"] = {"continuous": True}
    protocol = make(protocol_data(**tables))
    assert_dense_matches_period_oracle(model, protocol, n_samples=6)


@pytest.mark.parametrize("memory", ["trace", "two-compartment"])
def test_memory_takes_over_when_the_forward_phase_ends(memory):
    model = make_model(
        [5, 4, 4, 3],
        ["tanh", "sigmoid", "linear"],
        bias=True,
        memory={"kind": memory, "tau": "15 ms"},
    )
    protocol = make(protocol_data(feedforward=LEAKY | {"relaxation_onset": "5 ms"}))
    assert_dense_matches_period_oracle(model, protocol, n_samples=6)


def test_dag_with_leaky_forward_dynamics_and_variants():
    model = dag_model(derivative_at="current", update_uses="current")
    protocol = make(
        protocol_data(feedforward=LEAKY | {"relaxation_onset": "5 ms", "error_tau": "2 ms"})
    )
    assert_dense_matches_period_oracle(model, protocol, n_samples=6)


@pytest.mark.parametrize("mode", ["dense", "synapses"])
def test_long_leaky_forward_phase_equals_the_instant_sweep(mode):
    """A forward phase of 30 τ_f: x̂ and f' of the instant sweep (1e-9) and its weight updates
    (1e-8), paper-shaped chain."""
    model = make_model([20, 12, 10, 6], ["relu", "relu", "linear"], loss_scale=2.0)
    settled = make(protocol_data(feedforward_ms=60, relax_ms=20, feedforward=LEAKY))
    instant = make(protocol_data(feedforward_ms=60, relax_ms=20))
    params = oracle.init_params(model, seed=3)
    inputs, targets = random_batch(model, 6, seed=2)
    leaky, _ = run_brian(model, settled, inputs, targets, params, mode=mode)
    swept, _ = run_brian(model, instant, inputs, targets, params, mode=mode)
    for c in range(3):
        change = leaky.params.W[c] - params.W[c]
        reference = swept.params.W[c] - params.W[c]
        assert np.linalg.norm(change - reference) <= 1e-8 * np.linalg.norm(reference)
    end_of_phase = 60 - 1  # x̂ and f' at the last forward step
    for variable in ("xhat", "fp"):
        traces = leaky.traces[leaky.traces.variable == variable]
        step = np.rint(traces.t.to_numpy() / settled.dt).astype(int) - 1
        at_end = traces[step % 81 == end_of_phase]
        sweep = oracle.forward(model, params, inputs[:3])
        for k, layer in enumerate((layer.name for layer in model.layers[1:]), start=1):
            rows = at_end[(at_end.layer == layer) & (at_end["sample"] < 3)]
            values = rows.value.to_numpy().reshape(3, -1)
            reference = sweep.xhat[k] if variable == "xhat" else sweep.fp[k - 1]
            np.testing.assert_allclose(values, reference, rtol=0, atol=1e-9)


BAD = [
    ({"feedforward": {"kind": "leaky", "tau": "0.5 ms"}}, "feedforward.tau: expected a forward"),
    ({"feedforward": {"kind": "leaky", "tau": "2 ms", "relaxation_onset": "-1 ms"}}, "at or after"),
    (
        {"feedforward": {"kind": "leaky", "tau": "2 ms", "relaxation_onset": "19 ms"}},
        "within the sample period",
    ),
    ({"feedforward": {"kind": "leaky", "tau": "2 ms", "error_tau": "0.4 ms"}}, "error_tau"),
    ({"feedforward": {"tau": "2 ms"}}, "applies to kind = 'leaky' only"),
    ({"plasticity": {"window": ["1 ms", "2 ms"]}}, "applies to continuous = true only"),
    ({"plasticity": {"continuous": True, "window": ["1 ms", "20 ms"]}}, "plasticity.window"),
]


@pytest.mark.parametrize("tables,message", BAD)
def test_bad_forward_declarations_are_one_line_errors(tables, message):
    with pytest.raises(SpecError, match="leaky.toml: ") as error:
        protocol_from_dict(protocol_data(**tables), "leaky.toml")
    assert message in str(error.value) and "\n" not in str(error.value)


def test_continuous_plasticity_with_a_plasticity_phase_is_refused():
    data = {
        "tau": "10 ms",
        "dt": "1 ms",
        "oscillation": {"frequency": "50 Hz", "relaxation": ["36 deg", "324 deg"]},
        "plasticity": {"continuous": True},
    }
    protocol_from_dict(copy.deepcopy(data), "osc.toml")  # at the cycle's end: accepted
    data["oscillation"]["plasticity"] = "180 deg"
    with pytest.raises(SpecError, match="osc.toml: plasticity.continuous: "):
        protocol_from_dict(data, "osc.toml")


@pytest.mark.parametrize(
    "tables,model_settings,field",
    [
        ({"feedforward": LEAKY | {"reset": False}}, {}, "feedforward."),
        ({"plasticity": {"continuous": True}}, {}, "plasticity.continuous"),
    ],
)
def test_the_synapses_modes_refuse_what_they_cannot_run(tables, model_settings, field):
    protocol = make(protocol_data(**tables))
    model = every_feature_model(**model_settings)
    for device in ("runtime", "cpp_standalone"):
        with pytest.raises(ExecutionError, match=field) as error:
            check_execution(protocol, "synapses", device, model)
        assert "use --mode dense" in str(error.value)
    check_execution(protocol, "dense", "runtime", model)


@pytest.mark.parametrize("period_steps", [8, 20, 36, 40, 72, 100])
@pytest.mark.parametrize("window", [(22.5, 337.5), (10.0, 190.0), (0.0, 360.0), (45.0, 135.0)])
def test_a_lag_of_n_steps_moves_both_ends_of_a_window_by_n(period_steps, window):
    protocol = protocol_from_dict(
        {
            "tau": "10 ms",
            "dt": "1 ms",
            "oscillation": {
                "frequency": f"{1000 / period_steps!r} Hz",
                "relaxation": ["90 deg", "270 deg"],
            },
        },
        "osc.toml",
    )
    schedule = Schedule(None, protocol)
    step_deg = 360.0 / period_steps
    base = (schedule.phase_to_step(window[0]), schedule.phase_to_step(window[1]))
    for lag in range(1, 4):
        moved = (
            schedule.phase_to_step(window[0] + lag * step_deg),
            schedule.phase_to_step(window[1] + lag * step_deg),
        )
        assert moved == (base[0] + lag, base[1] + lag)
    # the example of the 40-step cycle: 22.5°–337.5° → (3, 38), lagged by 9° → (4, 39)
    if period_steps == 40 and window == (22.5, 337.5):
        assert base == (3, 38)


def test_oscillation_gates_forward_windows_per_layer():
    """An oscillation with a forward window, lagged per layer like the relaxation windows."""
    data = {
        "tau": "10 ms",
        "dt": "1 ms",
        "oscillation": {
            "frequency": "50 Hz",
            "relaxation": ["90 deg", "324 deg"],
            "feedforward": ["0 deg", "108 deg"],
            "phase_offset": {"h2": "18 deg", "h3": "36 deg"},
        },
        "feedforward": LEAKY,
        "learning": {"rate": 0.05, "batch_size": 3},
    }
    protocol = make(data)
    model = every_feature_model()
    schedule = Schedule(model, protocol)
    assert schedule.forward_window("h1") == (0, 6) and schedule.forward_window("h3") == (2, 8)
    assert schedule.window_steps("h2") == (6, 19) and schedule.onset_step("h3") == 7
    gains = schedule.forward_gains
    assert gains[:, 0].sum() == 0 and gains[2:8, 3].tolist() == [1.0] * 6 and gains[:, 3].sum() == 6
    assert_dense_matches_period_oracle(model, protocol, n_samples=6)
    data["feedforward"] = {"kind": "instant"}
    with pytest.raises(SpecError, match="oscillation.feedforward: applies to"):
        protocol_from_dict(data, "osc.toml")


def test_metrics_of_a_silent_network_are_nan_not_a_crash():
    """A network whose ReLUs all went silent has a zero gradient: the relative error is NaN,
    the angle NaN, and the batch metrics do not raise."""
    zero = [np.zeros((3, 2)), np.zeros(4)]
    some = [np.ones((3, 2)), np.ones(4)]
    assert np.isnan(relative_error(some, zero)) and np.isnan(angle_degrees(some, zero))
    assert relative_error(some, some) == 0.0


# ------------------------------------------------------------------ jittered phase boundary
def jittered(jitter="3 ms", **tables):
    data = protocol_data(batch_size=2, **tables)
    data["phases"]["jitter"] = jitter
    return make(data)


JITTER_CASES = {
    "instant": {},
    "leaky": dict(feedforward=LEAKY),
    "leaky-continuous-window": dict(
        feedforward=LEAKY, plasticity={"continuous": True, "window": ["3 ms", "9 ms"]}
    ),
}


@pytest.mark.parametrize("case", JITTER_CASES)
def test_jittered_phase_boundary_matches_the_period_oracle(case):
    """Each minibatch's feedforward phase lengthens by its shift and its relaxation shortens
    by it; the dense mode equals the period oracle run with those per-minibatch timings."""
    protocol = jittered(**JITTER_CASES[case])
    schedule = Schedule(None, protocol)
    assert schedule.jitter_steps == 3
    model = every_feature_model()
    shifts = [phase_shift(0, 3, m) for m in range(5)]
    assert len(set(shifts)) > 1  # the boundary does move between these minibatches
    assert_dense_matches_period_oracle(model, protocol, n_samples=10)


def test_a_shifted_schedule_moves_the_boundary_and_keeps_the_period_and_window():
    protocol = jittered(plasticity={"continuous": True, "window": ["3 ms", "9 ms"]})
    base = Schedule(None, protocol)
    for shift in (-3, 0, 2, 3):
        moved = base.shifted(shift)
        assert moved.sample_steps == base.sample_steps == 19
        assert moved.phase_steps["feedforward"] == 8 + shift
        assert moved.phase_steps["relaxation"] == 10 - shift
        assert moved.continuous_steps == (11, 17)  # 3-9 ms after the unshifted boundary


def test_phase_shifts_are_uniform_whole_steps_fixed_by_the_seed():
    draws = np.array([phase_shift(4, 3, 0, m) for m in range(4000)])
    assert set(draws) == set(range(-3, 4))
    counts = np.bincount(draws + 3)
    assert counts.min() > 4000 / 7 * 0.8  # each of the 7 shifts about equally often
    assert [phase_shift(4, 3, 0, m) for m in range(50)] == list(draws[:50])
    assert [phase_shift(5, 3, 0, m) for m in range(50)] != list(draws[:50])
    assert phase_shift(4, 0, 0, 1) == 0


@pytest.mark.parametrize(
    ("phases", "tables", "message"),
    [
        ({"jitter": "8 ms"}, {}, "from 0 to one step less"),
        ({"jitter": "1.5 ms"}, {}, "multiple of dt"),
        ({"jitter": "-1 ms"}, {}, "multiple of dt"),
        ({"jitter": "2 ms", "tolerance": 0.01}, {}, "phases.tolerance"),
        ({"jitter": "2 ms"}, {"stimulus": {"dwell": "5 ms"}}, "stimulus.dwell"),
        (
            {"jitter": "2 ms"},
            {"feedforward": LEAKY | {"relaxation_onset": "4 ms"}},
            "feedforward.relaxation_onset",
        ),
        (
            {"jitter": "4 ms"},
            {"plasticity": {"continuous": True, "window": ["3 ms", "9 ms"]}},
            "plasticity window must stay within",
        ),
    ],
)
def test_bad_jitter_is_refused_naming_the_key(phases, tables, message):
    data = protocol_data(**tables)
    data["phases"].update(phases)
    with pytest.raises(SpecError, match="phases.jitter") as error:
        protocol_from_dict(data, "jitter.toml")
    assert message in str(error.value)
    assert "jitter.toml" in str(error.value)


def test_a_jittered_protocol_is_refused_by_modes_that_cannot_run_it():
    with pytest.raises(ExecutionError, match="phases.jitter: cpp_standalone compiles") as error:
        check_execution(jittered(), "synapses", "cpp_standalone", every_feature_model())
    assert "use --device runtime" in str(error.value)
    check_execution(jittered(), "synapses", "runtime", every_feature_model())


# ---------------------------------------------------------------- leaky forward with a stream
@pytest.mark.parametrize("reset", [True, False])
def test_leaky_forward_dynamics_follow_a_stimulus_stream_like_the_period_oracle(reset):
    """A stream that changes every 7 steps across 19-step periods: the forward integration
    reads the input as the stream shows it, the clamp follows the target, and with
    ``reset = false`` nothing is reset anywhere; traces and weights equal the oracle's."""
    stream = {"dwell": "7 ms"}
    protocol = make(
        protocol_data(batch_size=2, feedforward=LEAKY | {"reset": reset}, stimulus=stream)
    )
    assert Schedule(None, protocol).stream_periods(10) == 2
    assert_dense_matches_period_oracle(every_feature_model(), protocol, n_samples=10)

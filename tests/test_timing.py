"""An oscillation that gates the relaxation and the plasticity, and a stimulus stream
on its own clock, against the oracle and closed forms; their bad input."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from conftest import make_model, random_batch, run_brian
from conftest import oscillating as shared_oscillating
from test_network import _assert_matches_oracle

from arsim import oracle
from arsim.metrics import angle_degrees, relative_error
from arsim.modes import ExecutionError, check_execution
from arsim.spec import RecordSpec, SpecError, check_compatible, protocol_from_dict
from arsim.spec.schedule import Schedule

RECORD_ALL = RecordSpec(variables=("x",), neurons=None, samples=None)


def oscillating(oscillation=None, stimulus=None, **learning):
    """:func:`conftest.oscillating`, recording every neuron's x."""
    return shared_oscillating(oscillation, stimulus, RECORD_ALL, **learning)


def test_oscillation_derives_the_phases_and_gates():
    """50 Hz at dt = 1 ms is a 20-step cycle (18° a step); 36°–324° is steps 2 … 17; a lag of
    −18° moves a layer's window one step earlier; the sine gate is sin(π k / 16) across the
    16-step window; the phases are the union of the windows."""
    protocol = oscillating({"waveform": "sine", "phase_offset": {"h2": "-18 deg"}})
    schedule = Schedule(None, protocol)
    assert schedule.sample_steps == 20
    assert schedule.window_steps("h1") == (2, 18)
    assert schedule.window_steps("h2") == (1, 17)
    assert schedule.phase_steps == {"feedforward": 1, "relaxation": 17, "update": 2}
    gate = schedule.gate("h1")
    np.testing.assert_allclose(gate[2:18], np.sin(np.pi * np.arange(16) / 16), rtol=0, atol=1e-15)
    assert gate[:2].sum() == 0 and gate[18:].sum() == 0
    assert Schedule(None, oscillating()).gate("h1")[2:18].tolist() == [1.0] * 16
    assert Schedule(None, oscillating()).plasticity_step == 20
    assert Schedule(None, oscillating({"plasticity": "180 deg"})).plasticity_step == 10


@pytest.mark.parametrize("mode", ["dense", "synapses"])
def test_gated_relaxation_matches_oracle(mode):
    """A sine-gated relaxation with a phase lag per layer: traces and weights equal the oracle
    with the same per-step gains to 1e-10, in both modes."""
    model = make_model([6, 5, 4, 4, 3], ["relu", "tanh", "sigmoid", "linear"], bias=True)
    protocol = oscillating({"waveform": "sine", "phase_offset": {"h1": "-18 deg", "h3": "36 deg"}})
    schedule = Schedule(None, protocol)
    assert schedule.window_steps("h1") == (1, 17) and schedule.window_steps("h3") == (4, 20)
    params, result, _ = _assert_matches_oracle(model, protocol, 8, mode)
    # the gate matters: the square window gives other weights
    _, _, square = _assert_matches_oracle(
        model, oscillating({"phase_offset": {"h1": "-18 deg", "h3": "36 deg"}}), 8, mode
    )
    assert not np.allclose(square.W[0], result.params.W[0], rtol=1e-6)


def test_gated_chain_follows_the_product_of_its_gains():
    """Closed form: one hidden linear layer under a clamp c = B·δ_L relaxes by
    x_{n+1} = x_n + g_n η (c − x_n), so its residual after the window is
    (c − x̂) ∏_n (1 − g_n η) with the gains g_n of the sine gate."""
    model = make_model([3, 4, 2], ["linear", "linear"])
    protocol = oscillating({"waveform": "sine"}, batch_size=2)
    params = oracle.init_params(model, seed=3)
    inputs, targets = random_batch(model, 2, seed=3)
    result, _ = run_brian(model, protocol, inputs, targets, params)
    h1 = result.traces[(result.traces.layer == "h1") & (result.traces.variable == "x")]
    step = np.rint(h1.t.to_numpy() / protocol.dt).astype(int) - 1
    schedule = Schedule(None, protocol)
    last = h1[step % schedule.sample_steps == schedule.window_steps("h1")[1] - 1].sort_values(
        ["sample", "neuron"]
    )
    relaxed = last.value.to_numpy().reshape(2, 4)
    exact = oracle.backprop(model, params, inputs, targets).activity[1]
    start = oracle.forward(model, params, inputs).xhat[1]
    gains = schedule.gate("h1")
    product = np.prod(1 - gains[gains > 0] * schedule.eta_x)
    np.testing.assert_allclose(exact - relaxed, (exact - start) * product, rtol=1e-10)
    assert 0.05 < product < 0.5  # the sine window relaxes for about 2/π of its 16 steps


def test_plasticity_phase_inside_the_window_matches_oracle():
    """Plasticity at 180° (step 10) while the window lasts until step 18: the update sees the
    relaxation's first 8 steps only (and trace memory decayed 10 times), in the dense mode."""
    model = make_model(
        [6, 5, 4, 4, 3],
        ["relu", "tanh", "sigmoid", "linear"],
        bias=True,
        memory={"kind": "trace", "tau": "30 ms"},
    )
    protocol = oscillating({"plasticity": "180 deg"})
    params, result, expected = _assert_matches_oracle(model, protocol, 8, "dense")
    late = oscillating()
    _, _, at_end = _assert_matches_oracle(model, late, 8, "dense")
    assert not np.allclose(at_end.W[1], expected.W[1], rtol=1e-6)
    with pytest.raises(ExecutionError, match="oscillation.plasticity: only the dense mode"):
        check_execution(protocol, "synapses", "runtime")


def test_stimulus_stream_matches_oracle():
    """A stream that changes every 7 steps, across 20-step cycles: what the sweep sees, the
    changing clamp and what the plasticity sees equal the oracle's stream to 1e-10; with a dwell
    of one cycle the stream is the ordinary protocol."""
    model = make_model([6, 5, 4, 4, 3], ["relu", "tanh", "sigmoid", "linear"], bias=True)
    protocol = oscillating(stimulus={"dwell": "7 ms"})
    schedule = Schedule(None, protocol)
    assert schedule.dwell_steps == 7
    np.testing.assert_array_equal(schedule.stream_samples(13, 12), [4, 5, 6, 7])  # item 1
    np.testing.assert_array_equal(schedule.stream_samples(14, 12), [8, 9, 10, 11])  # item 2
    np.testing.assert_array_equal(schedule.stream_samples(42, 12), [8, 9, 10, 11])  # holds
    np.testing.assert_array_equal(schedule.stream_samples(7, 6), [4, 5, 0, 1])  # partial last
    # the run lasts while the stream shows every sample once: 6 minibatches × 7 ms = 42 ms,
    # sweeps at 0, 20 and 40 ms; a 45 ms dwell sweeps each minibatch 2 or 3 times
    assert schedule.stream_periods(24) == 3
    assert Schedule(None, oscillating(stimulus={"dwell": "45 ms"})).stream_periods(24) == 14
    _, streamed, _ = _assert_matches_oracle(model, protocol, 24, "dense")
    assert len(streamed.metrics) == 3
    ordinary = oscillating()
    _, plain, _ = _assert_matches_oracle(model, ordinary, 24, "dense")
    _, per_cycle, _ = _assert_matches_oracle(
        model, oscillating(stimulus={"dwell": "20 ms"}), 24, "dense"
    )
    for layer in range(4):
        np.testing.assert_allclose(per_cycle.params.W[layer], plain.params.W[layer], rtol=1e-12)
    assert not np.allclose(streamed.params.W[0], plain.params.W[0], rtol=1e-6)
    # the metrics compare each update with backprop on the samples its sweep saw
    assert streamed.metrics.angle_deg.gt(1).any() and plain.metrics.angle_deg.max() < 60
    with pytest.raises(ExecutionError, match="stimulus.dwell: only the dense mode"):
        check_execution(protocol, "synapses", "runtime")


@pytest.mark.parametrize(
    "oscillation, key, message",
    [
        ({"frequency": "0 Hz"}, "oscillation.frequency", "expected a frequency > 0 Hz"),
        ({"frequency": "-8 Hz"}, "oscillation.frequency", "expected a frequency > 0 Hz"),
        ({"frequency": "8"}, "oscillation.frequency", "with a unit (Hz, kHz)"),
        ({"frequency": "3 Hz"}, "oscillation.frequency", "not a multiple of dt"),
        ({"relaxation": ["10 deg", "400 deg"]}, "oscillation.relaxation", "at most one cycle"),
        ({"relaxation": ["200 deg", "100 deg"]}, "oscillation.relaxation", "at most one cycle"),
        ({"relaxation": ["0 deg", "300 deg"]}, "oscillation.relaxation", "leaves the cycle"),
        ({"relaxation": ["36 deg", "40 deg"]}, "oscillation.relaxation", "shorter than one step"),
        ({"relaxation": ["10 deg"]}, "oscillation.relaxation", "expected [start, end]"),
        (
            {"phase_offset": {"h1": "60 deg"}},
            "oscillation.phase_offset.h1",
            "leaves the cycle",
        ),
        ({"plasticity": "400 deg"}, "oscillation.plasticity", "in (0 deg, 360 deg]"),
        ({"plasticity": "0 deg"}, "oscillation.plasticity", "in (0 deg, 360 deg]"),
        ({"waveform": "triangle"}, "oscillation.waveform", "square, sine"),
        ({"phase": "3 deg"}, "oscillation.phase", "unknown key"),
    ],
)
def test_bad_oscillation_is_one_line_naming_file_and_key(oscillation, key, message):
    with pytest.raises(SpecError) as error:
        oscillating(oscillation)
    text = str(error.value)
    assert text.startswith(f"oscillation.toml: {key}: ") and message in text
    assert "\n" not in text


def test_oscillation_and_phase_durations_exclude_each_other():
    data = {
        "tau": "10 ms",
        "dt": "1 ms",
        "phases": {"relaxation": "20 ms"},
        "oscillation": {"frequency": "50 Hz", "relaxation": ["36 deg", "324 deg"]},
    }
    with pytest.raises(SpecError, match="x.toml: phases.relaxation: the .oscillation. sets"):
        protocol_from_dict(data, "x.toml")


@pytest.mark.parametrize("dwell", ["0.5 ms", "2.5 ms", "-1 ms", "7"])
def test_bad_dwell_is_one_line(dwell):
    data = {"tau": "10 ms", "dt": "1 ms", "phases": {"relaxation": "20 ms"}}
    with pytest.raises(SpecError, match="x.toml: stimulus.dwell: expected"):
        protocol_from_dict(data | {"stimulus": {"dwell": dwell}}, "x.toml")


def test_phase_offset_of_unknown_layer_is_rejected():
    model = make_model([6, 5, 3], ["relu", "linear"])
    protocol = oscillating({"phase_offset": {"h7": "10 deg"}})
    with pytest.raises(SpecError, match="oscillation.toml: oscillation.phase_offset.h7: no layer"):
        check_compatible(model, protocol)


@pytest.mark.parametrize("stream", [False, True], ids=["ordinary", "stream"])
def test_per_sample_metrics_equal_full_matrix_comparison(stream):
    """``samples.csv``: each sample's own update (from the factors δ x̂ᵀ the network used)
    against its own backprop gradient equals the comparison of the full matrices: the oracle's
    AR update of a one-sample minibatch against backprop on the input its sweep saw."""
    model = make_model([6, 5, 4, 4, 3], ["relu", "tanh", "sigmoid", "linear"], bias=True)
    protocol = oscillating(stimulus={"dwell": "7 ms"} if stream else None, batch_size=1)
    params = oracle.init_params(model, seed=6)
    inputs, targets = random_batch(model, 6, seed=6)  # targets of classes 1 2 0 0 2 2
    result, _ = run_brian(model, protocol, inputs, targets, params)
    samples = result.samples
    schedule = Schedule(None, protocol)
    cycles = schedule.stream_periods(6) if stream else 6  # 6 stimuli × 7 ms: 3 sweeps
    assert list(samples.batch) == list(range(cycles))
    current = params
    for cycle in range(cycles):
        row = samples.iloc[cycle]
        swept = schedule.stream_samples(cycle * schedule.sample_steps, 6) if stream else [cycle]
        assert int(row["sample"]) == swept[0]
        if stream:
            relaxed = oracle.relax_stream(model, protocol, current, inputs, targets, cycle)
        else:
            relaxed = oracle.relax_as(model, protocol, current, inputs[swept], targets[swept])
        exact = oracle.backprop(model, current, inputs[swept], targets[swept])
        ar, bp = relaxed.W + relaxed.b, exact.W + exact.b
        # cosines, not angles: arccos near 1 resolves no better than about 1e-6 degrees
        cosine = lambda degrees: np.cos(np.radians(degrees))  # noqa: E731
        assert cosine(row.angle_deg) == pytest.approx(cosine(angle_degrees(ar, bp)), abs=1e-12)
        assert row.rel_error == pytest.approx(relative_error(ar, bp), rel=1e-6)
        for c in range(4):
            with np.errstate(invalid="ignore"):  # NaN where a ReLU layer is silent: in both
                expected = angle_degrees(relaxed.W[c], exact.W[c])
            got = row[f"angle_deg_W{c}"]
            np.testing.assert_allclose(cosine(got), cosine(expected), rtol=0, atol=1e-12)
        current = oracle.apply_update(model, current, relaxed, *schedule.learning_rates(1))
    # the short window (16 steps = 1.6 τ) leaves 5–16° here; the stream, whose target changed
    # before the plasticity, makes it more than 45°, except in the last period, when the
    # stream has ended on the sample that period swept
    if stream:
        assert samples.angle_deg.iloc[:2].min() > 45 and samples.angle_deg.iloc[2] < 20
    else:
        assert samples.angle_deg.max() < 20


@pytest.mark.parametrize("mode", ["dense", "synapses"])
def test_two_compartment_memory_matches_oracle(mode):
    """``[memory] kind = "two-compartment"``: the soma's x̂ leaks toward the relaxing apical x
    (τ_c = 30 ms); traces and weights equal the oracle's somata to 1e-10, the update differs
    from ideal memory, and a slow coupling is ideal memory in the limit: the gap shrinks in
    proportion to dt/τ_c."""
    memory = {"kind": "two-compartment", "tau": "30 ms"}
    model = make_model(
        [6, 5, 4, 4, 3], ["relu", "tanh", "sigmoid", "linear"], bias=True, memory=memory
    )
    protocol = oscillating()
    _, result, expected = _assert_matches_oracle(model, protocol, 8, mode)
    ideal = replace(model, memory=replace(model.memory, kind="ideal"))
    _, _, ideal_expected = _assert_matches_oracle(ideal, protocol, 8, mode)
    assert not np.allclose(ideal_expected.W[1], expected.W[1], rtol=1e-4)
    gaps = []
    for tau in (10.0, 100.0):  # seconds: dt/τ_c = 1e-4 and 1e-5
        slow = replace(model, memory=replace(model.memory, tau=tau))
        _, _, slow_expected = _assert_matches_oracle(slow, protocol, 8, mode)
        gaps.append(np.abs(slow_expected.W[0] - ideal_expected.W[0]).max())
    assert gaps[1] / gaps[0] == pytest.approx(0.1, rel=1e-2)


def test_two_compartment_soma_follows_closed_form():
    """From rest (start = "zero") the apical x is 0 through the feedforward phase, so the
    soma decays as x̂ (1 − dt/τ_c)^(k+1) after step k; in the window it moves toward x."""
    memory = {"kind": "two-compartment", "tau": "20 ms"}
    model = make_model([6, 5, 3], ["tanh", "linear"], memory=memory)
    protocol = oscillating({"relaxation": ["90 deg", "324 deg"]}, batch_size=2)
    protocol = replace(
        protocol,
        relaxation_start="zero",
        record=RecordSpec(variables=("x", "xhat"), neurons=None, samples=None),
    )
    params = oracle.init_params(model, seed=2)
    inputs, targets = random_batch(model, 2, seed=2)
    result, _ = run_brian(model, protocol, inputs, targets, params)
    rows = result.traces[(result.traces.layer == "h1") & (result.traces["sample"] == 0)]
    xhat = rows[(rows.variable == "xhat") & (rows.neuron == 3)].sort_values("t").value.to_numpy()
    swept = oracle.forward(model, params, inputs[:1]).xhat[1][0, 3]
    schedule = Schedule(None, protocol)
    first = schedule.window_steps("h1")[0]
    assert first == 5
    np.testing.assert_allclose(xhat[:first], swept * 0.95 ** np.arange(1, first + 1), rtol=1e-12)
    x = rows[(rows.variable == "x") & (rows.neuron == 3)].sort_values("t").value.to_numpy()
    # Euler step by step from the recorded x: x̂_{k+1} = x̂_k + 0.05 (x_k − x̂_k)
    np.testing.assert_allclose(xhat[1:], xhat[:-1] + 0.05 * (x[:-1] - xhat[:-1]), rtol=1e-12)

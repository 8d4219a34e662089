"""The timing a protocol gives a model (Schedule): steps, windows, gates, plasticity, delays,
the stimulus stream and the learning rates, against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import PAPER_MODEL, PAPER_PROTOCOL, make_model, oscillating

from arsim.spec import (
    ConnectionSpec,
    InitSpec,
    ModelSpec,
    ProtocolSpec,
    RecordSpec,
    Schedule,
    load_model,
    load_protocol,
    model_from_dict,
    protocol_from_dict,
)


def test_paper_schedule():
    """dt = 1 ms, τ = 10 ms; 1 + 100 + 1 steps of 1 ms; the update at the next period's start."""
    schedule = Schedule(load_model(PAPER_MODEL), load_protocol(PAPER_PROTOCOL))
    assert schedule.eta_x == pytest.approx(0.1)
    assert schedule.eta_x_per_layer == pytest.approx([0.1] * 5)
    assert schedule.phase_steps == {"feedforward": 1, "relaxation": 100, "update": 1}
    assert schedule.sample_steps == 102
    assert schedule.sample_duration == pytest.approx(0.102)
    assert schedule.window_steps("h1") == (1, 101)
    assert schedule.plasticity_step == 102 and schedule.steps_before_plasticity == 100
    assert schedule.delay_steps == [0, 0, 0, 0]
    assert schedule.steps(0.025) == 25 and schedule.phase_to_step(180.0) == 51
    gains = schedule.gains
    assert gains.shape == (102, 5)
    assert gains[0].sum() == 0 and gains[1:101].tolist() == [[1.0] * 5] * 100
    assert gains[101].sum() == 0
    assert schedule.dwell_steps == 0


def test_layer_time_constants_and_delays():
    """τ_h2 = 5 ms at dt = 1 ms is η = 0.2; a 2 ms delay on h2 → h3 is 2 steps."""
    data = {
        "tau": "10 ms",
        "dt": "1 ms",
        "phases": {"relaxation": "100 ms"},
        "layer_tau": {"h2": "5 ms"},
        "feedback_delay": {"h2-h3": "2 ms"},
    }
    schedule = Schedule(load_model(PAPER_MODEL), protocol_from_dict(data))
    assert schedule.tau_of("h2") == pytest.approx(0.005) and schedule.tau_of("h1") == 0.01
    assert schedule.eta_x_of("h2") == pytest.approx(0.2)
    assert schedule.eta_x_per_layer == pytest.approx([0.1, 0.1, 0.2, 0.1, 0.1])
    assert schedule.delay_steps == [0, 0, 2, 0]


def test_oscillation_windows_gates_and_plasticity():
    """36°–324° of a 20-step cycle is steps 2 … 17; −18° moves h2's window one step earlier;
    the sine gate is sin(π k / 16) across the 16-step window; without the lag the relaxation
    starts at step 2 and plasticity at 180° is step 10, so the update sees its first 8 steps."""
    model = make_model([4, 3, 3, 2], ["relu", "relu", "linear"])
    protocol = oscillating({"waveform": "sine", "phase_offset": {"h2": "-18 deg"}})
    schedule = Schedule(model, protocol)
    assert schedule.sample_steps == 20
    assert schedule.window_steps("h1") == (2, 18) and schedule.window_steps("h2") == (1, 17)
    assert schedule.phase_steps == {"feedforward": 1, "relaxation": 17, "update": 2}
    gate = schedule.gate("h1")
    np.testing.assert_allclose(gate[2:18], np.sin(np.pi * np.arange(16) / 16), rtol=0, atol=1e-15)
    assert gate[:2].sum() == 0 and gate[18:].sum() == 0
    np.testing.assert_array_equal(schedule.gains[:, 1], gate)
    assert schedule.plasticity_step == 20 and schedule.steps_before_plasticity == 17
    early = Schedule(model, oscillating({"plasticity": "180 deg"}))
    assert early.gate("h1")[2:18].tolist() == [1.0] * 16
    assert early.plasticity_step == 10 and early.steps_before_plasticity == 8


def test_stimulus_stream():
    """A 7-step dwell with minibatches of 4: item m shows samples 4m … 4m + 3 (mod n) from step
    7m, the last item holds; 24 samples take 6 × 7 = 42 steps, 3 cycles of 20; a 45-step dwell
    takes 270 steps, 14 cycles."""
    schedule = Schedule(None, oscillating(stimulus={"dwell": "7 ms"}))
    assert schedule.dwell_steps == 7
    np.testing.assert_array_equal(schedule.stream_samples(13, 12), [4, 5, 6, 7])
    np.testing.assert_array_equal(schedule.stream_samples(14, 12), [8, 9, 10, 11])
    np.testing.assert_array_equal(schedule.stream_samples(42, 12), [8, 9, 10, 11])
    np.testing.assert_array_equal(schedule.stream_samples(7, 6), [4, 5, 0, 1])
    assert schedule.stream_periods(24) == 3
    assert Schedule(None, oscillating(stimulus={"dwell": "45 ms"})).stream_periods(24) == 14


def test_learning_rates_per_reduction():
    """'sum' keeps η; 'mean' divides η of W and of ψ by the minibatch's sample count."""
    assert Schedule(None, oscillating()).learning_rates(4) == (0.02, 0.02)
    mean = oscillating(batch_reduction="mean", feedback_rate=0.01)
    assert Schedule(None, mean).learning_rates(4) == pytest.approx((0.005, 0.0025))


def test_model_quantities_need_a_model():
    schedule = Schedule(None, load_protocol(PAPER_PROTOCOL))
    for name in ("eta_x_per_layer", "delay_steps", "gains"):
        with pytest.raises(ValueError, match="no model"):
            getattr(schedule, name)


def test_derived_timing_lives_in_the_schedule_only():
    protocol = oscillating({"plasticity": "180 deg"}, stimulus={"dwell": "7 ms"})
    assert Schedule(None, protocol).plasticity_step == 10
    for name in ("plasticity_step", "stream_periods", "sample_duration", "phase_steps", "gate"):
        assert not hasattr(protocol, name)


def test_unset_keys_take_the_dataclass_defaults():
    """A protocol or model that sets only what is required gets the dataclass defaults."""
    protocol = protocol_from_dict({"tau": "10 ms", "dt": "1 ms", "phases": {"relaxation": "0 s"}})
    assert (protocol.learning_rate, protocol.feedback_learning_rate) == (0.0005, 0.0005)
    assert (protocol.batch_size, protocol.batch_reduction) == (64, "sum")
    assert (protocol.relaxation_start, protocol.noise, protocol.tolerance) == ("feedforward", 0, 0)
    assert protocol.dwell == 0.0 and protocol.record == RecordSpec()
    assert protocol.record.neurons == (0, 1, 2, 3, 4) and protocol.record.samples == (0, 1)
    model = model_from_dict({"layers": [{"name": "a", "size": 2}, {"name": "b", "size": 1}]})
    assert (model.loss, model.loss_scale, model.seed) == ("mse", 1.0, 0)
    assert model.init == InitSpec() and model.init.variance == 0.0025
    assert model.memory.kind == "ideal" and model.memory.tau == 0.0
    (connection,) = model.connections
    assert connection == ConnectionSpec("a", "b")
    assert (connection.bias, connection.feedback, connection.derivative) == (False, "transpose", 1)
    assert isinstance(model, ModelSpec) and isinstance(protocol, ProtocolSpec)


@pytest.mark.parametrize(
    "feedback, transposed, learned",
    [("transpose", True, False), ("fixed", False, False), ("learned", False, True)],
)
def test_feedback_kind_properties(feedback, transposed, learned):
    connection = ConnectionSpec("a", "b", feedback=feedback)
    assert (connection.transposed, connection.learns_feedback) == (transposed, learned)

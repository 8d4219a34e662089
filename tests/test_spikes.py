"""Spike-coded signals against their closed forms: the integrate-and-fire bound, the Poisson
mean and variance (Campbell's theorem and its exact discrete-time form), the convergence rates,
and the Brian2 spiking network (threshold, reset, ``Synapses``) against the array steps."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import PAPER_MODEL, make_model, random_batch
from test_forward_dynamics import assert_dense_matches_period_oracle, dag_model, make, protocol_data

from arsim import oracle
from arsim.cli import main
from arsim.components.spikes import saturated, transmit, transmit_brian2
from arsim.period_oracle import simulate_periods
from arsim.spec import protocol_from_dict
from arsim.spec.spikes import SpikeCode, SpikeCodeError

DT = 1e-4  # s


def _steps(duration_s: float, dt: float = DT) -> int:
    return int(round(duration_s / dt))


# --------------------------------------------------------------------------------------------
# Integrate-and-fire: deterministic, within scale / (max_rate τ_s N) after 5 τ_s
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "max_rate, tau_s, population",
    [(100.0, 0.020, 1), (300.0, 0.005, 1), (1000.0, 0.002, 1), (300.0, 0.005, 4)],
)
def test_integrate_and_fire_stays_within_its_bound_after_five_tau(max_rate, tau_s, population):
    code = SpikeCode("integrate-and-fire", max_rate, 0.5, tau_s, population)
    values = np.array([-0.5, -0.31, -0.05, 0.0, 0.013, 0.2, 0.37, 0.5])
    steps = _steps(5 * tau_s + 0.3)
    received = transmit(code, values, DT, steps)
    settled = received[_steps(5 * tau_s) :]
    bound = 0.5 / (max_rate * tau_s * population)
    assert np.abs(settled - values).max() <= bound
    # the bound is tight: a single unit's sawtooth reaches a good part of it
    assert np.abs(settled - values).max() > 0.3 * bound


def test_integrate_and_fire_time_average_is_the_signal():
    """Over a whole number of spike periods the received signal's mean is v."""
    code = SpikeCode("integrate-and-fire", 400.0, 1.0, 0.005)
    values = np.array([0.25, -0.5])  # 100 Hz and 200 Hz: periods of 100 and 50 steps
    received = transmit(code, values, DT, _steps(0.5))
    np.testing.assert_allclose(received[-1000:].mean(axis=0), values, rtol=2e-3)


def test_a_signal_beyond_scale_saturates_at_max_rate():
    code = SpikeCode("integrate-and-fire", 300.0, 0.5, 0.005)
    values = np.array([0.9, -2.0, 0.4])
    assert saturated(values, code) == 2
    received = transmit(code, values, DT, _steps(0.5))
    np.testing.assert_allclose(received[-3000:].mean(axis=0), [0.5, -0.5, 0.4], rtol=5e-3)


@pytest.mark.parametrize("population", [1, 3])
def test_brian2_integrate_and_fire_network_equals_the_array_steps(population):
    """Encoders with threshold and reset, ``Synapses`` on_pre into an Euler-filtered variable:
    the same received signal as the array steps at every step."""
    code = SpikeCode("integrate-and-fire", 300.0, 0.8, 0.005, population)
    values = np.array([-1.0, -0.37, 0.0, 0.05, 0.42, 0.8])
    steps = _steps(0.08)
    expected = transmit(code, values, DT, steps)
    got = transmit_brian2(code, values, DT, steps)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-10)
    assert np.abs(expected).max() > 0.5  # spikes did arrive


# --------------------------------------------------------------------------------------------
# Poisson: mean v, variance scale |v| / (2 max_rate τ_s N) (Campbell), exact in discrete time
# --------------------------------------------------------------------------------------------
def _stationary(code, value, units, dt, seed=0, brian2=False):
    steps = _steps(10 * code.synapse_tau, dt)
    values = np.full(units, value)
    if brian2:
        return transmit_brian2(code, values, dt, steps, record=False)[-1]
    return transmit(code, values, dt, steps, rng=np.random.default_rng(seed))[-1]


@pytest.mark.parametrize("population", [1, 4])
def test_poisson_received_signal_has_mean_v_and_campbells_variance(population):
    """40,000 independent units at v = 0.3 (scale 0.5, 300 Hz, τ_s 5 ms, dt 0.05 ms): the
    mean within 4 standard errors, the variance within 10 % of Campbell's theorem and within
    4 % of the exact discrete-time value (the estimate's own error is about 1 %)."""
    code = SpikeCode("poisson", 300.0, 0.5, 0.005, population)
    dt, value, units = 5e-5, 0.3, 40_000
    received = _stationary(code, value, units, dt)
    campbell = 0.5 * value / (2 * 300.0 * 0.005 * population)
    assert code.variance(value) == pytest.approx(campbell, rel=1e-12)
    assert abs(received.mean() - value) < 4 * np.sqrt(campbell / units)
    assert received.var() == pytest.approx(campbell, rel=0.10)
    assert received.var() == pytest.approx(code.discrete_variance(value, dt), rel=0.04)


def test_poisson_discrete_variance_at_a_coarse_step():
    """At dt = 1 ms and τ_s = 5 ms the Euler filter's variance departs from Campbell's
    continuous value; the exact discrete form J² N p(1−p) / (1−a²) still holds."""
    code = SpikeCode("poisson", 300.0, 0.5, 0.005)
    dt, value = 1e-3, 0.4
    received = _stationary(code, value, 40_000, dt, seed=1)
    exact = code.discrete_variance(value, dt)
    assert exact < 0.9 * code.variance(value)  # a departure of 16 % at this step
    assert received.var() == pytest.approx(exact, rel=0.04)


def test_brian2_poisson_network_obeys_the_same_laws():
    """Real Brian2 spikes (``rand() < rate·dt`` thresholds, Brian2's own random stream)."""
    code = SpikeCode("poisson", 300.0, 0.5, 0.005)
    dt, value, units = 5e-5, -0.3, 20_000
    received = _stationary(code, value, units, dt, brian2=True)
    campbell = code.variance(value)
    assert abs(received.mean() - value) < 4 * np.sqrt(campbell / units)
    assert received.var() == pytest.approx(code.discrete_variance(value, dt), rel=0.06)


# --------------------------------------------------------------------------------------------
# The limit: Poisson error falls as 1/√max_rate, integrate-and-fire error as 1/max_rate
# --------------------------------------------------------------------------------------------
def test_errors_fall_as_predicted_when_the_rate_grows():
    dt, values = 1e-4, np.linspace(-0.45, 0.45, 4000)
    rms = {}
    for max_rate in (100.0, 400.0):
        code = SpikeCode("poisson", max_rate, 0.5, 0.010)
        received = transmit(code, values, dt, _steps(0.1), rng=np.random.default_rng(2))
        rms[max_rate] = np.sqrt(np.mean((received[-1] - values) ** 2))
    assert rms[100.0] / rms[400.0] == pytest.approx(2.0, rel=0.1)  # √4
    worst = {}
    for max_rate in (100.0, 400.0):
        code = SpikeCode("integrate-and-fire", max_rate, 0.5, 0.010)
        received = transmit(code, values[::40], dt, _steps(0.3))
        worst[max_rate] = np.abs(received[_steps(0.05) :] - values[::40]).max()
    assert worst[100.0] / worst[400.0] == pytest.approx(4.0, rel=0.15)  # linear


# --------------------------------------------------------------------------------------------
# Codes that cannot run: one line naming the key
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "code, key",
    [
        (SpikeCode("poisson", 2000.0, 1.0, 0.005), "max_rate"),
        (SpikeCode("poisson", 300.0, 1.0, 0.0005), "synapse_tau"),
        (SpikeCode("poisson", 300.0, 1.0, 0.005, 0), "population"),
        (SpikeCode("poisson", 300.0, -1.0, 0.005), "scale"),
        (SpikeCode("bursty", 300.0, 1.0, 0.005), "encoder"),
    ],
)
def test_a_code_that_cannot_run_is_refused_in_one_line_naming_the_key(code, key):
    with pytest.raises(SpikeCodeError) as error:
        code.check(1e-3)
    message = str(error.value)
    assert message.startswith(f"{key}:") and "\n" not in message


# --------------------------------------------------------------------------------------------
# Spiking feedback in the relaxation: the dense mode against the period oracle
# --------------------------------------------------------------------------------------------
def spiking_protocol(encoder, max_rate="500 Hz", population=1, **extra):
    spikes = {
        "encoder": encoder,
        "max_rate": max_rate,
        "synapse_tau": "2 ms",
        "scale": 0.5,
        "layer_scale": {"out": 0.8},
        "population": population,
    }
    return make(protocol_data(relax_ms=12, spikes=spikes | extra))


@pytest.mark.parametrize(
    "encoder, population",
    [("integrate-and-fire", 1), ("integrate-and-fire", 3), ("poisson", 1), ("poisson", 2),
     ("rate", 1)],
)  # fmt: skip
def test_dense_mode_equals_the_period_oracle_with_spiking_feedback(encoder, population):
    """Traces and weights at 1e-10 on a DAG (two inputs, a skip connection, a fan-in); the
    Poisson encoders draw the same random stream in both."""
    protocol = spiking_protocol(encoder, population=population)
    assert_dense_matches_period_oracle(dag_model(), protocol, n_samples=6)


def test_spikes_change_the_relaxation():
    """The spiking run differs from the rate-coded one, and the spike code from its rate limit."""
    model = dag_model()
    params = oracle.init_params(model, seed=3)
    inputs, targets = random_batch(model, 3, seed=3)
    weights = {}
    for name, spikes in {
        "none": None, "rate": "rate", "integrate-and-fire": "integrate-and-fire",
    }.items():  # fmt: skip
        protocol = make(protocol_data(relax_ms=12)) if spikes is None else spiking_protocol(spikes)
        final, _ = simulate_periods(model, protocol, params, inputs, targets)
        weights[name] = np.concatenate([w.ravel() for w in final.W])
    assert np.abs(weights["none"] - weights["rate"]).max() > 1e-6
    assert np.abs(weights["rate"] - weights["integrate-and-fire"]).max() > 1e-6


def _relaxation_errors(encoder: str, max_rate: float, seeds) -> tuple[float, float]:
    """RMS of the spiking relaxation's x (end of the relaxation) and weight change against the
    rate limit's (``encoder = 'rate'``), relative to the latter's, over ``seeds`` of the spike
    stream: a 20-16-12-5 tanh chain, 64 samples, 300 steps of dt = 0.1 ms."""
    model = make_model([20, 16, 12, 5], ["tanh", "tanh", "linear"])
    params = oracle.init_params(model, seed=1)
    inputs, targets = random_batch(model, 64, seed=1)

    def run(encoder, rate, seed):
        data = {
            "tau": "10 ms",
            "dt": "0.1 ms",
            "phases": {"feedforward": "0.1 ms", "relaxation": "30 ms", "update": "0.1 ms"},
            "learning": {"rate": 0.01, "batch_size": 64},
            "spikes": {
                "encoder": encoder, "max_rate": f"{rate} Hz", "synapse_tau": "2 ms", "scale": 0.5,
            },
        }  # fmt: skip
        protocol = protocol_from_dict(data, "limit.toml")
        final, (period,) = simulate_periods(
            model, protocol, params, inputs, targets, seed_key=(seed,)
        )
        x = np.concatenate([layer.ravel() for layer in period.state.x[1:-1]])
        change = np.concatenate([(w - w0).ravel() for w, w0 in zip(final.W, params.W, strict=True)])
        return x, change

    x_rate, change_rate = run("rate", max_rate, 0)
    x_error = change_error = 0.0
    for seed in seeds:
        x, change = run(encoder, max_rate, seed)
        x_error += np.sum((x - x_rate) ** 2) / np.sum(x_rate**2) / len(seeds)
        change_error += np.sum((change - change_rate) ** 2) / np.sum(change_rate**2) / len(seeds)
    return np.sqrt(x_error), np.sqrt(change_error)


def test_the_relaxation_converges_to_the_rate_limit_at_the_predicted_pace():
    """Relaxed activities and the weight update: the Poisson error falls by √4 = 2 when the
    rate grows fourfold (its variance ∝ 1/max_rate); the integrate-and-fire error at least by 4
    (its bound ∝ 1/max_rate)."""
    seeds = range(4)
    low, high = (
        _relaxation_errors("poisson", 250, seeds),
        _relaxation_errors("poisson", 1000, seeds),
    )
    assert low[0] / high[0] == pytest.approx(2.0, rel=0.1)
    assert low[1] / high[1] == pytest.approx(2.0, rel=0.25)  # a sum over 64 samples: noisier
    low, high = (
        _relaxation_errors("integrate-and-fire", 1000, [0]),
        _relaxation_errors("integrate-and-fire", 4000, [0]),
    )
    assert low[0] / high[0] >= 0.85 * 4 and low[1] / high[1] >= 0.85 * 4
    assert high[0] < 0.01  # and it does converge


# --------------------------------------------------------------------------------------------
# Bad input: one line naming the file and the key, exit 2, nothing written
# --------------------------------------------------------------------------------------------
PAPER_TIMING = 'tau = "10 ms"\ndt = "1 ms"\n[phases]\nfeedforward = "1 ms"\nrelaxation = "5 ms"\n'

BAD_SPIKES = {
    "rate-above-one-per-step": ('[spikes]\nmax_rate = "2000 Hz"\n', "spikes.max_rate", []),
    "filter-below-half-dt": ('[spikes]\nsynapse_tau = "0.4 ms"\n', "spikes.synapse_tau", []),
    "population-below-one": ("[spikes]\npopulation = 0\n", "spikes.population", []),
    "forward-on-the-instant-sweep": ('[spikes]\nsignals = ["forward"]\n', "spikes.signals", []),
    "unknown-layer-scale": ("[spikes.layer_scale]\nh9 = 0.1\n", "spikes.layer_scale.h9", []),
    "synapses-mode": ("[spikes]\n", "spikes", ["--mode", "synapses"]),
}


@pytest.mark.parametrize("case", BAD_SPIKES)
def test_bad_spikes_exit_2_with_one_line_naming_file_and_key(tmp_path, case, capsys):
    text, key, options = BAD_SPIKES[case]
    bad = tmp_path / "bad-spikes.toml"
    bad.write_text(PAPER_TIMING + text)
    out = tmp_path / "run"
    argv = ["run", str(PAPER_MODEL), str(bad), "--samples", "2", "--out", str(out), "--quiet"]
    assert main([*argv, *options]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and f"{key}:" in lines[0], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad-spikes.toml"]

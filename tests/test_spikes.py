"""Spike-coded signals against their closed forms: the integrate-and-fire bound, the Poisson
mean and variance (Campbell's theorem and its exact discrete-time form), the convergence rates,
and the Brian2 spiking network (threshold, reset, ``Synapses``) against the array steps."""

from __future__ import annotations

import numpy as np
import pytest

from arsim.spikes import SpikeCode, SpikeCodeError, saturated, transmit, transmit_brian2

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

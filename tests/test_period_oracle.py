"""The step-by-step period oracle against the sweep-and-relax oracle and closed forms."""

from __future__ import annotations

from dataclasses import replace
from math import comb

import numpy as np
import pytest
from conftest import make_model, make_protocol, random_batch, relative_norm_error

from arsim import oracle
from arsim.period_oracle import PeriodTiming, run_period
from arsim.spec.schedule import Schedule

RATES = (0.01, 0.01)


def instant_timing(model, protocol, **changes) -> PeriodTiming:
    """The timing of an instant-sweep protocol, as the simulator runs it."""
    schedule = Schedule(None, protocol)
    gains = np.stack([schedule.gate(layer.name) for layer in model.layers], axis=1)
    timing = PeriodTiming(
        steps=schedule.sample_steps,
        eta_x=np.array(Schedule(model, protocol).eta_x_per_layer),
        relax_gain=gains,
        onset=np.zeros(len(model.layers), dtype=int),
        start=protocol.relaxation_start,
        memory=model.memory.kind,
        eta_memory=protocol.dt / model.memory.tau if model.memory.tau else 0.0,
        plasticity_step=schedule.plasticity_step,
    )
    return replace(timing, **changes)


def leaky_timing(model, n_forward, n_relax, eta_f, onset=None, n_update=1) -> PeriodTiming:
    """A leaky forward phase of ``n_forward`` steps, then ``n_relax`` relaxation steps."""
    steps = n_forward + n_relax + n_update
    n_layers = len(model.layers)
    onset = n_forward if onset is None else onset
    relax = np.zeros((steps, n_layers))
    relax[onset : n_forward + n_relax] = 1.0
    forward_gain = np.zeros((steps, n_layers))
    forward_gain[:n_forward] = 1.0
    return PeriodTiming(
        steps=steps,
        eta_x=np.full(n_layers, 0.1),
        relax_gain=relax,
        onset=np.full(n_layers, onset),
        forward="leaky",
        eta_f=np.full(n_layers, eta_f),
        forward_gain=forward_gain,
        plasticity_step=steps,
    )


MODELS = {
    "chain": dict(sizes=[7, 6, 5, 3], activations=["tanh", "relu", "linear"], bias=True),
    "trace": dict(
        sizes=[7, 6, 5, 3],
        activations=["tanh", "sigmoid", "linear"],
        memory={"kind": "trace", "tau": "30 ms"},
    ),
    "two-compartment": dict(
        sizes=[7, 6, 5, 3],
        activations=["tanh", "tanh", "linear"],
        memory={"kind": "two-compartment", "tau": "25 ms"},
    ),
    "learned-ce": dict(
        sizes=[7, 6, 5, 3],
        activations=["tanh", "relu", "softmax"],
        loss="cross-entropy",
        feedback="learned",
    ),
}


@pytest.mark.parametrize("name", MODELS)
def test_instant_period_equals_sweep_then_relaxation(name):
    """With the instant sweep, a period is :func:`oracle.relax_as` followed by the update."""
    model = make_model(**MODELS[name])
    protocol = make_protocol(relax_steps=25, batch_size=4, update_steps=3)
    params = oracle.init_params(model, seed=3)
    inputs, targets = random_batch(model, 4, seed=5)
    relaxation = oracle.relax_as(model, protocol, params, inputs, targets)
    expected = oracle.apply_update(model, params, relaxation, *RATES)
    result = run_period(model, params, inputs, targets, instant_timing(model, protocol), RATES)
    for c in range(len(model.connections)):
        np.testing.assert_allclose(result.params.W[c], expected.W[c], rtol=0, atol=1e-13)
        if expected.b[c] is not None:
            np.testing.assert_allclose(result.params.b[c], expected.b[c], rtol=0, atol=1e-13)
        if expected.psi[c] is not None:
            np.testing.assert_allclose(result.params.psi[c], expected.psi[c], rtol=0, atol=1e-13)
    for k in range(1, len(model.layers) - 1):
        np.testing.assert_allclose(result.state.x[k], relaxation.x[k], rtol=0, atol=1e-13)


@pytest.mark.parametrize("eta_f", [0.5, 0.1])
def test_leaky_forward_settles_to_the_instant_sweep(eta_f):
    """A leaky forward phase of 30 τ_f leaves x̂ and f' of the sweep (1e-9) and its update
    (1e-8)."""
    model = make_model(**MODELS["chain"])
    n_forward, n_relax = int(round(30 / eta_f)), 20
    params = oracle.init_params(model, seed=2)
    inputs, targets = random_batch(model, 3, seed=9)
    timing = leaky_timing(model, n_forward, n_relax, eta_f)
    result = run_period(model, params, inputs, targets, timing, RATES, keep_history=True)
    sweep = oracle.forward(model, params, inputs)
    at_onset = result.history[n_forward]
    for k in range(1, len(model.layers)):
        np.testing.assert_allclose(at_onset.xhat[k], sweep.xhat[k], rtol=0, atol=1e-9)
        np.testing.assert_allclose(at_onset.fp[k], sweep.fp[k - 1], rtol=0, atol=1e-9)
    protocol = make_protocol(relax_steps=n_relax, batch_size=3)
    instant = run_period(model, params, inputs, targets, instant_timing(model, protocol), RATES)
    for c in range(len(model.connections)):
        assert relative_norm_error(result.changes[c], instant.changes[c]) < 1e-8


@pytest.mark.parametrize("eta_f", [0.5, 0.2, 0.05])
def test_linear_chain_forward_residual_is_the_binomial_tail(eta_f):
    """From rest under a constant stimulus, the layer k hops up has the residual
    Σ_{j<k} C(n,j) η^j (1−η)^{n−j} after n steps (any weights, linear layers)."""
    model = make_model([5, 4, 4, 3], ["linear", "linear", "linear"])
    params = oracle.init_params(model, seed=4)
    inputs, targets = random_batch(model, 2, seed=1)
    steps = 40
    timing = leaky_timing(model, n_forward=steps, n_relax=0, eta_f=eta_f, n_update=0)
    timing = replace(timing, plasticity_step=None)
    result = run_period(model, params, inputs, targets, timing, RATES, keep_history=True)
    settled = oracle.forward(model, params, inputs).xhat
    for n in range(steps + 1):
        for k in range(1, len(model.layers)):
            tail = sum(comb(n, j) * eta_f**j * (1 - eta_f) ** (n - j) for j in range(k))
            residual = relative_norm_error(result.history[n].xhat[k], settled[k])
            assert abs(residual - tail) < 1e-9, (n, k, residual, tail)


def test_current_derivative_after_one_step_equals_stored():
    """f' at the current pre-activation, relaxation started from x̂, one step: the same update
    as f' stored, bit for bit."""
    model = make_model(**MODELS["chain"])
    protocol = make_protocol(relax_steps=1, batch_size=4)
    params = oracle.init_params(model, seed=6)
    inputs, targets = random_batch(model, 4, seed=2)
    timing = instant_timing(model, protocol)
    count = len(model.connections)
    stored = run_period(model, params, inputs, targets, timing, RATES)
    current = run_period(
        model, params, inputs, targets, timing, RATES, derivative_at=["current"] * count
    )
    for c in range(count):
        assert np.array_equal(current.params.W[c], stored.params.W[c])
    # from the second step on the derivative follows the relaxing activity below (smooth tanh)
    smooth = make_model([7, 6, 5, 3], ["tanh", "tanh", "linear"])
    longer = instant_timing(smooth, make_protocol(relax_steps=5, batch_size=4))
    moved = run_period(
        smooth, params, inputs, targets, longer, RATES, derivative_at=["current"] * count
    )
    reference = run_period(smooth, params, inputs, targets, longer, RATES)
    assert relative_norm_error(moved.changes[0], reference.changes[0]) > 1e-6


def test_continuous_plasticity_in_the_last_step_equals_the_end_of_phase_update():
    """Continuous plasticity in a window of one step at the relaxation's end is the update at
    the end of the phase, bit for bit."""
    model = make_model(**MODELS["learned-ce"])
    protocol = make_protocol(relax_steps=12, batch_size=4, update_steps=2)
    params = oracle.init_params(model, seed=8)
    inputs, targets = random_batch(model, 4, seed=3)
    timing = instant_timing(model, protocol)
    end = run_period(model, params, inputs, targets, timing, RATES)
    schedule = Schedule(None, protocol)
    last = schedule.phase_steps["feedforward"] + schedule.phase_steps["relaxation"] - 1
    continuous = replace(timing, plasticity_step=None, continuous=(last, last + 1))
    stepwise = run_period(model, params, inputs, targets, continuous, RATES)
    for c in range(len(model.connections)):
        assert np.array_equal(stepwise.params.W[c], end.params.W[c])
        assert np.array_equal(stepwise.params.psi[c], end.params.psi[c])


def test_continuous_plasticity_sums_eta_over_k_of_every_step():
    """Over a window of K steps the weights change by Σ_k (η/K) rule(state after step k)."""
    model = make_model([5, 4, 3], ["tanh", "linear"])
    protocol = make_protocol(relax_steps=6, batch_size=2)
    params = oracle.init_params(model, seed=1)
    inputs, targets = random_batch(model, 2, seed=4)
    schedule = Schedule(None, protocol)
    first = schedule.phase_steps["feedforward"]
    timing = replace(
        instant_timing(model, protocol), plasticity_step=None, continuous=(first, first + 6)
    )
    result = run_period(model, params, inputs, targets, timing, RATES, keep_history=True)
    expected = [w.copy() for w in params.W]
    for k in range(first, first + 6):
        # the weights change after each step, so the history after step k saw the weights
        # changed by the steps before: recompute with the running weights
        state = result.history[k + 1]
        delta = state.x[2] * state.fp[2]
        expected[1] -= RATES[0] / 6 * delta.T @ state.xhat[1]
        delta = state.x[1] * state.fp[1]
        expected[0] -= RATES[0] / 6 * delta.T @ state.xhat[0]
    for c in range(2):
        np.testing.assert_allclose(result.params.W[c], expected[c], rtol=0, atol=1e-14)
    assert relative_norm_error(result.params.W[0], params.W[0]) > 1e-6

"""The components the synapses mode builds from their Brian2 forms beyond its core.

Each against the period oracle at 1e-10 (traces and weights) or, in float32, the NumPy AR
oracle at the tolerance the precision tests use; where the period oracle shares a component's
array functions (the f' and update variants, the phase shifts), also against a NumPy loop
written here or a closed form.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from conftest import make_protocol, random_batch, relaxation_history, run_brian
from test_forward_dynamics import (
    LEAKY,
    assert_dense_matches_period_oracle,
    every_feature_model,
    jittered,
    make,
    protocol_data,
)
from test_network import _assert_matches_oracle

from arsim import oracle
from arsim.modes import check_execution
from arsim.params import phase_shift
from arsim.spec import model_from_dict
from arsim.spec.schedule import Schedule

VARIANTS = {
    "derivative-current": {"derivative_at": "current"},
    "derivative-upper": {"derivative_at": "upper"},
    "update-derivative-current": {"update_derivative_at": "current"},
    "update-derivative-upper": {"update_derivative_at": "upper"},
    "update-uses-current": {"update_uses": "current"},
    "all-current": {
        "derivative_at": "current",
        "update_derivative_at": "current",
        "update_uses": "current",
    },
    "mixed": {"derivative_at": "upper", "update_derivative_at": "current"},
}
FORWARD = {
    "instant": {},
    "leaky-overlap": {"feedforward": LEAKY | {"relaxation_onset": "4 ms"}},
}


@pytest.mark.parametrize("forward", FORWARD)
@pytest.mark.parametrize("variant", VARIANTS)
def test_variants_match_the_period_oracle(variant, forward):
    """f' at the current pre-activation or of the upper layer's x, in the top-down signal and
    in the update, and the current presynaptic activity: every x, x̂ and f' at every step and
    the weights equal the period oracle's (minibatches of 3 presented one after another)."""
    model = every_feature_model(**VARIANTS[variant])
    protocol = make(protocol_data(**FORWARD[forward]))
    check_execution(protocol, "synapses", "runtime", model)
    assert_dense_matches_period_oracle(model, protocol, 6, mode="synapses")


def _chain(**defaults):
    """input (3) → h1 (4, tanh) → h2 (3, sigmoid) → output (2, linear), biases, ψ = Wᵀ."""
    data = {
        "name": "chain",
        "loss": "mse",
        "init": {"variance": 0.3},
        "layers": [
            {"name": "input", "size": 3},
            {"name": "h1", "size": 4, "activation": "tanh"},
            {"name": "h2", "size": 3, "activation": "sigmoid"},
            {"name": "output", "size": 2, "activation": "linear"},
        ],
        "connections": [
            {"source": "input", "target": "h1"},
            {"source": "h1", "target": "h2"},
            {"source": "h2", "target": "output"},
        ],
        "defaults": {"bias": True, "feedback": "transpose"} | defaults,
    }
    return model_from_dict(data, "chain.toml")


def _tanh_prime(a):
    return 1.0 - np.tanh(a) ** 2


def _sigmoid_prime(a):
    s = 1.0 / (1.0 + np.exp(-a))
    return s * (1.0 - s)


def _numpy_chain(params, inputs, targets, relax_steps, eta_x, rate, scale, variants):
    """The chain's AR, one sample at a time, written out: returns the weights, biases and each
    sample's (h1, h2) history over the relaxation."""
    where, update_where, uses = variants
    W = [w.copy() for w in params.W]
    b = [v.copy() for v in params.b]
    primes = [_tanh_prime, _sigmoid_prime, lambda a: np.ones_like(a)]
    histories = []
    for x0, target in zip(inputs, targets, strict=True):
        a1 = W[0] @ x0 + b[0]
        xhat1 = np.tanh(a1)
        a2 = W[1] @ xhat1 + b[1]
        xhat2 = 1.0 / (1.0 + np.exp(-a2))
        a3 = W[2] @ xhat2 + b[2]
        stored = [primes[0](a1), primes[1](a2), np.ones_like(a3)]
        x = [x0, xhat1.copy(), xhat2.copy(), scale * (a3 - target)]
        xhat = [x0, xhat1, xhat2, a3]

        def fprime(layer, at, x=x, stored=stored):  # f' of layer 1 … 3 (W[layer − 1] into it)
            if at == "stored":
                return stored[layer - 1]
            if at == "upper":
                return primes[layer - 1](x[layer])
            return primes[layer - 1](W[layer - 1] @ x[layer - 1] + b[layer - 1])

        history = [(x[1].copy(), x[2].copy())]
        for _ in range(relax_steps):
            fb1 = W[1].T @ (x[2] * fprime(2, where))
            fb2 = W[2].T @ (x[3] * fprime(3, where))
            x[1], x[2] = x[1] + eta_x * (-x[1] + fb1), x[2] + eta_x * (-x[2] + fb2)
            history.append((x[1].copy(), x[2].copy()))
        histories.append(history)
        deltas = [x[k] * fprime(k, update_where) for k in (1, 2, 3)]
        pres = [x0] + [x[k] if uses == "current" else xhat[k] for k in (1, 2)]
        for c in range(3):
            W[c] -= rate * np.outer(deltas[c], pres[c])
            b[c] -= rate * deltas[c]
    return W, b, histories


@pytest.mark.parametrize(
    "variants",
    [
        ("current", "stored", "stored"),
        ("upper", "stored", "stored"),
        ("stored", "current", "current"),
        ("current", "upper", "current"),
    ],
)
def test_variants_match_a_numpy_loop_written_out(variants):
    """The chain with minibatches of one: the hidden traces and the weights and biases equal
    a NumPy loop that writes out the relaxation, f' and the update (no arsim code)."""
    where, update_where, uses = variants
    model = _chain(derivative_at=where, update_derivative_at=update_where, update_uses=uses)
    relax_steps, eta_x = 12, 0.1
    protocol = make_protocol(relax_steps, eta_x=eta_x, batch_size=1, rate=0.05)
    params = oracle.init_params(model, seed=3)
    inputs, targets = random_batch(model, 3, seed=3)
    result, _ = run_brian(model, protocol, inputs, targets, params, mode="synapses")
    rate = Schedule(model, protocol).learning_rates(1)[0]
    W, b, histories = _numpy_chain(
        params, inputs, targets, relax_steps, eta_x, rate, model.loss_scale, variants
    )
    for k, name in ((0, "h1"), (1, "h2")):
        got = relaxation_history(result.traces, protocol, name, 3)
        want = np.array([[step[k] for step in history] for history in histories]).swapaxes(0, 1)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-10, err_msg=name)
    for c in range(3):
        assert np.abs(W[c] - params.W[c]).max() > 1e-4
        np.testing.assert_allclose(result.params.W[c], W[c], rtol=0, atol=1e-10)
        np.testing.assert_allclose(result.params.b[c], b[c], rtol=0, atol=1e-10)


def test_the_variants_change_what_the_stored_f_prime_gives():
    """The variants are not the stored f' under another name: the weights differ."""
    protocol = make_protocol(12, batch_size=1, rate=0.05)
    params = oracle.init_params(_chain(), seed=3)
    inputs, targets = random_batch(_chain(), 3, seed=3)
    plain, _ = run_brian(_chain(), protocol, inputs, targets, params, mode="synapses")
    for settings in VARIANTS.values():
        varied, _ = run_brian(_chain(**settings), protocol, inputs, targets, params, "synapses")
        assert np.abs(varied.params.W[1] - plain.params.W[1]).max() > 1e-8, settings


def test_relaxation_until_converged_matches_the_oracle():
    """``phases.tolerance``: the NumPy AR oracle's traces, weights and steps taken."""
    from conftest import make_model

    model = make_model([6, 5, 4, 4, 3], ["tanh", "tanh", "tanh", "linear"], bias=True)
    protocol = replace(make_protocol(relax_steps=150, batch_size=4, rate=0.02), tolerance=1e-4)
    params, result, _ = _assert_matches_oracle(model, protocol, 6, "synapses")
    inputs, targets = random_batch(model, 6, seed=7)
    first = oracle.relax(model, params, inputs[:4], targets[:4], 150, 0.1, tolerance=1e-4)
    np.testing.assert_array_equal(result.relaxation_steps[:4], first.steps)
    assert 0 < result.relaxation_steps.min() and result.relaxation_steps.max() < 150
    dense, _ = run_brian(model, protocol, inputs, targets, params, mode="dense")
    np.testing.assert_array_equal(result.relaxation_steps, dense.relaxation_steps)


def test_single_precision_matches_the_oracle_in_float32():
    """``precision = "single"``: within the float32 tolerance of the NumPy AR oracle, and the
    recorded traces are float32 values."""
    from conftest import every_feature_model as plain_model

    model = plain_model()
    protocol = replace(make_protocol(relax_steps=12, batch_size=3, rate=0.05), precision="single")
    params, result, _ = _assert_matches_oracle(model, protocol, 6, "synapses", 1e-5, 1e-5)
    values = result.traces.value.to_numpy()
    np.testing.assert_array_equal(values.astype(np.float32).astype(values.dtype), values)
    double, _ = run_brian(
        model, replace(protocol, precision="double"), *random_batch(model, 6, 7), params, "synapses"
    )
    assert not np.array_equal(double.params.W[0], result.params.W[0])


@pytest.mark.parametrize("case", {"instant": {}, "leaky": {"feedforward": LEAKY}})
def test_jittered_phase_boundary_matches_the_period_oracle(case):
    protocol = jittered(**{"instant": {}, "leaky": {"feedforward": LEAKY}}[case])
    assert_dense_matches_period_oracle(every_feature_model(), protocol, 10, mode="synapses")


def test_jitter_shortens_each_minibatch_s_relaxation_by_its_shift():
    """Closed form: in minibatch ``m`` a hidden x moves on exactly ``10 − s_m`` steps of its
    period (10 relaxation steps, boundary shifted by ``s_m``), the same for its samples."""
    protocol = replace(jittered(), record=make_protocol(1).record)
    model = every_feature_model()
    inputs, targets = random_batch(model, 10, seed=7)
    result, _ = run_brian(model, protocol, inputs, targets, None, mode="synapses")
    rows = result.traces[(result.traces.layer == "h1") & (result.traces.variable == "x")]
    moved = []
    for sample in range(10):
        x = rows[rows["sample"] == sample].pivot_table(index="t", columns="neuron", values="value")
        moved.append(int((np.abs(np.diff(x.to_numpy(), axis=0)).max(axis=1) > 0).sum()))
    shifts = [phase_shift(0, 3, m) for m in range(5)]
    assert len(set(shifts)) > 1
    assert moved == [10 - shifts[s // 2] for s in range(10)]

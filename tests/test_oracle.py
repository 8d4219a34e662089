"""The NumPy oracle against finite differences and closed-form results."""

from __future__ import annotations

from math import comb, exp, factorial

import numpy as np
import pytest
from conftest import make_model

from arsim import oracle
from arsim.activations import ACTIVATIONS

VARIANTS = [
    dict(activations=["relu", "relu", "linear"], loss="mse", bias=True),
    dict(activations=["tanh", "tanh", "linear"], loss="mse", bias=True),
    dict(activations=["sigmoid", "sigmoid", "sigmoid"], loss="mse", bias=False),
    dict(activations=["tanh", "relu", "softmax"], loss="cross-entropy", bias=True),
    dict(activations=["relu", "tanh", "linear"], loss="mse", bias=True, loss_scale=2.0),
]


def _batch(model, n=3, seed=0):
    rng = np.random.default_rng(seed)
    inputs = rng.random((n, model.input.size))
    targets = rng.dirichlet(np.ones(model.output.size), n)  # valid distributions for CE as well
    return inputs, targets


def _total_loss(model, params, inputs, targets):
    return oracle.loss(model, params, inputs, targets).sum()


@pytest.mark.parametrize(
    "variant", VARIANTS, ids=lambda v: "-".join(v["activations"]) + "-" + v["loss"]
)
def test_backprop_matches_finite_differences(variant):
    variant = dict(variant)
    model = make_model([4, 5, 3, 3], variant.pop("activations"), **variant)
    params = oracle.init_params(model, seed=3)
    inputs, targets = _batch(model)
    grads = oracle.backprop(model, params, inputs, targets)
    for layer in range(len(params.W)):
        numeric = _numeric_gradient(model, params, inputs, targets, "W", layer)
        np.testing.assert_allclose(grads.W[layer], numeric, rtol=1e-6, atol=1e-8)
        if params.b[layer] is not None:
            numeric_b = _numeric_gradient(model, params, inputs, targets, "b", layer)
            np.testing.assert_allclose(grads.b[layer], numeric_b, rtol=1e-6, atol=1e-8)


def _numeric_gradient(model, params, inputs, targets, kind, layer, step=1e-6):
    """Central differences of the batch loss with respect to ``params.<kind>[layer]``."""
    array = getattr(params, kind)[layer]
    numeric = np.zeros_like(array)
    for index in np.ndindex(array.shape):
        plus, minus = params.copy(), params.copy()
        getattr(plus, kind)[layer][index] += step
        getattr(minus, kind)[layer][index] -= step
        difference = _total_loss(model, plus, inputs, targets) - _total_loss(
            model, minus, inputs, targets
        )
        numeric[index] = difference / (2 * step)
    return numeric


def test_activity_gradient_matches_finite_differences():
    """∂L/∂x̂_l for a hidden layer: perturb the layer's activity and sweep the rest."""
    model = make_model([4, 5, 3, 2], ["tanh", "sigmoid", "linear"], bias=True)
    params = oracle.init_params(model, seed=5)
    inputs, targets = _batch(model, n=1)
    grads = oracle.backprop(model, params, inputs, targets)
    fwd = oracle.forward(model, params, inputs)

    def loss_from(layer, activity):
        x = activity
        for k in range(layer, len(params.W)):
            a = x @ params.W[k].T + (0 if params.b[k] is None else params.b[k])
            x = ACTIVATIONS[model.layers[k + 1].activation].f(a)
        return 0.5 * np.sum((x - targets) ** 2)

    for layer in (1, 2):
        numeric = np.zeros_like(fwd.xhat[layer])
        for index in np.ndindex(numeric.shape):
            plus, minus = fwd.xhat[layer].copy(), fwd.xhat[layer].copy()
            plus[index] += 1e-6
            minus[index] -= 1e-6
            numeric[index] = (loss_from(layer, plus) - loss_from(layer, minus)) / 2e-6
        np.testing.assert_allclose(grads.activity[layer], numeric, rtol=1e-6)


def test_activation_derivatives_match_finite_differences():
    a = np.linspace(-3, 3, 61) + 0.013  # avoid ReLU's kink at 0
    for spec in ACTIVATIONS.values():
        numeric = (spec.f(a + 1e-6) - spec.f(a - 1e-6)) / 2e-6
        np.testing.assert_allclose(spec.fprime(a), numeric, rtol=1e-6, atol=1e-9, err_msg=spec.name)


def test_ar_with_unit_step_is_exact_backprop_after_depth_steps():
    """With η_x = 1 each step copies the layer above: exact after L − 1 steps (ALGORITHM.md)."""
    model = make_model([6, 5, 4, 3, 2], ["relu", "tanh", "sigmoid", "linear"], bias=True)
    params = oracle.init_params(model, seed=2)
    inputs, targets = _batch(model)
    grads = oracle.backprop(model, params, inputs, targets)
    relaxed = oracle.relax(model, params, inputs, targets, steps=3, eta_x=1.0)
    for layer in (1, 2, 3):
        np.testing.assert_allclose(relaxed.x[layer], grads.activity[layer], rtol=1e-13, atol=1e-15)
    for got, expected in zip(relaxed.W, grads.W, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-13, atol=1e-15)


def test_linear_chain_residual_is_the_binomial_tail():
    """Linear chain from rest: after n Euler steps, layer k hops down has residual
    P(Binomial(n, η) < k) = Σ_{j<k} C(n, j) η^j (1-η)^(n-j), which tends to
    e^{-t/τ} Σ_{j<k} (t/τ)^j / j! as η → 0 with n η = t/τ."""
    model = make_model([3, 4, 4, 4, 2], ["linear"] * 4)
    params = oracle.init_params(model, seed=4)
    inputs, targets = _batch(model, n=2)
    exact = oracle.backprop(model, params, inputs, targets).activity
    eta, steps = 0.05, 60
    relaxed = oracle.relax(
        model, params, inputs, targets, steps, eta, keep_history=True, start="zero"
    )
    for n in (1, 10, 30, 60):
        for hops, layer in ((1, 3), (2, 2), (3, 1)):
            tail = sum(comb(n, j) * eta**j * (1 - eta) ** (n - j) for j in range(hops))
            residual = (exact[layer] - relaxed.history[n][layer]) / exact[layer]
            np.testing.assert_allclose(residual, tail, rtol=1e-9)
    # continuous limit at t = 3 τ: the Euler tail approaches the Poisson tail
    t_over_tau = 3.0
    for eta in (0.1, 0.01, 0.001):
        n = round(t_over_tau / eta)
        euler = sum(comb(n, j) * eta**j * (1 - eta) ** (n - j) for j in range(3))
        continuous = exp(-t_over_tau) * sum(t_over_tau**j / factorial(j) for j in range(3))
        assert abs(euler - continuous) < 0.6 * eta  # first-order convergence


def test_learned_psi_update_is_the_transposed_forward_update():
    model = make_model([4, 3, 3, 2], ["relu", "relu", "linear"], feedback="learned")
    params = oracle.init_params(model, seed=1)
    inputs, targets = _batch(model)
    relaxed = oracle.relax(model, params, inputs, targets, steps=20, eta_x=0.1)
    new = oracle.apply_update(model, params, relaxed, 0.01, 0.02)
    fwd = oracle.forward(model, params, inputs)
    for layer in range(3):
        delta = relaxed.x[layer + 1] * fwd.fp[layer]
        expected = params.psi[layer] - 0.02 * np.einsum("bi,bj->ij", fwd.xhat[layer], delta)
        np.testing.assert_allclose(new.psi[layer], expected, rtol=1e-13)


def test_init_params_draws_the_declared_distribution():
    model = make_model(
        [400, 300, 10], ["relu", "linear"], feedback="fixed", init={"variance": 0.05}
    )
    params = oracle.init_params(model, seed=0)
    assert params.W[0].shape == (300, 400) and params.psi[0].shape == (400, 300)
    assert abs(params.W[0].var() - 0.05) < 0.002 and abs(params.W[0].mean()) < 0.002
    assert abs(params.psi[0].var() - 0.05) < 0.002
    # switching the feedback kind does not change the forward draws
    exact = oracle.init_params(make_model([400, 300, 10], ["relu", "linear"]), seed=0)
    np.testing.assert_array_equal(exact.W[0], params.W[0])
    assert exact.psi[0] is None


def test_relax_as_applies_every_protocol_element():
    from dataclasses import replace

    from conftest import make_protocol

    model = make_model(
        [4, 5, 3, 3, 2],
        ["tanh", "relu", "sigmoid", "linear"],
        bias=True,
        memory={"kind": "trace", "tau": "30 ms"},
    )
    protocol = replace(
        make_protocol(relax_steps=40, start="zero"),
        layer_tau=(("h2", 0.02),),
        feedback_delay=(("h1-h2", 0.002),),
        tolerance=1e-3,
    )
    params = oracle.init_params(model, seed=6)
    inputs, targets = _batch(model, n=3)
    got = oracle.relax_as(model, protocol, params, inputs, targets)
    expected = oracle.relax(
        model,
        params,
        inputs,
        targets,
        40,
        [0.1, 0.1, 0.05, 0.1, 0.1],
        start="zero",
        delays=[0, 2, 0, 0],
        tolerance=1e-3,
        trace=(1 - 1 / 30, 1, 42),
    )
    for a, b in zip(got.x[1:-1] + got.W, expected.x[1:-1] + expected.W, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    np.testing.assert_array_equal(got.steps, expected.steps)


def test_sweep_without_derivatives_and_gradients_without_input_layers():
    """The shortcuts the training loop takes compute the same activities and weight
    gradients (f' and the input layers' ∂L/∂x̂ are left out, not approximated)."""
    model = make_model([6, 5, 4, 3], ["relu", "tanh", "sigmoid"], bias=True)
    params = oracle.init_params(model, seed=5)
    inputs, targets = _batch(model, n=4, seed=5)
    full = oracle.forward(model, params, inputs)
    lean = oracle.forward(model, params, inputs, derivatives=False)
    for got, expected in zip(lean.xhat, full.xhat, strict=True):
        assert np.array_equal(got, expected)
    assert all(fp is None for fp in lean.fp)
    grads = oracle.backprop(model, params, inputs, targets)
    lean_grads = oracle.backprop(model, params, inputs, targets, input_layers=False)
    assert grads.activity[0] is not None and lean_grads.activity[0] is None
    for got, expected in zip(lean_grads.W + lean_grads.b, grads.W + grads.b, strict=True):
        assert np.array_equal(got, expected)
    assert np.array_equal(lean_grads.forward.xhat[-1], full.xhat[-1])


def test_float32_stimuli_and_weights_sweep_in_float32():
    """The sweep computes in the float type it is given: a hand-written float32 sweep."""
    model = make_model([6, 5, 4, 3], ["relu", "tanh", "linear"])
    params = oracle.init_params(model, seed=6).astype(np.float32)
    inputs = _batch(model, n=5, seed=6)[0].astype(np.float32)
    got = oracle.forward(model, params, inputs, derivatives=False).xhat[-1]
    hidden = np.maximum(inputs @ params.W[0].T, np.float32(0))
    expected = np.tanh(hidden @ params.W[1].T) @ params.W[2].T
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)

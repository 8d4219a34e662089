"""The relaxation's update order, relaxing input layers and the weight update's f'.

References: a NumPy statement of the follow-up paper's sequential relaxation loop written here
from its equations (not from arsim's code), and the step-by-step period oracle for the dense
mode on a chain and a DAG.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from conftest import PAPER_MODEL, make_model, random_batch, run_brian
from test_forward_dynamics import (
    LEAKY,
    assert_dense_matches_period_oracle,
    dag_model,
    every_feature_model,
    make,
    protocol_data,
)

from arsim import oracle
from arsim.modes import ExecutionError, check_execution
from arsim.period_oracle import run_period, timing_of
from arsim.spec import RecordSpec, SpecError, load_model, model_from_dict, protocol_from_dict
from arsim.spec.schedule import Schedule

ETA_X, RELAX_STEPS, RATE = 0.1, 20, 0.01


def derivative_of(activation: str, a: np.ndarray) -> np.ndarray:
    """f'(a) of tanh, ReLU (0 at 0) or the identity."""
    if activation == "tanh":
        return 1.0 - np.tanh(a) ** 2
    if activation == "relu":
        return (a > 0).astype(float)
    return np.ones_like(a)


def activate(activation: str, a: np.ndarray) -> np.ndarray:
    """f(a) of tanh, ReLU or the identity."""
    return {"tanh": np.tanh, "relu": lambda v: np.maximum(v, 0.0)}.get(activation, lambda v: v)(a)


def sequential_relaxation(weights, activations, stimulus, target, flags, steps, rate):
    """The follow-up paper's minibatch, stated from its equations.

    Layout: ``W_j`` of shape (out, in) from layer j to layer j+1, rows of the batch. Every layer
    (the input included) starts at its feedforward value, the output is clamped to
    ``2 (x̂_L − T)``; each step updates ``x_j ← x_j + η_x [−x_j + (d_j ⊙ x_{j+1}) W_j]`` for j
    from the top connection down, ``x_{j+1}`` already updated in this step; then
    ``W_j ← W_j − η (d'_j ⊙ x_{j+1})ᵀ p_j``. ``flags``: ``derivative`` (f' in the relaxation at
    all), ``d`` and ``d_update`` in {'stored', 'current', 'upper'}, ``p`` in {'stored',
    'current'}. Returns the new weights and the relaxed activities.
    """
    n = len(weights)
    xhat, pre = [stimulus], []
    for j in range(n):
        pre.append(xhat[j] @ weights[j].T)
        xhat.append(activate(activations[j], pre[j]))
    x = [v.copy() for v in xhat]
    x[n] = 2.0 * (xhat[n] - target)

    def fprime(j, kind):  # the f' of layer j+1 that multiplies connection j's signal
        if kind == "current":
            return derivative_of(activations[j], x[j] @ weights[j].T)
        if kind == "upper":
            return derivative_of(activations[j], x[j + 1])
        return derivative_of(activations[j], pre[j])

    for _ in range(steps):
        for j in range(n - 1, -1, -1):
            d = fprime(j, flags["d"]) if flags["derivative"] else 1.0
            x[j] = x[j] + ETA_X * (-x[j] + (d * x[j + 1]) @ weights[j])
    new = []
    for j in range(n):
        delta = fprime(j, flags["d_update"]) * x[j + 1]
        presynaptic = x[j] if flags["p"] == "current" else xhat[j]
        new.append(weights[j] - rate * delta.T @ presynaptic)
    return new, x


EXACT = dict(derivative=True, d="stored", d_update="stored", p="stored")
FLAG_SETS = {
    "exact": (EXACT, 1.0),
    "no-fprime": (EXACT | dict(derivative=False), 1.0),
    "use_fderiv_x_update": (EXACT | dict(d="current"), 1.0),
    "xnext_fderiv_x": (EXACT | dict(d="upper"), 1.0),
    "use_current_x_weights": (EXACT | dict(p="current"), 1.0),
    "use_fderiv_weight_update": (EXACT | dict(d_update="current"), 1.0),
    "xnext_fderiv_weights": (EXACT | dict(d_update="upper"), 1.0),
    "dynamical_weight_update": (EXACT, 1.0 / RELAX_STEPS),
    "use_fderiv_both": (EXACT | dict(d="current", d_update="current"), 1.0),
    "current-x-dilated": (EXACT | dict(d="current", p="current"), 1.0 / RELAX_STEPS),
}
"""The table's flag sets: the reference's flags and the factor on the learning rate."""


def connection_settings(flags: dict) -> dict:
    """The model's ``[defaults]`` that ask for the reference's ``flags``."""
    return {
        "derivative": flags["derivative"],
        "derivative_at": flags["d"],
        "update_derivative_at": flags["d_update"],
        "update_uses": flags["p"],
    }


def authors_protocol(order="top-down", relax_steps=RELAX_STEPS, rate=RATE, batch_size=8):
    """dt = 1 ms, τ = 10 ms (η_x = 0.1), one feedforward step, the relaxation, one update step."""
    data = protocol_data(
        feedforward_ms=1, relax_ms=relax_steps, update_ms=1, batch_size=batch_size, rate=rate
    )
    data["relaxation"] = {"order": order, "input": "relaxes"}
    return make(data)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("flag_set", FLAG_SETS)
def test_top_down_minibatch_equals_the_sequential_loop(activation, flag_set):
    """One minibatch, input relaxing, every flag set: period oracle and dense mode against the
    NumPy statement of the loop (weights and the relaxed activities, 1e-10)."""
    flags, rate_factor = FLAG_SETS[flag_set]
    model = make_model([6, 5, 5, 3], [activation, activation, "linear"], loss_scale=2.0, seed=3)
    model = replace(
        model,
        connections=tuple(replace(c, **connection_settings(flags)) for c in model.connections),
    )
    protocol = authors_protocol(rate=RATE * rate_factor)
    params = oracle.init_params(model, seed=5)
    params.W = [w * 8.0 for w in params.W]  # pre-activations of order 1: f' away from 1 and 0
    inputs, targets = random_batch(model, 8, seed=2)
    inputs = inputs * 2.0 - 1.0  # of either sign, as relaxed inputs become
    expected_W, expected_x = sequential_relaxation(
        params.W,
        [activation, activation, "linear"],
        inputs,
        targets,
        flags,
        RELAX_STEPS,
        RATE * rate_factor,
    )
    schedule = Schedule(model, protocol)
    result = run_period(
        model, params, inputs, targets, timing_of(model, protocol), schedule.learning_rates(8)
    )
    for j, want in enumerate(expected_W):
        assert np.abs(want - params.W[j]).max() > 1e-6  # the weights moved
        np.testing.assert_allclose(result.params.W[j], want, rtol=0, atol=1e-10)
    for layer in range(len(expected_x) - 1):
        np.testing.assert_allclose(result.state.x[layer], expected_x[layer], rtol=0, atol=1e-10)
    dense, _ = run_brian(model, protocol, inputs, targets, params)
    for j, want in enumerate(expected_W):
        np.testing.assert_allclose(dense.params.W[j], want, rtol=0, atol=1e-10)


def test_the_reference_loop_is_not_the_parallel_one():
    """The reference distinguishes the orders: a parallel run of arsim misses it by far more
    than the tolerance (so the equality above says something about the order)."""
    model = make_model([6, 5, 5, 3], ["tanh", "tanh", "linear"], loss_scale=2.0)
    params = oracle.init_params(model, seed=5)
    params.W = [w * 8.0 for w in params.W]
    inputs, targets = random_batch(model, 8, seed=2)
    _, expected_x = sequential_relaxation(
        params.W, ["tanh", "tanh", "linear"], inputs, targets, EXACT, 5, RATE
    )
    protocol = authors_protocol(order="parallel", relax_steps=5)
    rates = Schedule(model, protocol).learning_rates(8)
    result = run_period(model, params, inputs, targets, timing_of(model, protocol), rates)
    assert np.abs(result.state.x[1] - expected_x[1]).max() > 1e-3


def relaxed(model, params, inputs, targets, order, steps):
    """Every layer's x after ``steps`` relaxation steps of the period oracle."""
    protocol = authors_protocol(order=order, relax_steps=steps)
    rates = Schedule(model, protocol).learning_rates(len(inputs))
    return run_period(model, params, inputs, targets, timing_of(model, protocol), rates).state.x


def test_orders_share_the_fixed_point_and_differ_on_the_way():
    """Paper-shaped chain (tanh): top-down and parallel agree within 1e-6 after 300 steps
    and differ by more than 1e-3 after 10."""
    model = make_model([30, 20, 20, 10, 5], ["tanh", "tanh", "tanh", "linear"], loss_scale=2.0)
    params = oracle.init_params(model, seed=1)
    params.W = [w * 4.0 for w in params.W]
    inputs, targets = random_batch(model, 8, seed=4)
    for steps, close in ((300, True), (10, False)):
        parallel = relaxed(model, params, inputs, targets, "parallel", steps)
        top_down = relaxed(model, params, inputs, targets, "top-down", steps)
        worst = max(np.abs(a - b).max() for a, b in zip(parallel, top_down, strict=True))
        assert (worst < 1e-6) if close else (worst > 1e-3), (steps, worst)


def paper_network(**defaults):
    """models/paper-mlp.toml's network (784-300-300-100-10) with ``defaults``."""
    model = load_model(PAPER_MODEL)
    return replace(model, connections=tuple(replace(c, **defaults) for c in model.connections))


OPTIONS = {
    "top-down": ({}, {"order": "top-down"}),
    "input-relaxes": ({"update_uses": "current"}, {"input": "relaxes"}),
    "update-f'-current": ({"update_derivative_at": "current"}, {}),
    "update-f'-upper": ({"update_derivative_at": "upper"}, {}),
    "all": (
        {"derivative_at": "current", "update_uses": "current", "update_derivative_at": "upper"},
        {"order": "top-down", "input": "relaxes"},
    ),
}


@pytest.mark.parametrize("option", OPTIONS)
@pytest.mark.parametrize("forward", ["instant", "leaky"])
def test_new_options_match_the_period_oracle_on_a_dag(option, forward):
    """Dense mode against the period oracle (traces and weights, 1e-10): the every-feature
    chain and a DAG with two inputs, a skip connection and a fan-in."""
    settings, relaxation = OPTIONS[option]
    tables = {"relaxation": relaxation}
    if forward == "leaky":
        tables["feedforward"] = LEAKY | {"relaxation_onset": "6 ms"}
    protocol = make(protocol_data(**tables))
    assert_dense_matches_period_oracle(dag_model(**settings), protocol, n_samples=6)
    if forward == "instant":
        assert_dense_matches_period_oracle(every_feature_model(**settings), protocol, n_samples=6)


@pytest.mark.parametrize("option", OPTIONS)
def test_new_options_match_the_period_oracle_on_the_paper_network(option):
    """The paper network (784-300-300-100-10, ReLU), 12 relaxation steps, minibatches of 2."""
    settings, relaxation = OPTIONS[option]
    data = protocol_data(feedforward_ms=1, relax_ms=12, update_ms=1, batch_size=2, rate=0.001)
    data["relaxation"] = relaxation
    record = RecordSpec(variables=("x", "xhat", "fp"), neurons=(0, 1, 2, 3), samples=None)
    protocol = replace(protocol_from_dict(data, "paper-like.toml"), record=record)
    assert_dense_matches_period_oracle(paper_network(**settings), protocol, n_samples=4)


def test_the_options_change_the_outcome():
    """Each option gives weights other than the plain run's (it is not ignored)."""
    model = dag_model()
    params = oracle.init_params(model, seed=2)
    inputs, targets = random_batch(model, 6, seed=2)

    def weights(settings, relaxation):
        protocol = make(protocol_data(batch_size=6, relaxation=relaxation))
        changed = replace(
            model, connections=tuple(replace(c, **settings) for c in model.connections)
        )
        rates = Schedule(changed, protocol).learning_rates(6)
        timing = timing_of(changed, protocol)
        return run_period(changed, params, inputs, targets, timing, rates).params.W

    plain = weights({}, {})
    for option, (settings, relaxation) in OPTIONS.items():
        if option == "input-relaxes":  # the relaxed input against the stimulus, both current
            plain_current = weights(settings, {})
            other = weights(settings, relaxation)
            moved = zip(plain_current, other, strict=True)
            assert max(np.abs(a - b).max() for a, b in moved) > 1e-8
            continue
        other = weights(settings, relaxation)
        assert max(np.abs(a - b).max() for a, b in zip(plain, other, strict=True)) > 1e-8, option


@pytest.mark.parametrize(
    "settings, relaxation, where",
    [
        ({}, {"order": "top-down"}, "leaky.toml: relaxation.order: only the dense mode"),
        ({}, {"input": "relaxes"}, "leaky.toml: relaxation.input: only the dense mode"),
    ],
)
def test_synapses_modes_refuse_the_new_options_in_one_line(settings, relaxation, where):
    protocol = make(protocol_data(relaxation=relaxation))
    for device in ("runtime", "cpp_standalone"):
        with pytest.raises(ExecutionError) as error:
            check_execution(protocol, "synapses", device, dag_model(**settings))
        assert str(error.value).startswith(where) and "\n" not in str(error.value)


def test_bad_relaxation_keys_name_file_and_key():
    with pytest.raises(SpecError, match=r"p\.toml: relaxation\.order: .*parallel.*top-down"):
        protocol_from_dict(protocol_data(relaxation={"order": "sideways"}), "p.toml")
    with pytest.raises(SpecError, match=r"p\.toml: relaxation\.input: .*clamped.*relaxes"):
        protocol_from_dict(protocol_data(relaxation={"input": "free"}), "p.toml")
    with pytest.raises(SpecError, match=r"p\.toml: relaxation\.order: .*tolerance"):
        data = protocol_data(relaxation={"order": "top-down"})
        data["phases"]["tolerance"] = 1e-3
        protocol_from_dict(data, "p.toml")
    model = {
        "layers": [{"name": "a", "size": 2}, {"name": "b", "size": 2, "activation": "tanh"}],
        "defaults": {"update_derivative_at": "later"},
    }
    with pytest.raises(SpecError, match=r"m\.toml: defaults\.update_derivative_at: .*upper"):
        model_from_dict(model, "m.toml")


@pytest.mark.parametrize("settings", [{}, {"update_uses": "current"}])
def test_top_down_with_continuous_plasticity_matches_the_period_oracle(settings):
    """W changing at every step of a top-down relaxation (the input relaxing): dense = oracle."""
    tables = {"relaxation": {"order": "top-down", "input": "relaxes"}}
    tables["plasticity"] = {"continuous": True}
    protocol = make(protocol_data(**tables))
    assert_dense_matches_period_oracle(dag_model(**settings), protocol, n_samples=6)

"""A hidden layer's own equations and drive (``[[layers]] equations``, ``drive``)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from conftest import (
    ROOT,
    make_model,
    make_protocol,
    random_batch,
    relaxation_history,
    run_brian,
)

from arsim import oracle
from arsim.spec import SpecError, load_model, model_from_dict

ADAPTATION = {"equations": "dadapt/dt = (0.3*x - adapt) / (40*ms) : 1", "drive": "-adapt"}


def _model(sizes=(5, 4, 3, 2), activations=("tanh", "relu", "linear"), **terms):
    """A chain whose first hidden layer carries ``terms``."""
    model = make_model(list(sizes), list(activations), bias=True)
    layers = list(model.layers)
    layers[1] = replace(layers[1], **terms)
    return replace(model, layers=tuple(layers))


@pytest.mark.parametrize(
    "terms, key, words",
    [
        ({"equations": "dadapt/dt = (x - adapt / (40*ms) : 1"}, "equations", "cannot parse"),
        ({"equations": "x : 1"}, "equations", "layer's own variable"),
        (
            {"equations": "dq/dt = -q / ms : 1", "drive": "q +"},
            "equations",
            "cannot parse the drive",
        ),
    ],
)
def test_bad_terms_are_refused_in_one_line_naming_file_and_key(terms, key, words):
    data = {
        "name": "terms",
        "layers": [
            {"name": "input", "size": 3},
            {"name": "h1", "size": 2, "activation": "tanh"} | terms,
            {"name": "output", "size": 2},
        ],
    }
    with pytest.raises(SpecError) as error:
        model_from_dict(data, "terms.toml")
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"terms.toml: layers[1].{key}: ")
    assert words in message


def test_terms_on_a_layer_that_does_not_relax_are_refused():
    data = {
        "name": "terms",
        "layers": [{"name": "input", "size": 3}, {"name": "output", "size": 2, "drive": "0.1"}],
    }
    with pytest.raises(SpecError, match=r"terms.toml: layers\[1\].drive: .* does not relax"):
        model_from_dict(data, "terms.toml")


def test_a_zero_drive_is_bit_identical_to_the_plain_model(mode):
    protocol = make_protocol(relax_steps=10, batch_size=2, rate=0.05)
    plain, zero = _model(), _model(drive="0")
    params = oracle.init_params(plain, seed=4)
    inputs, targets = random_batch(plain, 4, seed=4)
    first, _ = run_brian(plain, protocol, inputs, targets, params, mode)
    second, _ = run_brian(zero, protocol, inputs, targets, params, mode)
    for a, b in zip(first.params.W, second.params.W, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(first.traces.value.to_numpy(), second.traces.value.to_numpy())


def test_a_constant_drive_shifts_the_fixed_point_by_itself():
    """input → h1 → output: h1's top-down input is the exact gradient g (the output is
    clamped), so with ``drive = c`` the relaxation is x_n = (g + c) + (x̂ − g − c)(1 − η)^n:
    the recorded x after n steps equals that closed form (backprop from the NumPy oracle)."""
    model = _model(sizes=(4, 3, 2), activations=("tanh", "linear"), drive="0.25")
    protocol = make_protocol(relax_steps=12, batch_size=2, rate=0.0)
    params = oracle.init_params(model, seed=5)
    inputs, targets = random_batch(model, 2, seed=5)
    result, _ = run_brian(model, protocol, inputs, targets, params)
    history = relaxation_history(result.traces, protocol, "h1", 2)
    exact = oracle.backprop(model, params, inputs, targets)
    start, gradient = oracle.forward(model, params, inputs).xhat[1], exact.activity[1]
    for n in (1, 5, 12):
        want = gradient + 0.25 + (start - gradient - 0.25) * 0.9**n
        np.testing.assert_allclose(history[n], want, rtol=0, atol=1e-12)


def test_adaptation_runs_the_same_in_the_dense_and_synapses_modes():
    """Adaptation on h1: traces and weights of both modes agree to 1e-10 and differ from the
    plain model's."""
    protocol = make_protocol(relax_steps=15, batch_size=2, rate=0.05)
    model = _model(**ADAPTATION)
    params = oracle.init_params(model, seed=6)
    inputs, targets = random_batch(model, 4, seed=6)
    dense, _ = run_brian(model, protocol, inputs, targets, params, "dense")
    synapses, _ = run_brian(model, protocol, inputs, targets, params, "synapses")
    plain, _ = run_brian(_model(), protocol, inputs, targets, params, "dense")
    for layer in ("h1", "h2"):
        got = relaxation_history(dense.traces, protocol, layer, 4)
        np.testing.assert_allclose(
            got, relaxation_history(synapses.traces, protocol, layer, 4), rtol=0, atol=1e-10
        )
    for a, b in zip(dense.params.W, synapses.params.W, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-10)
    assert not np.allclose(dense.params.W[0], plain.params.W[0], rtol=0, atol=1e-8)


def test_the_adaptation_example_declares_adaptation_in_every_hidden_layer():
    model = load_model(ROOT / "models" / "paper-mlp-adaptation.toml")
    hidden = [layer for layer in model.layers if model.relaxes(layer.name)]
    assert [layer.name for layer in hidden] == ["h1", "h2", "h3"]
    assert all((layer.equations, layer.drive) == tuple(ADAPTATION.values()) for layer in hidden)

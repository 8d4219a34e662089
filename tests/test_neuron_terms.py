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
from arsim.spec import (
    RecordSpec,
    SpecError,
    check_compatible,
    load_model,
    model_from_dict,
    protocol_from_dict,
)
from arsim.spec.schedule import Schedule

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


# ------------------------------------------------------------- recording a layer's own variables
def _history(traces, layer, variable, period):
    """``(sample, step, neuron) -> value`` of ``variable`` in ``layer`` as an array."""
    rows = traces[(traces.layer == layer) & (traces.variable == variable)]
    samples, neurons = sorted(rows["sample"].unique()), sorted(rows.neuron.unique())
    values = np.full((len(samples), period, len(neurons)), np.nan)
    step = np.rint(rows.t.to_numpy() / 1e-3).astype(int) - 1 - rows["sample"].to_numpy() * period
    values[rows["sample"].to_numpy(), step, rows.neuron.to_numpy()] = rows.value.to_numpy()
    assert not np.isnan(values).any()
    return values


def _adaptation_from_x(x, eta):
    """``adapt`` by forward Euler of ``d adapt/dt = (0.3 x − adapt) / 40 ms`` from 0 at each
    sample, written from the equation: step k reads x as the step starts (x recorded at the
    end of step k − 1; at step 0 the x the sweep set, which holds through that step)."""
    adapt = np.zeros_like(x)
    previous, before = np.zeros_like(x[:, 0]), x[:, 0]
    for k in range(x.shape[1]):
        previous = previous + eta * (0.3 * before - previous)
        adapt[:, k], before = previous, x[:, k]
    return adapt


def test_recorded_adaptation_follows_its_equation_from_the_recorded_x(mode):
    """``[record] variables = ["x", "adapt"]`` on the adaptation model of h1: the recorded
    ``adapt`` of every step of each sample equals a NumPy forward-Euler integration of
    ``d adapt/dt = (0.3 x − adapt) / 40 ms`` driven by the recorded x (1e-12), in every mode."""
    record = RecordSpec(variables=("x", "adapt"), neurons=None, samples=None)
    protocol = make_protocol(relax_steps=15, batch_size=2, rate=0.05, record=record)
    model = _model(**ADAPTATION)
    check_compatible(model, protocol)
    params = oracle.init_params(model, seed=6)
    inputs, targets = random_batch(model, 4, seed=6)
    result, _ = run_brian(model, protocol, inputs, targets, params, mode)
    assert set(result.traces.query("variable == 'adapt'").layer) == {"h1"}  # who declares it
    period = Schedule(None, protocol).sample_steps
    x = _history(result.traces, "h1", "x", period)
    adapt = _history(result.traces, "h1", "adapt", period)
    np.testing.assert_allclose(adapt, _adaptation_from_x(x, 1e-3 / 40e-3), rtol=0, atol=1e-12)
    assert np.abs(adapt).max() > 1e-3  # it did adapt


def test_the_adaptation_example_records_adapt_in_every_hidden_layer():
    """The paper network with adaptation (dense mode, two samples): ``adapt`` of h1, h2, h3
    follows its equation from the recorded x."""
    model = load_model(ROOT / "models" / "paper-mlp-adaptation.toml")
    record = RecordSpec(variables=("x", "adapt"), samples=None)
    protocol = make_protocol(relax_steps=10, batch_size=2, rate=0.0005, record=record)
    check_compatible(model, protocol)
    inputs, targets = random_batch(model, 2, seed=1)
    result, _ = run_brian(model, protocol, inputs, targets, oracle.init_params(model, seed=1))
    period = Schedule(None, protocol).sample_steps
    for layer in ("h1", "h2", "h3"):
        x = _history(result.traces, layer, "x", period)
        adapt = _history(result.traces, layer, "adapt", period)
        np.testing.assert_allclose(adapt, _adaptation_from_x(x, 0.025), rtol=0, atol=1e-12)


def test_recording_an_undeclared_variable_is_refused_naming_the_allowed_ones():
    """A variable that no recorded layer declares: one line naming the protocol file, the key
    and the names allowed (a layer's own variable only where that layer is recorded)."""
    model = _model(**ADAPTATION)
    for variables, layers in ((("x", "adaption"), None), (("adapt",), ("h2",))):
        record = RecordSpec(variables=variables, layers=layers)
        protocol = make_protocol(relax_steps=3, record=record)
        with pytest.raises(SpecError) as error:
            check_compatible(model, protocol)
        message = str(error.value)
        assert "\n" not in message and message.startswith("test-protocol.toml: record.variables: ")
        allowed = "'fb', 'adapt'" if layers is None else "'fb']"
        assert allowed in message, message


def test_a_record_table_names_variables_it_cannot_know_only_as_identifiers():
    phases = {"feedforward": "1 ms", "relaxation": "5 ms", "update": "1 ms"}
    data = {"tau": "10 ms", "dt": "1 ms", "phases": phases}
    data["record"] = {"variables": ["x", "not a name"]}
    with pytest.raises(SpecError, match=r"r.toml: record.variables: expected names from"):
        protocol_from_dict(data, "r.toml")
    data["record"]["variables"] = ["x", "adapt"]  # checked with the model
    assert protocol_from_dict(data, "r.toml").record.variables == ("x", "adapt")

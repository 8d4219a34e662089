"""The backend conformance suite, generated from the component registry.

For every registered component and every backend (network class: mode and device): a backend
that builds the component runs a small job that asks for it, and its traces and weights equal
a reference to 1e-10; a backend that does not build it refuses the job with one line that
names the key. The references are the NumPy AR oracle (:func:`arsim.oracle.relax_as`, which
shares no code with the components) for the instant sweep, and the period oracle
(:mod:`arsim.period_oracle`, the components' array steps) for what only it states: leaky
forward dynamics, continuous plasticity, jitter and the f' and update variants; each of those
also has a test against a reference sharing none of its code (listed in ``docs/components.md``).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from conftest import (
    every_feature_model,
    make_model,
    make_protocol,
    oscillating,
    random_batch,
    relaxation_history,
    run_brian,
)
from test_conv import cnn
from test_forward_dynamics import LEAKY, assert_dense_matches_period_oracle, make, protocol_data
from test_forward_dynamics import every_feature_model as every_feature_model_with_fprime
from test_network import _assert_matches_oracle
from test_neuron_terms import ADAPTATION

from arsim import components, oracle
from arsim.components import Feature
from arsim.modes import NETWORKS, ExecutionError, check_execution, component_table
from arsim.spec import RecordSpec, model_from_dict

RECORD_ALL = RecordSpec(variables=("x", "xhat", "fp"), neurons=None, samples=None)


def _plain():
    return every_feature_model(), make_protocol(relax_steps=12, batch_size=3, rate=0.05)


def _memory():
    model = make_model(
        [5, 4, 4, 3], ["tanh", "relu", "linear"], memory={"kind": "trace", "tau": "20 ms"}
    )
    return model, make_protocol(relax_steps=12, batch_size=3, rate=0.05)


def _period(**tables):
    return lambda: (every_feature_model_with_fprime(), make(protocol_data(**tables)))


def _period_model(**settings):
    return lambda: (every_feature_model_with_fprime(**settings), make(protocol_data()))


def _conv():
    model = model_from_dict(cnn(2), "cnn.toml")
    return model, make_protocol(12, batch_size=2, rate=0.05, feedback_rate=0.05)


def _with(**changes):
    def job():
        model, protocol = _plain()
        return model, replace(protocol, **changes)

    return job


def _jittered():
    data = protocol_data(batch_size=2)
    data["phases"]["jitter"] = "3 ms"
    return every_feature_model_with_fprime(), make(data)


def _neuron_terms():
    model = every_feature_model()
    layers = list(model.layers)
    layers[1] = replace(layers[1], **ADAPTATION)
    return replace(model, layers=tuple(layers)), make_protocol(12, batch_size=3, rate=0.05)


def _stream():
    return every_feature_model(), make(protocol_data(batch_size=2, stimulus={"dwell": "7 ms"}))


JOBS = {
    Feature.RELAXATION: (_plain, "relax"),
    Feature.SWEEP: (_plain, "relax"),
    Feature.OUTPUT_CLAMP: (_plain, "relax"),
    Feature.PLASTICITY: (_plain, "relax"),
    Feature.GATING: (lambda: (every_feature_model(), oscillating(record=RECORD_ALL)), "period"),
    Feature.MEMORY: (_memory, "relax"),
    Feature.FEEDBACK_DELAY: (_with(feedback_delay=(("h1-h2", 0.002),)), "relax"),
    Feature.TOLERANCE: (_with(tolerance=1e-4), "relax"),
    Feature.STIMULUS_STREAM: (_stream, "period"),
    Feature.EARLY_PLASTICITY: (
        lambda: (every_feature_model(), oscillating({"plasticity": "180 deg"}, record=RECORD_ALL)),
        "period",
    ),
    Feature.CONV: (_conv, "relax"),
    Feature.MAXPOOL: (_conv, "relax"),
    Feature.NOISE: (_with(noise=0.1), None),
    Feature.SINGLE_PRECISION: (_with(precision="single"), "relax-single"),
    Feature.LEAKY_FORWARD: (_period(feedforward=LEAKY), "period"),
    Feature.ERROR_UNIT: (_period(feedforward=LEAKY | {"error_tau": "3 ms"}), "period"),
    Feature.CARRY_OVER: (_period(feedforward=LEAKY | {"reset": False}), "period"),
    Feature.PHASE_JITTER: (_jittered, "period"),
    Feature.CONTINUOUS_PLASTICITY: (_period(plasticity={"continuous": True}), "period"),
    Feature.TOP_DOWN_ORDER: (_period(relaxation={"order": "top-down"}), "period"),
    Feature.INPUT_RELAXES: (_period(relaxation={"input": "relaxes"}), "period"),
    Feature.DERIVATIVE_AT: (_period_model(derivative_at="current"), "period"),
    Feature.UPDATE_USES: (_period_model(update_uses="current"), "period"),
    Feature.UPDATE_DERIVATIVE_AT: (_period_model(update_derivative_at="upper"), "period"),
    Feature.SPIKING_FEEDBACK: (
        _period(spikes={"encoder": "poisson", "max_rate": "500 Hz", "synapse_tau": "2 ms"}),
        "period",
    ),
    Feature.NEURON_TERMS: (_neuron_terms, "brian"),
}
"""A job asking for each component, and its reference: ``relax`` (the NumPy AR oracle, 1e-10),
``relax-single`` (the same in float32, 1e-5), ``period`` (the period oracle, 1e-10),
``brian`` (the other runtime mode, which builds the connections its own way; 1e-10) or None
(noise: a statistical check, ``test_network.py::test_noise_has_the_euler_maruyama_variance…``)."""

PAIRS = [(feature, cls) for feature in Feature for cls in NETWORKS]


def test_every_registered_component_has_a_job():
    assert set(JOBS) == set(components.REGISTRY) == set(Feature)


@pytest.mark.parametrize(
    "feature, backend", PAIRS, ids=[f"{f.name}-{c.mode}-{c.device}" for f, c in PAIRS]
)
def test_backend_conformance(feature, backend):
    job, reference = JOBS[feature]
    model, protocol = job()
    component = components.REGISTRY[feature]
    asked = [where for c, where in components.required(protocol, model) if c is component]
    assert component.core or asked, f"the job of {feature} does not ask for it"
    if feature not in backend.builds:
        with pytest.raises(ExecutionError) as refused:
            check_execution(protocol, backend.mode, backend.device, model)
        line = components.refusal(component, asked[0], backend, NETWORKS)
        for message in (str(refused.value), line):
            assert "\n" not in message and message.startswith(asked[0].split(":")[0])
        assert component.asks.key in line and ("--mode" in line or "--device" in line)
        return
    needs = {c.feature for c, _ in components.required(protocol, model)}
    if not needs <= backend.builds:
        pytest.skip(f"the job also asks for {sorted(needs - backend.builds)}")
    if reference is None:
        pytest.skip("noise has no deterministic reference (statistical test in test_network)")
    if reference == "brian":
        _assert_modes_agree(model, protocol, backend)
        return
    if reference == "period":
        assert_dense_matches_period_oracle(
            model, protocol, 2 * protocol.batch_size, mode=backend.mode, device=backend.device
        )
        return
    tolerance = 1e-5 if reference == "relax-single" else 1e-10
    _assert_matches_oracle(
        model, protocol, 6, backend.mode, tolerance, tolerance, device=backend.device
    )


def _assert_modes_agree(model, protocol, backend):
    """The backend's weights and hidden traces equal the other runtime mode's to 1e-10."""
    params = oracle.init_params(model, seed=7)
    inputs, targets = random_batch(model, 6, seed=7)
    other = "synapses" if backend.mode == "dense" else "dense"
    got, _ = run_brian(model, protocol, inputs, targets, params, backend.mode, backend.device)
    want, _ = run_brian(model, protocol, inputs, targets, params, other)
    for a, b in zip(got.params.W, want.params.W, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-10)
    for layer in model.layers:
        if model.relaxes(layer.name):
            np.testing.assert_allclose(
                relaxation_history(got.traces, protocol, layer.name, 6),
                relaxation_history(want.traces, protocol, layer.name, 6),
                rtol=0,
                atol=1e-10,
            )


def test_the_documented_table_is_the_registry_s():
    from pathlib import Path

    text = (Path(__file__).parents[1] / "docs" / "components.md").read_text()
    assert component_table() in text

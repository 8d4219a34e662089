"""Brian2's global state around jobs: every preference and the device as they were before."""

from __future__ import annotations

from dataclasses import replace

import brian2 as b2
import numpy as np
import pytest
from brian2.devices.cpp_standalone.codeobject import CPPStandaloneCodeObject
from conftest import make_model, make_protocol, run_brian

from arsim import oracle
from arsim.dense import DenseNetwork
from arsim.session import BrianSession
from arsim.spec.schedule import Schedule


def _state():
    return dict(b2.prefs), b2.get_device(), CPPStandaloneCodeObject.templater


def test_jobs_of_every_backend_leave_preferences_and_device_as_they_were():
    """A dense job in single precision, a synapses job and a cpp_standalone job, one after
    another in one process: before and after each, every Brian2 preference, the device and
    the templater are the same, and each job's weights equal the NumPy AR oracle's."""
    model = make_model([4, 3, 2], ["tanh", "linear"])
    params = oracle.init_params(model, seed=3)
    base = make_protocol(relax_steps=6, batch_size=2, rate=0.05)
    inputs, targets = np.random.default_rng(0).random((2, 4)), np.eye(2)
    rates = Schedule(None, base).learning_rates(2)
    relaxed = oracle.relax(model, params, inputs, targets, 6, 0.1)
    expected = oracle.apply_update(model, params, relaxed, *rates)
    jobs = [
        ("dense", "runtime", replace(base, precision="single"), 1e-5),
        ("synapses", "runtime", base, 1e-10),
        ("synapses", "cpp_standalone", base, 1e-10),
        ("dense", "runtime", base, 1e-10),
    ]
    for mode, device, protocol, tolerance in jobs:
        before = _state()
        result, _ = run_brian(model, protocol, inputs, targets, params, mode, device)
        assert _state() == before, f"{mode} on {device} changed Brian2's global state"
        for got, want in zip(result.params.W, expected.W, strict=True):
            np.testing.assert_allclose(got, want, rtol=0, atol=tolerance)


def test_a_session_restores_on_error_and_constructors_change_nothing():
    before = _state()
    with pytest.raises(ZeroDivisionError), BrianSession({"core.default_float_dtype": np.float32}):
        assert b2.prefs["core.default_float_dtype"] is np.float32
        1 / 0  # noqa: B018
    assert _state() == before
    model = make_model([3, 2], ["linear"])
    protocol = replace(make_protocol(relax_steps=2, batch_size=1), precision="single")
    network = DenseNetwork(model, protocol, oracle.init_params(model), record=False)
    assert network.groups[1].variables["x"].get_value().dtype == np.float32
    assert _state() == before
    network.run_chunk(np.zeros((1, 3)), np.zeros((1, 2)))  # what is built runs
    assert _state() == before

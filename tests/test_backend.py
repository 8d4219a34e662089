"""The backend protocol: every network class is a :class:`Backend` whose chunks return results."""

from __future__ import annotations

from dataclasses import replace

import brian2 as b2
import numpy as np
import pytest
from brian2.devices.cpp_standalone.codeobject import CPPStandaloneCodeObject
from conftest import make_model, make_protocol, random_batch

from arsim import oracle
from arsim.backend import Backend, ChunkResult
from arsim.dense import DenseNetwork
from arsim.modes import NETWORKS, build_network, session
from arsim.spec import RecordSpec, protocol_from_dict
from arsim.spec.schedule import Schedule

MODEL = make_model([4, 3, 2], ["tanh", "linear"])
"""The network of ``tests/test_session.py`` (a cpp_standalone build of it is reused)."""
PROTOCOL = make_protocol(relax_steps=6, batch_size=2, rate=0.05)


def _state():
    return dict(b2.prefs), b2.get_device(), CPPStandaloneCodeObject.templater


def _expected_updates(params, inputs, targets, batch):
    """Weights after each minibatch by the NumPy AR oracle (relaxation, then the update)."""
    rates = Schedule(None, PROTOCOL).learning_rates(batch)
    expected = []
    for start in range(0, len(inputs), batch):
        x, y = inputs[start : start + batch], targets[start : start + batch]
        relaxed = oracle.relax(MODEL, params, x, y, 6, 0.1)
        params = oracle.apply_update(MODEL, params, relaxed, *rates)
        expected.append(params)
    return expected


@pytest.mark.parametrize("network", NETWORKS, ids=lambda cls: f"{cls.mode}-{cls.device}")
def test_every_backend_returns_its_chunk_and_restores_brian2(network):
    """Built in its session as a context manager: a :class:`Backend`; ``run_chunk`` returns a
    :class:`ChunkResult` with one float64 parameter set per minibatch (each equal to the NumPy
    AR oracle's), the per-sample factors where the backend keeps them, complete, nothing
    converged and no phase shift; after the job Brian2's preferences, device and templater
    are as before and a standalone build folder is released."""
    params = oracle.init_params(MODEL, seed=3)
    before = _state()
    with (
        session(PROTOCOL, network.mode, network.device),
        build_network(MODEL, PROTOCOL, params, network.mode, network.device, False) as backend,
    ):
        assert isinstance(backend, Backend) and type(backend) is network
        inputs, targets = random_batch(MODEL, min(4, backend.chunk_samples), seed=8)
        result = backend.run_chunk(inputs, targets)
    assert _state() == before, f"{network.mode} on {network.device} changed Brian2's state"
    assert getattr(backend, "_build_lock", None) is None  # closed on leaving
    assert isinstance(result, ChunkResult)
    batches = len(inputs) // PROTOCOL.batch_size
    assert len(result.batch_params) == batches and result.complete
    assert result.relaxation_steps == {} and result.phase_shift == 0
    expected = _expected_updates(params, inputs, targets, PROTOCOL.batch_size)
    for got, want in zip(result.batch_params, expected, strict=True):
        for matrix, reference in zip(got.W, want.W, strict=True):
            assert matrix.dtype == np.float64 and matrix.shape == reference.shape
            np.testing.assert_allclose(matrix, reference, rtol=0, atol=1e-10)
    if not result.batch_signals:  # the dense mode keeps the factors δ x̂ᵀ of every sample
        assert network.mode != "dense"
        assert result.signals() == [None] * batches
        return
    assert len(result.batch_signals) == batches
    for signals in result.batch_signals:
        for c, (delta, presynaptic, has_bias) in enumerate(signals):
            connection = MODEL.connections[c]
            target, source = MODEL.layer(connection.target), MODEL.layer(connection.source)
            assert delta.shape == (PROTOCOL.batch_size, target.size)
            assert presynaptic.shape == (PROTOCOL.batch_size, source.size)
            assert has_bias == connection.bias


def test_a_chunk_returns_the_relaxation_steps_of_its_own_samples():
    """With a tolerance each chunk returns the steps its samples relaxed, keyed by sample
    slot since the network started; the first chunk's equal the NumPy oracle's."""
    model = make_model([6, 5, 4, 3], ["tanh", "tanh", "linear"], bias=True)
    protocol = replace(make_protocol(relax_steps=150, batch_size=2, rate=0.02), tolerance=1e-4)
    params = oracle.init_params(model, seed=2)
    inputs, targets = random_batch(model, 4, seed=9)
    with (
        session(protocol, "dense"),
        DenseNetwork(model, protocol, params, record=False, batches_per_chunk=1) as backend,
    ):
        first = backend.run_chunk(inputs[:2], targets[:2], inputs[2:], targets[2:])
        second = backend.run_chunk(inputs[2:], targets[2:])
    assert set(first.relaxation_steps) == {0, 1} and set(second.relaxation_steps) == {2, 3}
    reference = oracle.relax(model, params, inputs[:2], targets[:2], 150, 0.1, tolerance=1e-4)
    assert [first.relaxation_steps[s] for s in (0, 1)] == list(reference.steps)


def test_a_jittered_chunk_reports_the_shift_its_schedule_ran_with():
    """``[phases] jitter``: each chunk (one minibatch) reports the steps its feedforward phase
    was moved by: whole steps within ±jitter, not all zero, and the relaxation ran from the
    moved boundary (the network's schedule starts its relaxation ``shift`` steps later)."""
    phases = {"feedforward": "4 ms", "relaxation": "6 ms", "update": "1 ms", "jitter": "2 ms"}
    data = {"tau": "10 ms", "dt": "1 ms", "phases": phases}
    protocol = protocol_from_dict(data | {"learning": {"batch_size": 2}}, "jitter.toml")
    protocol = replace(protocol, record=RecordSpec(samples=()))
    params = oracle.init_params(MODEL, seed=3)
    nominal = Schedule(MODEL, protocol)
    shifts = []
    with (
        session(protocol, "dense"),
        build_network(MODEL, protocol, params, "dense", record=False) as backend,
    ):
        for seed in range(6):
            result = backend.run_chunk(*random_batch(MODEL, 2, seed=seed))
            start, _ = backend.schedule.relaxation_span()
            assert start - nominal.relaxation_span()[0] == result.phase_shift
            shifts.append(result.phase_shift)
    assert all(abs(s) <= 2 for s in shifts) and any(shifts), shifts

"""Code objects kept from one ``run()`` to the next: reused while nothing they bake in changes,
generated anew (and then computing with the new values) as soon as something does."""

from __future__ import annotations

import brian2 as b2
import numpy as np
import pytest
from conftest import make_model, make_protocol, random_batch

from arsim import oracle
from arsim.codecache import reuse_code_objects
from arsim.dense import DenseNetwork
from arsim.loop import ChunkLoop
from arsim.modes import set_codegen_target


@pytest.fixture(params=["numpy", "cython"])
def target(request):
    previous = b2.prefs.codegen.target
    set_codegen_target(request.param)
    yield request.param
    b2.prefs.codegen.target = previous


def _network(namespace):
    """``dv/dt = rate`` (rate from the namespace) and ``v += kick`` (a shared constant) every
    step: after a run of n steps of dt, v grows by n·(rate·dt + kick)."""
    group = b2.NeuronGroup(
        3, "dv/dt = rate / second : 1\nkick : 1 (shared, constant)", namespace=namespace
    )
    group.run_regularly("v += kick", dt=b2.defaultclock.dt)
    network = b2.Network(group)
    reuse_code_objects(network, namespace)
    return network, group


def _code_objects(group) -> list:
    """The group's code objects themselves (kept, so that no identity is reused)."""
    return [obj.codeobj for obj in group.contained_objects]


def _same(first: list, second: list) -> bool:
    return all(a is b for a, b in zip(first, second, strict=True))


def test_code_objects_are_reused_while_nothing_changes(target):
    namespace = {"rate": 2.0}
    network, group = _network(namespace)
    group.kick = 0.5
    network.run(10 * b2.defaultclock.dt)
    first = _code_objects(group)
    network.run(10 * b2.defaultclock.dt)
    assert _same(_code_objects(group), first)
    dt = float(b2.defaultclock.dt)
    np.testing.assert_allclose(group.v[:], 20 * (2.0 * dt + 0.5), rtol=1e-12)


def test_a_changed_namespace_value_or_constant_makes_new_code_that_uses_it(target):
    namespace = {"rate": 2.0}
    network, group = _network(namespace)
    group.kick = 0.5
    dt = float(b2.defaultclock.dt)
    network.run(10 * b2.defaultclock.dt)
    first = _code_objects(group)
    namespace["rate"] = 7.0  # an external constant the code holds as a value
    network.run(10 * b2.defaultclock.dt)
    second = _code_objects(group)
    assert not any(a is b for a, b in zip(second, first, strict=True))
    expected = 10 * (2.0 * dt + 0.5) + 10 * (7.0 * dt + 0.5)
    np.testing.assert_allclose(group.v[:], expected, rtol=1e-12)
    group.kick = -1.25  # a shared constant variable, also held as a value
    network.run(10 * b2.defaultclock.dt)
    assert not any(a is b for a, b in zip(_code_objects(group), second, strict=True))
    np.testing.assert_allclose(group.v[:], expected + 10 * (7.0 * dt - 1.25), rtol=1e-12)


def test_a_dense_network_reuses_its_code_across_chunks_and_stays_exact():
    """Three chunks of one network (code made once) end where the oracle's AR updates do."""
    set_codegen_target("numpy")
    model = make_model([6, 5, 4, 3], ["relu", "tanh", "linear"])
    protocol = make_protocol(relax_steps=12, batch_size=2, rate=0.05)
    params = oracle.init_params(model, seed=4)
    inputs, targets = random_batch(model, 12, seed=4)
    network = DenseNetwork(model, protocol, params, record=False, batches_per_chunk=2)
    state_updater = network.groups[1].state_updater
    made = [
        state_updater.codeobj for _ in ChunkLoop(network, model, protocol, inputs, targets, params)
    ]
    assert len(made) == 6 and _same(made, [made[0]] * 6)  # made at the first chunk, then reused
    expected = params
    for start in range(0, 12, 2):
        batch = slice(start, start + 2)
        relaxed = oracle.relax(model, expected, inputs[batch], targets[batch], 12, 0.1)
        expected = oracle.apply_update(model, expected, relaxed, 0.05, 0.05)
    got = network.get_params()
    for layer in range(len(model.connections)):
        np.testing.assert_allclose(got.W[layer], expected.W[layer], rtol=1e-10, atol=1e-13)


def test_a_standalone_build_folder_is_one_process_at_a_time_and_reused(tmp_path, monkeypatch):
    """Two claims of the same network at once get two folders; once released, the first
    folder is claimed again (its compiled program is reused); another network has its own."""
    from arsim.standalone import claim_build_dir

    monkeypatch.setenv("ARSIM_BUILD_DIR", str(tmp_path))
    model = make_model([3, 4, 2], ["tanh", "linear"])
    protocol = make_protocol(relax_steps=5)
    first, first_lock = claim_build_dir(model, protocol)
    second, second_lock = claim_build_dir(model, protocol)
    assert first != second and first.parent == second.parent == tmp_path
    first_lock.close()
    again, again_lock = claim_build_dir(model, protocol)
    assert again == first
    other, other_lock = claim_build_dir(model, make_protocol(relax_steps=6))
    assert other not in (first, second) and other.name.endswith("-0")
    for lock in (second_lock, again_lock, other_lock):
        lock.close()

"""The dense mode's chunks (minibatches per Brian2 run) do not change what it computes."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from conftest import make_model, make_protocol, random_batch

from arsim import oracle
from arsim.dense import DenseNetwork
from arsim.loop import ChunkLoop
from arsim.spec import RecordSpec


def _run(model, protocol, params, inputs, targets, batches_per_chunk):
    network = DenseNetwork(
        model, protocol, params, record=False, batches_per_chunk=batches_per_chunk
    )
    loop = ChunkLoop(network, model, protocol, inputs, targets, params)
    return network, [batch.after for batch in loop]


def test_small_minibatches_share_a_run_and_chunk_seams_change_nothing():
    """Batch 2, 14 samples: one run of 1,024 minibatches (the default at batch 2) or chunks
    of 3 minibatches give bit-identical weights after every minibatch, which are AR's."""
    model = make_model([6, 5, 4, 3], ["tanh", "relu", "linear"])
    protocol = replace(make_protocol(relax_steps=8, batch_size=2, rate=0.05), record=RecordSpec())
    params = oracle.init_params(model, seed=2)
    inputs, targets = random_batch(model, 14, seed=2)
    whole, afters = _run(model, protocol, params, inputs, targets, None)
    assert whole.batches_per_chunk == 1024 and whole.chunk_samples == 2048
    chunked, chunked_afters = _run(model, protocol, params, inputs, targets, 3)
    assert len(afters) == len(chunked_afters) == 7
    for a, b in zip(afters, chunked_afters, strict=True):
        for layer in range(3):
            assert np.array_equal(a.W[layer], b.W[layer])
    expected = params
    for start in range(0, 14, 2):
        batch = slice(start, start + 2)
        relaxed = oracle.relax(model, expected, inputs[batch], targets[batch], 8, 0.1)
        expected = oracle.apply_update(model, expected, relaxed, 0.05, 0.05)
    for layer in range(3):
        np.testing.assert_allclose(afters[-1].W[layer], expected.W[layer], rtol=1e-10, atol=1e-12)

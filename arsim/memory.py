"""The memory a run needs, estimated from its declarations before anything is allocated.

A declaration can ask for arrays that no machine holds (a layer of 10¹⁵ neurons, a minibatch
of 10¹² samples); :func:`check_memory` refuses such a run with one line naming the key, the
bytes needed and the bytes available, before the run folder is created.
"""

from __future__ import annotations

import os

from arsim.spec import ModelSpec, ProtocolSpec, SpecError

FLOAT_BYTES = 8
"""Bytes of a float64."""
STATE_VARIABLES = 12
"""Float arrays a neuron of the dense network holds (x, x̂, f', δ, input, feedback, … rounded
up), each per replica of the minibatch."""
WEIGHT_COPIES = 8
"""Copies of the weights a run keeps at once (W and ψ, before and after a minibatch, the
backprop gradient and the per-minibatch parameters of a chunk, rounded up)."""
CHUNK_ROWS = 33
"""Minibatches of stimulus rows the dense network holds at once (a chunk and one more)."""


def available_bytes() -> int | None:
    """Memory available to a new allocation (``MemAvailable`` of Linux), or None if unknown."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def needed_bytes(model: ModelSpec, protocol: ProtocolSpec, n_samples: int) -> dict[str, int]:
    """Bytes the largest arrays of a run need, by the declaration that makes them large.

    Returns
    -------
    dict
        ``{"layers[].size": …, "learning.batch_size": …, "samples": …}``: the weights (by the
        layer sizes), the neuron state and stimulus rows of a minibatch (by the batch size,
        times the layer sizes) and the stimuli and targets of the samples.
    """
    sizes = [int(layer.size) for layer in model.layers]
    weights = 0
    for connection in model.connections:
        source, target = model.layer(connection.source).size, model.layer(connection.target).size
        weights += int(source) * int(target)
    batch = int(protocol.batch_size)
    state = batch * sum(sizes) * STATE_VARIABLES
    stimulus = batch * CHUNK_ROWS * (sizes[0] + sizes[-1])
    data = int(n_samples) * (sizes[0] + sizes[-1])
    return {
        "layers[].size": weights * WEIGHT_COPIES * FLOAT_BYTES,
        "learning.batch_size": (state + stimulus) * FLOAT_BYTES,
        "samples": data * FLOAT_BYTES,
    }


def check_memory(model: ModelSpec, protocol: ProtocolSpec, n_samples: int) -> None:
    """Refuse a run whose arrays cannot fit in the memory available.

    Raises
    ------
    SpecError
        One line naming the file and key (or ``--samples``) that asks for the most memory,
        the bytes the run needs and the bytes available.
    """
    available = available_bytes()
    if available is None:
        return
    needs = needed_bytes(model, protocol, n_samples)
    total = sum(needs.values())
    if total <= available:
        return
    key = max(needs, key=needs.get)
    file = {"layers[].size": model.source, "learning.batch_size": protocol.source}.get(key)
    raise SpecError(
        file or "--samples",
        key if file else str(n_samples),
        f"the run needs about {total:,} bytes of memory but {available:,} are available; "
        "declare smaller sizes",
    )

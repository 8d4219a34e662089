"""The thread policy: how many BLAS and OpenMP threads every arsim process uses.

One BLAS thread per process unless told otherwise (``--threads N`` on ``arsim run``,
``arsim sweep`` and ``arsim bench``, or the environment variable ``ARSIM_THREADS``). Measured on
a 2-core machine (paper network, batch 64): on an idle machine two threads make the NumPy AR
reference only 1.2× faster than one (1,990 against 1,690 samples/s), but while one other
CPU-bound process runs they collapse it to 274 samples/s (and the dense mode to 20–30) because
the threads wait for each other at every product, whereas one thread keeps 1,575 (dense 1,074).
Sweeps run one process per core anyway. See ``docs/speed.md``.

:func:`apply` is the one place the policy is applied: ``arsim run``, training, every sweep
point, ``arsim bench`` and the tests call it. It limits the BLAS and OpenMP pools of this
process (threadpoolctl) and sets the environment variables that child processes read.
"""

from __future__ import annotations

import os

from threadpoolctl import threadpool_info, threadpool_limits

DEFAULT_THREADS = 1
"""BLAS/OpenMP threads per process unless ``--threads`` or ``ARSIM_THREADS`` says otherwise."""
VARIABLE = "ARSIM_THREADS"
"""Environment variable that carries the chosen thread count to arsim's child processes."""
THREAD_VARIABLES = (
    VARIABLE,
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
)
"""Environment variables :func:`apply` sets (read by BLAS libraries of child processes)."""


def resolve(threads: int | None = None) -> int:
    """The thread count to use: ``threads`` if given, else ``$ARSIM_THREADS``, else 1.

    Raises
    ------
    ValueError
        If the count (given or from the environment) is not a positive integer.
    """
    source = "--threads"
    if threads is None:
        text = os.environ.get(VARIABLE)
        if not text:
            return DEFAULT_THREADS
        source = f"${VARIABLE}"
        try:
            threads = int(text)
        except ValueError:
            threads = 0
    if threads < 1:
        raise ValueError(f"{source}: expected a positive integer, got {threads!r}")
    return threads


def apply(threads: int | None = None) -> int:
    """Limit this process's BLAS and OpenMP pools to :func:`resolve` ``(threads)`` threads.

    Also sets :data:`THREAD_VARIABLES` so that child processes (sweep points, benchmark
    measurements) start with the same count. Returns the count applied.
    """
    count = resolve(threads)
    threadpool_limits(limits=count)
    os.environ.update({variable: str(count) for variable in THREAD_VARIABLES})
    return count


def describe(count: int) -> dict:
    """What a run folder records of the threads: the count applied and each pool's size."""
    pools = [
        {key: info.get(key) for key in ("user_api", "internal_api", "num_threads")}
        for info in threadpool_info()
    ]
    return {"threads": count, "pools": pools}

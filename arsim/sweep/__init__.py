"""Parameter sweeps: one model × one protocol over a grid of parameters and seeds.

A sweep file (TOML)::

    model = "../models/paper-mlp.toml"        # relative to the sweep file
    protocol = "../protocols/paper.toml"
    seeds = [0, 1]                             # optional; default: the model's seed
    name = "relaxation-memory"                 # optional; default: the file's stem
    [grid]                                     # dotted keys into the model and protocol tables
    "protocol.phases.relaxation" = ["20 ms", "50 ms", "100 ms"]
    "protocol.learning.rate" = [0.0005, 0.001]
    "model.memory" = [{ kind = "ideal" }, { kind = "trace", tau = "50 ms" }]
    "model.layers[1].size" = [100, 300]        # arrays of tables take an index
    [run]                                      # what each point runs
    samples = 64                               # `arsim run` on random data (the default) …
    # data = "fashion-mnist"                   # … or training: epochs, train-samples,
    # epochs = 1                               #   metrics-every, baseline, data-dir
    timeout = 600                              # optional: seconds a point may take

The points are the Cartesian product of the ``[grid]`` lists and the seeds. Each grid value
replaces the value at its key in the raw TOML table of the model or protocol file (a missing
table on the way is created), and every resolved point is validated by the spec loader before
anything runs: a bad value gives the spec's own one-line error, a bad sweep file one line
``SWEEP_FILE: key: what was expected`` (:class:`arsim.spec.SpecError`), and nothing is written.

Every point runs in a fresh Python process (``python -m arsim.sweep _point POINT.json``), so
that Brian2's global state, an exception or a crash of one point cannot touch the others. The
processes are launched by Dask tasks, on a local cluster of worker processes or on the Dask
distributed cluster whose scheduler is given (``tls://`` with a CA, certificate and key:
:class:`TlsFiles`; a plain address on another machine gives a :class:`PlainSchedulerWarning`).
The sweep folder::

    OUT/sweep.json                   the sweep as resolved: files, grid, run options, points,
                                     executor (scheduler, workers, BLAS threads per point)
    OUT/results.csv                  one row per finished point, refreshed atomically as
                                     points finish (see :func:`run_sweep`)
    OUT/points/<id>/                 the point's run folder (as ``arsim run`` writes it)
    OUT/points/<id>.json             what the point runs: resolved model and protocol
                                     tables, seed, run options
    OUT/points/<id>.log              the point process's output (stdout and stderr)
    OUT/points/<id>.outcome.json     exit status, wall seconds, message, BLAS threads, host

A point id is a readable slug of its grid values and seed followed by a hash of everything
that decides its result (resolved model and protocol tables, seed, run options), so it is the
same in every rerun and changes when any of that changes. A point whose run folder holds a
``completed`` or ``diverged`` status is finished: a rerun (and a task that Dask retries after
losing a worker) reads its row from the folder instead of running it again. Ctrl-C stops the
workers (a running point stops at a minibatch boundary and is run again by a rerun) and raises
:class:`SweepInterrupted` with the points finished and left.

The package: :mod:`arsim.sweep.declaration` (the sweep file, its points and their
validation), :mod:`arsim.sweep.points` (a point's process, outcome and results row) and
:mod:`arsim.sweep.execution` (running the points on Dask).
"""

from arsim.sweep.declaration import (
    GRID_ROOTS,
    RUN_DEFAULTS,
    Point,
    Sweep,
    load_sweep,
    parse_setting,
    point_payload,
)
from arsim.sweep.execution import (
    RETRIES,
    TLS_SCHEMES,
    PlainSchedulerWarning,
    SweepError,
    SweepInterrupted,
    TlsFiles,
    available_cores,
    default_out_folder,
    plain_scheduler_risk,
    run_sweep,
    scheduler_security,
)
from arsim.sweep.points import (
    BLAS_THREAD_VARIABLES,
    FINISHED,
    STATUSES,
    finished_status,
    point_job,
    point_main,
    point_row,
    results_table,
    run_point,
    summary_metrics,
)

__all__ = [
    "parse_setting",
    "BLAS_THREAD_VARIABLES",
    "FINISHED",
    "GRID_ROOTS",
    "RETRIES",
    "RUN_DEFAULTS",
    "STATUSES",
    "TLS_SCHEMES",
    "PlainSchedulerWarning",
    "TlsFiles",
    "plain_scheduler_risk",
    "scheduler_security",
    "Point",
    "Sweep",
    "SweepError",
    "SweepInterrupted",
    "available_cores",
    "default_out_folder",
    "finished_status",
    "load_sweep",
    "point_job",
    "point_main",
    "point_payload",
    "point_row",
    "results_table",
    "run_point",
    "run_sweep",
    "summary_metrics",
]

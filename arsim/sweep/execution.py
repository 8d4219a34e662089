"""Running a sweep: every unfinished point as a Dask task, the results table refreshed.

:func:`run_sweep` connects to a Dask scheduler (or starts a local cluster), submits one task
per point that is not finished in the sweep folder (:func:`arsim.sweep.points.run_point`) and
writes ``sweep.json`` and ``results.csv`` (refreshed atomically as points finish).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from tqdm.std import tqdm  # a text bar, as arsim.run explains

from arsim import threads
from arsim.runfolder import versions
from arsim.sweep.declaration import Sweep, load_sweep, point_payload
from arsim.sweep.points import (
    BLAS_THREAD_VARIABLES,
    STATUSES,
    finished_status,
    point_row,
    results_table,
    run_point,
    write_json,
)

RETRIES = 2
"""Dask retries of a point task that raised (a lost worker is handled by the scheduler)."""


class SweepError(ValueError):
    """A sweep that cannot start (output folder, scheduler); one-line message."""


class SweepInterrupted(Exception):
    """A sweep stopped by Ctrl-C (SIGINT): its workers are stopped, its folder is kept.

    Attributes
    ----------
    out : Path
        The sweep folder (a rerun finishes the points left).
    finished, left : int
        Points finished (``completed`` or ``diverged``) and points left to run.
    """

    def __init__(self, out: Path, finished: int, left: int):
        super().__init__(f"{out}: {finished} points finished, {left} left")
        self.out, self.finished, self.left = out, finished, left


@contextlib.contextmanager
def _environment_kept():
    """Restore ``os.environ`` after the block.

    Dask's nanny sets ``OPENBLAS_NUM_THREADS=1`` (and more) in this process's environment to
    pass them to its workers and never sets them back; a process started later (a run, a
    test's subprocess) would then use other BLAS threads than this one, and so other sums.
    """
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def available_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_out_folder(sweep: Sweep) -> Path:
    """``runs/sweep-<name>``."""
    return Path("runs") / f"sweep-{sweep.name}"


def _check_out_folder(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise SweepError(f"{out}: exists and is not a folder; choose another --out")
    if not out.exists():
        try:  # before a cluster starts: a path under a file, no permission
            out.mkdir(parents=True)
        except OSError as error:
            raise SweepError(f"{out}: cannot create the sweep folder: {error.strerror}") from None
    if out.is_dir() and any(out.iterdir()) and not (out / "sweep.json").is_file():
        raise SweepError(
            f"{out}: exists, is not empty and holds no sweep.json (not a sweep folder); "
            "choose another --out"
        )


def _write_results(out: Path, rows: dict, order: list[str], grid_keys: list[str]):
    table = results_table([rows[pid] for pid in order if pid in rows], grid_keys)
    temporary = out / f".results.csv.{os.getpid()}.tmp"
    table.to_csv(temporary, index=False)
    os.replace(temporary, out / "results.csv")
    return table


def run_sweep(
    sweep: Sweep | str | Path,
    out: str | Path | None = None,
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    client=None,
    progress: bool = False,
    on_point: Callable[[dict], None] | None = None,
):
    """Run every unfinished point of a sweep on Dask and return the results table.

    Parameters
    ----------
    sweep : Sweep or path
        The sweep (or its file, read with :func:`load_sweep`).
    out : path, optional
        Sweep folder (default ``runs/sweep-<name>``). Points finished there are not run again.
    scheduler : str, optional
        Address of a Dask scheduler (``tcp://host:port``); its workers need arsim installed
        and ``out`` at the same path (a shared file system). Default: a local cluster.
    workers : int, optional
        Worker processes of the local cluster (default: the number of cores). Each point's
        BLAS runs on the threads of :func:`arsim.threads.resolve` (1 unless ``--threads``).
    client : distributed.Client, optional
        Use this client instead of making one (BLAS threads: 1).
    progress : bool
        Show a progress bar over points.
    on_point : callable, optional
        Called with each new row as its point finishes (in the calling thread).

    Notes
    -----
    The local cluster starts its workers with ``multiprocessing``'s spawn method: a script
    that calls this function must do so under ``if __name__ == "__main__":``.

    Returns
    -------
    pandas.DataFrame
        One row per point in grid order (see :func:`point_row`), as written to
        ``OUT/results.csv``. ``attrs`` holds ``out``, ``points_run`` (points whose process ran
        in this call), ``points_reused`` (rows read from folders finished before) and the
        ``counts`` of each status.

    Raises
    ------
    arsim.spec.SpecError
        The sweep file is invalid (nothing is written).
    SweepError
        The output folder cannot be used or the scheduler cannot be reached (nothing written).
    """
    given = client
    if not isinstance(sweep, Sweep):
        sweep = load_sweep(sweep)
    out = Path(out) if out is not None else default_out_folder(sweep)
    _check_out_folder(out)
    out = out.resolve()
    order = [point.id for point in sweep.points]
    grid_keys = list(sweep.grid)
    rows, reused = {}, 0
    todo = []
    for point in sweep.points:
        if finished_status(out / "points" / point.id) is not None:
            rows[point.id] = point_row(point_payload(sweep, point, out, None))
            reused += 1
        else:
            todo.append(point)

    cluster, client, blas_threads, executor = _connect(client, scheduler, workers, len(todo))
    own = client is not None and client is not given
    ran = 0
    bar = tqdm(
        total=len(order), initial=reused, unit="point", desc=sweep.name, disable=not progress
    )

    def record(point_id: str, row: dict) -> None:
        rows[point_id] = row
        _write_results(out, rows, order, grid_keys)
        bar.set_postfix_str(_counts_text(rows.values()), refresh=False)
        bar.update(1)
        if on_point is not None:
            on_point(row)

    interrupted = False
    try:
        (out / "points").mkdir(parents=True, exist_ok=True)
        write_json(out / "sweep.json", _sweep_record(sweep, executor))
        _write_results(out, rows, order, grid_keys)
        if todo:
            payloads = {point.id: point_payload(sweep, point, out, blas_threads) for point in todo}
            ran = _run_points(client, payloads, record)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
        with _sigint_ignored(), _environment_kept():  # stopping the workers is not cut short
            if own:
                client.close()
            if cluster is not None:
                cluster.close()
    if interrupted:
        _wait_for_point_processes(out / "points")
        finished = sum(finished_status(out / "points" / pid) is not None for pid in order)
        raise SweepInterrupted(out, finished, len(order) - finished)
    table = _write_results(out, rows, order, grid_keys)
    table.attrs = {
        "out": str(out),
        "points_run": ran,
        "points_reused": reused,
        "counts": {status: int((table["status"] == status).sum()) for status in STATUSES},
    }
    return table


def _wait_for_point_processes(points: Path, timeout: float = 120.0) -> None:
    """Wait until the point processes still writing into ``points`` have ended.

    Each unfinished point's folder is ``.NAME.partial-PID``; a point that was writing its
    outputs when the sweep was stopped may still finish, so the count of finished points
    waits for it (at most ``timeout`` seconds).
    """
    deadline = time.monotonic() + timeout
    for folder in points.glob(".*.partial-*"):
        suffix = folder.name.rsplit("-", 1)[1]
        pid = int(suffix) if suffix.isdigit() else 0
        while pid and time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except (ProcessLookupError, PermissionError):
                break
            time.sleep(0.1)


def _run_points(client, payloads: dict, record: Callable[[str, dict], None]) -> int:
    """Submit a task per point, ``record`` each row as its point ends; return points run.

    Parameters
    ----------
    client : distributed.Client
        The client to submit to.
    payloads : dict
        Point id to payload (:func:`point_payload`), in submission order.
    record : callable
        Called with the point id and its row as each point ends (in this thread).

    Returns
    -------
    int
        Points whose process ran in this call.
    """
    # optional heavy dependency: distributed takes seconds to import; only running points needs it
    from distributed import as_completed

    token = uuid.uuid4().hex[:8]
    keys = {}
    futures = []
    for point_id, payload in payloads.items():
        future = client.submit(
            run_point,
            payload,
            key=f"arsim-point-{point_id}-{token}",
            retries=RETRIES,
            pure=False,
        )
        keys[future.key] = point_id
        futures.append(future)
    pending = as_completed(futures)
    del futures, future  # a finished future is released once its row is read
    ran = 0
    for future in pending:
        point_id = keys[future.key]
        try:
            row = future.result()
        except Exception as error:  # a lost worker (KilledWorker), a cancelled task
            text = f"{type(error).__name__}: {error}".splitlines()[0]
            row = point_row(payloads[point_id], text) | {"ran": False}
        future.release()
        ran += bool(row.pop("ran", False))
        record(point_id, row)
    return ran


def _connect(client, scheduler: str | None, workers: int | None, todo: int):
    """The Dask client to run ``todo`` points with, and what it is.

    Returns
    -------
    (cluster, client, blas_threads, executor)
        The local cluster made here (or None), the client (None when there is nothing to
        run), the BLAS threads of each point process and a description for ``sweep.json``.
    """
    cluster, blas_threads = None, threads.resolve()  # the thread policy, per point process
    if not todo:
        return None, None, None, {"scheduler": None, "points_to_run": 0}
    if client is None:
        # optional heavy dependency: distributed takes seconds to import; only a sweep needs it
        from distributed import Client, LocalCluster

        # optional heavy dependency: arsim.sweep.workers imports distributed
        from arsim.sweep.workers import IgnoreSigint

        if scheduler:
            try:
                client = Client(scheduler, timeout="20s")
            except (OSError, TimeoutError, ValueError) as error:
                raise SweepError(f"--scheduler {scheduler}: cannot connect: {error}") from None
        else:
            workers = min(workers or available_cores(), todo)
            with _environment_kept():
                cluster = LocalCluster(
                    n_workers=workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address="127.0.0.1:0",  # no fixed port to collide on
                    silence_logs=logging.ERROR,
                )
            try:
                client = Client(cluster)
                client.register_plugin(IgnoreSigint())  # Ctrl-C is the sweep process's
            except BaseException:
                cluster.close()
                raise
    info = client.scheduler_info(n_workers=-1)
    executor = {
        "scheduler": scheduler or info.get("address"),
        "local_cluster": cluster is not None,
        "workers": len(info.get("workers", {})),
        "blas_threads_per_point": blas_threads,
        "blas_variables": list(BLAS_THREAD_VARIABLES),
        "retries": RETRIES,
        "points_to_run": todo,
    }
    return cluster, client, blas_threads, executor


@contextlib.contextmanager
def _sigint_ignored():
    """Ignore SIGINT during the block (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _counts_text(rows) -> str:
    statuses = [row["status"] for row in rows]
    return ", ".join(f"{statuses.count(status)} {status}" for status in STATUSES)


def _sweep_record(sweep: Sweep, executor: dict) -> dict:
    try:
        dask_version = version("dask")
    except PackageNotFoundError:  # pragma: no cover - a dependency
        dask_version = None
    return {
        "sweep": str(sweep.source),
        "name": sweep.name,
        "model": str(sweep.model_path),
        "protocol": str(sweep.protocol_path),
        "seeds": sweep.seeds,
        "grid": sweep.grid,
        "run": sweep.run,
        "points": [
            {"id": point.id, "seed": point.seed, "overrides": point.overrides}
            for point in sweep.points
        ],
        "executor": executor,
        "versions": versions() | {"dask": dask_version},
        "command": sys.argv,
    }

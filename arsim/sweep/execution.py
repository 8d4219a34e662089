"""Running a sweep: every unfinished point as a Dask task, the results table refreshed.

:func:`run_sweep` connects to a Dask scheduler (or starts a local cluster), submits one task
per point that is not finished in the sweep folder (:func:`arsim.sweep.points.run_point`) and
writes ``sweep.json`` and ``results.csv`` (refreshed atomically as points finish).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import signal
import socket
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from urllib.parse import urlsplit

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


TLS_SCHEMES = ("tls", "wss")
"""Dask address schemes whose messages are encrypted and whose peers show certificates."""


class SweepError(ValueError):
    """A sweep that cannot start (output folder, scheduler); one-line message."""


class PlainSchedulerWarning(UserWarning):
    """A scheduler on another machine reached without TLS (see :func:`plain_scheduler_risk`)."""


@dataclass(frozen=True)
class TlsFiles:
    """The TLS files this process shows a Dask scheduler (PEM).

    Attributes
    ----------
    ca_file : path or None
        Certificate of the authority that signed the cluster's certificates.
    cert : path or None
        This process's certificate (it may hold the key too).
    key : path or None
        The private key of ``cert`` (None when ``cert`` holds it).
    """

    ca_file: str | Path | None = None
    cert: str | Path | None = None
    key: str | Path | None = None

    def given(self) -> bool:
        """Whether any file is given."""
        return any(value is not None for value in (self.ca_file, self.cert, self.key))


def address_scheme(address: str) -> str:
    """The scheme of a Dask address (``tcp`` when it has none)."""
    return address.split("://", 1)[0].lower() if "://" in address else "tcp"


def plain_scheduler_risk(address: str | None) -> str | None:
    """What is at risk with this scheduler address, or None.

    Dask's messages are pickled: whoever can send them to a scheduler or worker runs code
    there. A plain (not TLS) address whose host is not a loopback address of this machine is
    reachable from elsewhere, so this returns a one-line warning for it; a TLS address, a
    loopback address and a host name that does not resolve (the connection then fails) give
    None.

    Parameters
    ----------
    address : str or None
        ``--scheduler``, e.g. ``tcp://10.0.0.5:8786`` or ``10.0.0.5:8786``.
    """
    if not address or address_scheme(address) in TLS_SCHEMES:
        return None
    if address_scheme(address) not in ("tcp", "ws"):
        return None  # in-process (inproc://) or a transport of its own (ucx://)
    text = address if "://" in address else f"tcp://{address}"
    try:
        host = urlsplit(text).hostname
    except ValueError:
        return None
    if not host:
        return None
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except (OSError, UnicodeError):
        return None
    if all(ipaddress.ip_address(ip.split("%", 1)[0]).is_loopback for ip in addresses):
        return None
    return (
        f"--scheduler {address} is plain TCP to another machine: Dask's messages are pickled, "
        "so anyone who can reach that port can run code on the workers; use a tls:// address "
        "with --tls-ca-file, --tls-cert and --tls-key"
    )


def scheduler_security(address: str | None, files: TlsFiles | None = None):
    """The :class:`distributed.Security` to reach ``address`` with, or None for plain TCP.

    Parameters
    ----------
    address : str or None
        The scheduler's address; a ``tls://`` (or ``wss://``) address needs certificates.
    files : TlsFiles, optional
        The CA, certificate and key (PEM files). Without them a TLS address takes Dask's
        configuration (``distributed.comm.tls.ca-file``, ``.client.cert`` and ``.client.key``,
        from ``~/.config/dask/*.yaml``, ``DASK_CONFIG`` or ``DASK_DISTRIBUTED__COMM__TLS__…``
        variables).

    Returns
    -------
    distributed.Security or None
        Encryption required, this process's certificate shown to the scheduler.

    Raises
    ------
    SweepError
        Files given for a plain address, a file that cannot be read, or a TLS address with
        neither files nor a configured CA and certificate.
    """
    files = files or TlsFiles()
    scheme = address_scheme(address) if address else None
    if scheme not in TLS_SCHEMES:
        if files.given():
            where = f"--scheduler {address}" if address else "the local cluster"
            raise SweepError(
                f"--tls-ca-file, --tls-cert, --tls-key: {where} is not a tls:// address; "
                "expected a tls://host:port scheduler"
            )
        return None
    options = {"--tls-ca-file": files.ca_file, "--tls-cert": files.cert, "--tls-key": files.key}
    for option, path in options.items():
        if path is not None and not Path(path).is_file():
            raise SweepError(f"{option} {path}: not found (expected a PEM file)")
    # optional heavy dependency: distributed takes seconds to import; only a sweep needs it
    from distributed import Security

    if files.given():
        if files.ca_file is None or files.cert is None:
            raise SweepError(
                f"--scheduler {address}: TLS needs both --tls-ca-file and --tls-cert "
                "(and --tls-key unless the certificate file holds the key)"
            )
        security = Security(
            require_encryption=True,
            tls_ca_file=str(files.ca_file),
            tls_client_cert=str(files.cert),
            tls_client_key=None if files.key is None else str(files.key),
        )
    else:
        security = Security(require_encryption=True)  # Dask's configuration
        if not (security.tls_ca_file and security.tls_client_cert):
            raise SweepError(
                f"--scheduler {address}: a TLS address needs --tls-ca-file, --tls-cert and "
                "--tls-key (or distributed.comm.tls.ca-file and .client.cert in Dask's "
                "configuration)"
            )
    try:
        security.get_connection_args("client")  # reads the files: a bad one fails here
    except (OSError, ValueError) as error:
        raise SweepError(f"--scheduler {address}: TLS files not usable: {error}") from None
    return security


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
    tls: TlsFiles | None = None,
    security=None,
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
        Address of a Dask scheduler (``tls://host:port`` or ``tcp://host:port``); its workers
        need arsim installed and ``out`` at the same path (a shared file system). Default: a
        local cluster. A plain address on another machine gives a
        :class:`PlainSchedulerWarning` (see :func:`plain_scheduler_risk`).
    workers : int, optional
        Worker processes of the local cluster (default: the number of cores). Each point's
        BLAS runs on the threads of :func:`arsim.threads.resolve` (1 unless ``--threads``).
    tls : TlsFiles, optional
        CA, certificate and key for a ``tls://`` scheduler (default: Dask's configuration).
    security : distributed.Security, optional
        Use these security settings for the scheduler instead of ``tls``.
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
        The output folder cannot be used, the scheduler cannot be reached or its TLS files
        are missing or unusable (nothing written).
    """
    given = client
    if security is None and client is None:
        security = scheduler_security(scheduler, tls)
    if not isinstance(sweep, Sweep):
        sweep = load_sweep(sweep)
    out = Path(out) if out is not None else default_out_folder(sweep)
    _check_out_folder(out)
    out = out.resolve()
    order = [point.id for point in sweep.points]
    grid_keys = list(sweep.grid)
    rows, todo = _finished_rows(sweep, out)
    reused = len(rows)
    cluster, client, blas_threads, executor = _connect(
        client, scheduler, workers, len(todo), security
    )
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


def _finished_rows(sweep: Sweep, out: Path) -> tuple[dict, list]:
    """Rows of the points finished in ``out`` (by point id) and the points left to run."""
    rows, todo = {}, []
    for point in sweep.points:
        if finished_status(out / "points" / point.id) is not None:
            rows[point.id] = point_row(point_payload(sweep, point, out, None))
        else:
            todo.append(point)
    return rows, todo


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


def _connect(client, scheduler: str | None, workers: int | None, todo: int, security=None):
    """The Dask client to run ``todo`` points with, and what it is.

    ``security`` (a :class:`distributed.Security`) is used to reach ``scheduler``.

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
            risk = plain_scheduler_risk(scheduler)
            if risk is not None:
                warnings.warn(risk, PlainSchedulerWarning, stacklevel=3)
            try:
                client = Client(scheduler, timeout="20s", security=security)
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
        "tls": address_scheme(scheduler or info.get("address") or "") in TLS_SCHEMES,
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

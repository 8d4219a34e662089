"""One point of a sweep: its process, its outcome and its row of the results table.

:func:`run_point` is the Dask task: it runs the point in a fresh Python process
(:func:`point_main`, via ``python -m arsim.sweep _point POINT.json``) and reads the point's
row (:func:`point_row`) from its run folder and outcome file.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd

import arsim
from arsim.jobs import EXIT_ORPHANED, RandomRun, Training, bad_input, execute
from arsim.spec import SpecError, model_from_dict, protocol_from_dict

STATUSES = ("completed", "diverged", "failed")
FINISHED = ("completed", "diverged")
"""Statuses written by a run into its folder; a point with one of them is not run again."""
BLAS_THREAD_VARIABLES = (
    "ARSIM_THREADS",  # arsim.threads.VARIABLE: the point's run applies it
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)
_BOOKKEEPING = ("kind", "epoch", "batch", "samples", "t")
"""Columns of metrics.csv that say where a row is, not what was measured."""
_PARENT_VARIABLE = "ARSIM_SWEEP_PARENT"


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (a temporary file renamed over ``path``)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(data, indent=2, default=str))
    os.replace(temporary, path)


def read_json(path: Path) -> dict | None:
    """The JSON object in ``path``; None when it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def finished_status(folder: Path) -> dict | None:
    """The status.json of a finished run folder (``completed`` or ``diverged``), else None."""
    status = read_json(Path(folder) / "status.json")
    return status if status is not None and status.get("status") in FINISHED else None


def summary_metrics(folder: Path, training: bool) -> dict[str, float]:
    """Summary numbers of a run folder: the last row of its metrics.csv (and means).

    Parameters
    ----------
    folder : Path
        A run folder.
    training : bool
        Whether it is a training run: then the last ``epoch`` row (test accuracy of AR and
        backprop, angle to backprop, …); else the last minibatch (loss, angle in degrees, …)
        and the mean of every angle over the minibatches (``mean_angle_deg…``).

    Returns
    -------
    dict
        Column to value, without the bookkeeping columns (kind, epoch, batch, samples, t);
        empty when there is no row.
    """
    try:
        table = pd.read_csv(Path(folder) / "metrics.csv")
    except (OSError, pd.errors.EmptyDataError, pd.errors.ParserError):
        return {}
    if training and "kind" in table.columns and (table["kind"] == "epoch").any():
        table = table[table["kind"] == "epoch"]
    if table.empty:
        return {}
    last = table.iloc[-1]
    numeric = [
        column
        for column in table.columns
        if column not in _BOOKKEEPING and pd.api.types.is_numeric_dtype(table[column])
    ]
    summary = {column: float(last[column]) for column in numeric}
    if not training:  # every minibatch is a measurement: the means summarise the run
        for column in (c for c in numeric if c.startswith("angle_deg")):
            summary[f"mean_{column}"] = float(table[column].mean())
    return summary


def _cell(value: Any) -> Any:
    """A grid value as a table cell: scalars as they are, tables and arrays as JSON."""
    if isinstance(value, str | int | float | bool):
        return value
    return json.dumps(value, separators=(", ", ": "), default=str)


def point_row(payload: dict, message: str | None = None) -> dict:
    """A point's row of the results table, read from its folder and outcome file.

    Parameters
    ----------
    payload : dict
        The point (see :func:`point_payload`).
    message : str, optional
        Why the point failed, when its folder holds no finished run and its outcome file
        gives no reason.

    Returns
    -------
    dict
        ``point``, ``seed``, one column per grid key, ``status`` (completed, diverged or
        failed), ``error``, ``wall_seconds``, ``blas_threads``, ``folder`` and the summary
        numbers of :func:`summary_metrics`.
    """
    folder = Path(payload["folder"])
    outcome = read_json(folder.with_name(folder.name + ".outcome.json")) or {}
    row = {"point": payload["id"], "seed": payload["seed"]}
    row |= {key: _cell(value) for key, value in payload["overrides"].items()}
    status = finished_status(folder)
    if status is not None:
        row |= {"status": status["status"], "error": status.get("message")}
    else:
        reason = outcome.get("message") or message or "no finished run in the point's folder"
        row |= {"status": "failed", "error": reason}
    row |= {
        "wall_seconds": outcome.get("wall_seconds", math.nan),
        "blas_threads": outcome.get("blas_threads", payload.get("blas_threads")),
        "folder": str(folder),
    }
    if status is not None:
        row |= summary_metrics(folder, payload["run"]["data"] is not None)
    return row


def _remove_leftovers(folder: Path) -> None:
    """Remove an unfinished run folder and the partial folders of interrupted runs."""
    for partial in folder.parent.glob(f".{folder.name}.partial-*"):
        shutil.rmtree(partial, ignore_errors=True)
    if folder.is_dir() and finished_status(folder) is None:
        shutil.rmtree(folder, ignore_errors=True)


def _last_line(path: Path) -> str | None:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return None
    return lines[-1].strip() if lines else None


def run_point(payload: dict) -> dict:
    """Run one point in a fresh Python process and return its row (the Dask task).

    A point already finished on disk is not run again. Otherwise leftovers of an earlier
    attempt are removed, ``POINT.json`` is written, and ``python -m arsim.sweep _point
    POINT.json`` runs with the BLAS threads pinned; its output goes to ``<id>.log`` and its
    exit status, wall time and message to ``<id>.outcome.json``.

    Parameters
    ----------
    payload : dict
        The point (see :func:`point_payload`).

    Returns
    -------
    dict
        The point's row (:func:`point_row`), with ``ran`` telling whether a process ran.
    """
    folder = Path(payload["folder"])
    if finished_status(folder) is not None:
        outcome = folder.with_name(folder.name + ".outcome.json")
        if not outcome.is_file():  # the attempt that ran it was lost as its process ended
            note = "finished by an earlier attempt whose worker was lost before it reported"
            write_json(outcome, {"exit_status": None, "message": None, "note": note})
        return point_row(payload) | {"ran": False}
    folder.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(folder)
    spec = folder.with_name(folder.name + ".json")
    log = folder.with_name(folder.name + ".log")
    write_json(spec, payload)
    env = dict(os.environ)
    threads = payload.get("blas_threads")
    if threads is not None:
        env |= {variable: str(threads) for variable in BLAS_THREAD_VARIABLES}
    package_root = str(Path(arsim.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    env[_PARENT_VARIABLE] = str(os.getpid())
    timeout = payload["run"].get("timeout")
    started, clock = time.time(), time.monotonic()
    timed_out = False
    with log.open("w") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "arsim.sweep", "_point", str(spec)],
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=folder.parent,
        )
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            code, timed_out = process.wait(), True
        except BaseException:
            process.kill()
            process.wait()
            raise
    wall = time.monotonic() - clock
    message = None
    if timed_out:
        message = f"timed out after {timeout:g} s"
    elif code != 0:
        message = _last_line(log)
        if code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else -code
            message = f"{message} (killed by {name})" if message else f"killed by {name}"
        message = message or f"exit status {code}"
    outcome = {
        "exit_status": code,
        "wall_seconds": wall,
        "message": message,
        "blas_threads": threads,
        "host": socket.gethostname(),
        "worker_pid": os.getpid(),
        "started": started,
        "finished": time.time(),
    }
    write_json(folder.with_name(folder.name + ".outcome.json"), outcome)
    for partial in folder.parent.glob(f".{folder.name}.partial-*"):
        shutil.rmtree(partial, ignore_errors=True)
    return point_row(payload) | {"ran": True}


def _exit_with_parent() -> None:
    """End this process when the worker that launched it dies (checked every 0.2 s)."""
    parent = os.environ.get(_PARENT_VARIABLE)
    if not parent:
        return

    def watch() -> None:
        while os.getppid() == int(parent):
            time.sleep(0.2)
        os._exit(EXIT_ORPHANED)

    threading.Thread(target=watch, name="arsim-sweep-parent", daemon=True).start()


def point_job(payload: dict) -> RandomRun | Training:
    """The job a point runs: a training when its run options name a dataset, else a run.

    Raises
    ------
    arsim.spec.SpecError
        The point's model or protocol table is invalid.
    """
    run = payload["run"]
    common = {
        "model": model_from_dict(payload["model"], payload["model_source"]),
        "protocol": protocol_from_dict(payload["protocol"], payload["protocol_source"]),
        "out": Path(payload["folder"]),
        "seed": payload["seed"],
        "target": run["target"],
    }
    if run["data"] is None:
        return RandomRun(samples=run["samples"], mode=run["mode"], device=run["device"], **common)
    return Training(
        data=run["data"],
        data_dir=run["data-dir"],
        epochs=run["epochs"],
        train_samples=run["train-samples"],
        metrics_every=run["metrics-every"],
        compare_every=run.get("compare-every", Training.compare_every),
        baseline=run["baseline"],
        **common,
    )


def point_main(path: str | Path) -> int:
    """Run the point described in ``path`` (``POINT.json``); report it, return the exit status.

    This is the point's own process (``python -m arsim.sweep _point POINT.json``); it ends
    with :data:`arsim.jobs.EXIT_ORPHANED` when the worker that launched it dies.
    """
    _exit_with_parent()
    payload = json.loads(Path(path).read_text())
    try:
        job = point_job(payload)
    except SpecError as error:
        return bad_input(error).report()
    return execute(job, progress=False).report()


def results_table(rows: list[dict], grid_keys: list[str]):
    """The results table of some point rows (a pandas DataFrame, columns in a fixed order)."""
    first = ["point", "seed", *grid_keys, "status", "error", "wall_seconds", "blas_threads"]
    first.append("folder")
    columns = list(first)
    for row in rows:
        columns += [column for column in row if column not in columns and column != "ran"]
    return pd.DataFrame(rows, columns=columns)

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
distributed cluster whose scheduler is given. The sweep folder::

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
losing a worker) reads its row from the folder instead of running it again.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import arsim
from arsim.spec import (
    CODEGEN_TARGETS,
    SpecError,
    check_compatible,
    model_from_dict,
    protocol_from_dict,
    read_toml,
)

EXIT_COMPLETED = 0
EXIT_SOME_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3
EXIT_ORPHANED = 4
"""Exit status of a point process whose launching worker died."""

STATUSES = ("completed", "diverged", "failed")
FINISHED = ("completed", "diverged")
"""Statuses written by a run into its folder; a point with one of them is not run again."""
RETRIES = 2
"""Dask retries of a point task that raised (a lost worker is handled by the scheduler)."""
BLAS_THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)
TOP_LEVEL_KEYS = ("model", "protocol", "seeds", "name", "grid", "run")
GRID_ROOTS = ("model", "protocol")
RUN_DEFAULTS: dict[str, Any] = {
    "samples": 64,
    "mode": "dense",
    "device": "runtime",
    "target": "auto",
    "data": None,
    "data-dir": None,
    "epochs": 1,
    "train-samples": None,
    "metrics-every": 50,
    "baseline": "backprop",
    "timeout": None,
}
"""``[run]`` options and their defaults (the names of the ``arsim run`` options)."""
RANDOM_ONLY = ("samples", "mode", "device")
TRAINING_ONLY = ("data-dir", "epochs", "train-samples", "metrics-every", "baseline")
_BOOKKEEPING = ("kind", "epoch", "batch", "samples", "t")
"""Columns of metrics.csv that say where a row is, not what was measured."""
_PARENT_VARIABLE = "ARSIM_SWEEP_PARENT"


class SweepError(ValueError):
    """A sweep that cannot start (output folder, scheduler); one-line message."""


# --------------------------------------------------------------------------------------------
# The sweep file
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Point:
    """One point of a sweep: grid values and seed, with the model and protocol they give.

    Attributes
    ----------
    id : str
        Stable identifier: a slug of the grid values and seed, and a hash of the resolved
        model and protocol tables, seed and run options.
    overrides : dict
        Grid key (dotted, e.g. ``protocol.phases.relaxation``) to value, in grid order.
    seed : int
        Seed of the weights and data.
    model, protocol : dict
        The raw TOML tables of the model and protocol files with the overrides applied.
    """

    id: str
    overrides: dict
    seed: int
    model: dict
    protocol: dict


@dataclass(frozen=True)
class Sweep:
    """A validated sweep file.

    Attributes
    ----------
    source : Path
        The sweep file.
    name : str
        Sweep name (default: the file's stem).
    model_path, protocol_path : Path
        The model and protocol files.
    seeds : tuple of int or None
        Seeds of every grid point; None: each point uses its model's seed.
    grid : dict
        Grid key to list of values, in file order.
    run : dict
        Run options (:data:`RUN_DEFAULTS` filled in; ``data-dir`` resolved).
    points : tuple of Point
        The grid's Cartesian product × seeds, seeds varying fastest.
    """

    source: Path
    name: str
    model_path: Path
    protocol_path: Path
    seeds: tuple[int, ...] | None
    grid: dict
    run: dict
    points: tuple[Point, ...]

    @property
    def training(self) -> bool:
        """Whether the points train on a dataset (else they run on random data)."""
        return self.run["data"] is not None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _read_run(table: Any, source: Path) -> dict:
    """The ``[run]`` table with defaults filled in, checked."""
    if not isinstance(table, dict):
        raise SpecError(source, "run", f"expected a table, got {table!r}")
    unknown = sorted(set(table) - set(RUN_DEFAULTS))
    if unknown:
        raise SpecError(
            source, f"run.{unknown[0]}", f"unknown key; expected one of: {', '.join(RUN_DEFAULTS)}"
        )
    from arsim.datasets import DATASET_NAMES

    choices = {
        "mode": ("dense", "synapses"),
        "device": ("runtime", "cpp_standalone"),
        "target": CODEGEN_TARGETS,
        "data": DATASET_NAMES,
        "baseline": ("backprop", "none"),
    }
    for key, value in table.items():
        where = f"run.{key}"
        if key in choices and value not in choices[key]:
            raise SpecError(
                source, where, f"expected one of {', '.join(choices[key])}; got {value!r}"
            )
        if key in ("samples", "epochs", "train-samples", "metrics-every") and (
            not _is_int(value) or value < 1
        ):
            raise SpecError(source, where, f"expected a positive integer, got {value!r}")
        if key == "timeout" and (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value <= 0
        ):
            raise SpecError(source, where, f"expected a positive number of seconds, got {value!r}")
        if key == "data-dir" and not isinstance(value, str):
            raise SpecError(source, where, f"expected a folder name (string), got {value!r}")
    run = RUN_DEFAULTS | table
    if run["data"] is None:
        given = [key for key in TRAINING_ONLY if key in table]
        if given:
            raise SpecError(
                source, f"run.{given[0]}", "a training option; set run.data to train on a dataset"
            )
    else:
        given = [key for key in RANDOM_ONLY if key in table]
        if given:
            raise SpecError(
                source,
                f"run.{given[0]}",
                "an option of runs on random data; training (run.data) runs the dense mode on "
                "the dataset (epochs, train-samples)",
            )
        if run["data-dir"] is not None:
            run["data-dir"] = str((source.parent / run["data-dir"]).resolve())
    return run


def _flatten_grid(table: dict, prefix: str = "") -> dict:
    """Grid keys written as nested tables (unquoted dotted keys) into dotted strings."""
    flat = {}
    for key, value in table.items():
        dotted = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            flat.update(_flatten_grid(value, dotted))
        else:
            flat[dotted] = value
    return flat


_SEGMENT = re.compile(r"^([A-Za-z0-9_-]+)((?:\[\d+\])*)$")


def _parse_key(dotted: str, source: Path) -> tuple[str, list]:
    """``protocol.phases.relaxation`` → ('protocol', ['phases', 'relaxation'])."""
    parts = dotted.split(".")
    if parts[0] not in GRID_ROOTS or len(parts) < 2:
        raise SpecError(
            source,
            f"grid.{dotted}",
            "expected a key into the model or protocol file, starting with 'model.' or "
            "'protocol.' (e.g. protocol.phases.relaxation)",
        )
    steps: list = []
    for part in parts[1:]:
        match = _SEGMENT.match(part)
        if not match:
            raise SpecError(
                source,
                f"grid.{dotted}",
                f"expected names separated by dots, each with optional [index]; got {part!r}",
            )
        steps.append(match.group(1))
        steps.extend(int(index) for index in re.findall(r"\d+", match.group(2)))
    return parts[0], steps


def _format_steps(steps: list) -> str:
    """Steps as the spec names keys: ``layers[1].size``."""
    text = ""
    for step in steps:
        text += f"[{step}]" if isinstance(step, int) else (f".{step}" if text else step)
    return text


def _override(data: dict, steps: list, value: Any, file: Path, grid_key: str, source) -> list:
    """Set ``value`` at ``steps`` in ``data`` (in place); return the steps with indices as int."""
    node, done = data, []
    for depth, step in enumerate(steps):
        last = depth == len(steps) - 1
        here = _format_steps(done) or "the top level"
        if isinstance(node, list):
            index = step if isinstance(step, int) else int(step) if step.isdigit() else None
            if index is None or index >= len(node):
                raise SpecError(
                    source,
                    f"grid.{grid_key}",
                    f"{here} in {file} is an array of {len(node)}; expected an index below "
                    f"{len(node)}, got {step!r}",
                )
            step = index
        elif isinstance(node, dict):
            if isinstance(step, int):
                raise SpecError(
                    source, f"grid.{grid_key}", f"{here} in {file} is a table, not an array"
                )
            if not last:
                node.setdefault(step, {})
        else:
            raise SpecError(
                source,
                f"grid.{grid_key}",
                f"{here} in {file} is a value ({node!r}), not a table or an array",
            )
        done.append(step)
        if last:
            node[step] = copy.deepcopy(value)
        else:
            node = node[step]
    return done


def _cell(value: Any) -> Any:
    """A grid value as a table cell: scalars as they are, tables and arrays as JSON."""
    if isinstance(value, str | int | float | bool):
        return value
    return json.dumps(value, separators=(", ", ": "), default=str)


def _slug_text(value: Any) -> str:
    if isinstance(value, dict):
        return "-".join(_slug_text(item) for item in value.values())
    if isinstance(value, list):
        return "-".join(_slug_text(item) for item in value)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return re.sub(r"[^A-Za-z0-9.+-]+", "", str(value))


def _slug(overrides: dict, seed: int) -> str:
    """``relaxation=20ms_memory=trace-50ms_seed0``: the last name of each key and its value."""
    parts = [
        f"{re.sub(r'[^A-Za-z0-9_-]', '', key.rsplit('.', 1)[-1])}={_slug_text(value)}"
        for key, value in overrides.items()
    ]
    return "_".join([*parts, f"seed{seed}"])[:80].rstrip("_")


def _digest(*items: Any) -> str:
    text = json.dumps(items, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def _describe(overrides: dict, seed: int) -> str:
    return ", ".join([f"{key} = {value!r}" for key, value in overrides.items()] + [f"seed {seed}"])


def load_sweep(path: str | Path) -> Sweep:
    """Read a sweep file, expand its grid and validate every point.

    Parameters
    ----------
    path : str or Path
        The sweep file (TOML; see the module docstring).

    Returns
    -------
    Sweep
        The sweep with its points.

    Raises
    ------
    arsim.spec.SpecError
        The sweep file, a point's model or protocol, or the combination is invalid; the message
        is one line naming the file and the key.
    """
    source = Path(path)
    data = read_toml(source)
    unknown = sorted(set(data) - set(TOP_LEVEL_KEYS))
    if unknown:
        raise SpecError(
            source, unknown[0], f"unknown key; expected one of: {', '.join(TOP_LEVEL_KEYS)}"
        )
    files = {}
    for key in GRID_ROOTS:
        if key not in data:
            raise SpecError(
                source, key, f"missing (required): the {key} file, e.g. ../{key}s/X.toml"
            )
        if not isinstance(data[key], str):
            raise SpecError(source, key, f"expected a file name (string), got {data[key]!r}")
        files[key] = source.parent / data[key]
        if not files[key].is_file():
            raise SpecError(source, key, f"file not found: {files[key]}")
    name = data.get("name", source.stem)
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9._-]+", name):
        raise SpecError(source, "name", f"expected a name of letters, digits, ._-; got {name!r}")
    seeds = data.get("seeds")
    if seeds is not None:
        if (
            not isinstance(seeds, list)
            or not seeds
            or not all(_is_int(seed) and seed >= 0 for seed in seeds)
        ):
            raise SpecError(
                source,
                "seeds",
                f"expected a non-empty list of non-negative integers, got {seeds!r}",
            )
        if len(set(seeds)) != len(seeds):
            raise SpecError(source, "seeds", f"expected distinct seeds, got {seeds!r}")
    grid_table = data.get("grid", {})
    if not isinstance(grid_table, dict):
        raise SpecError(source, "grid", f"expected a table of dotted keys, got {grid_table!r}")
    grid = _flatten_grid(grid_table)
    parsed = {}
    for key, values in grid.items():
        parsed[key] = _parse_key(key, source)
        if not isinstance(values, list) or not values:
            raise SpecError(
                source, f"grid.{key}", f"expected a non-empty list of values, got {values!r}"
            )
        texts = [json.dumps(value, sort_keys=True, default=str) for value in values]
        if len(set(texts)) != len(texts):
            raise SpecError(source, f"grid.{key}", f"expected distinct values, got {values!r}")
        if seeds is not None and parsed[key] == ("model", ["seed"]):
            raise SpecError(
                source, f"grid.{key}", "the sweep's seeds set the seed; drop one of the two"
            )
    run = _read_run(data.get("run", {}), source)
    bases = {root: read_toml(files[root]) for root in GRID_ROOTS}

    points = []
    for combination in itertools.product(*grid.values()):
        overrides = dict(zip(grid, combination, strict=True))
        tables = copy.deepcopy(bases)
        changed: dict[str, list] = {root: [] for root in GRID_ROOTS}
        for key, value in overrides.items():
            root, steps = parsed[key]
            steps = _override(tables[root], steps, value, files[root], key, source)
            changed[root].append((key, steps))
        model, protocol = _validate(tables, files, changed, source, overrides)
        for seed in seeds if seeds is not None else [model.seed]:
            _check_point(model, protocol, run, source, overrides, seed)
            digest = _digest(tables["model"], tables["protocol"], seed, _result_options(run))
            point_id = f"{_slug(overrides, seed)}-{digest}"
            points.append(Point(point_id, overrides, seed, tables["model"], tables["protocol"]))
    return Sweep(
        source,
        name,
        files["model"],
        files["protocol"],
        None if seeds is None else tuple(seeds),
        grid,
        run,
        tuple(points),
    )


def _result_options(run: dict) -> dict:
    """The run options that decide a point's numbers (not where data lie or how long to wait)."""
    return {key: value for key, value in run.items() if key not in ("data-dir", "timeout")}


def _validate(tables: dict, files: dict, changed: dict, source: Path, overrides: dict):
    """The model and protocol specs of a point; errors name the grid key or the point."""
    specs = {}
    for root, loader in (("model", model_from_dict), ("protocol", protocol_from_dict)):
        try:
            specs[root] = loader(tables[root], str(files[root]))
        except SpecError as error:
            if error.message.startswith("unknown key"):
                for key, steps in changed[root]:
                    prefix = _format_steps(steps)
                    if error.key == prefix or error.key.startswith((prefix + ".", prefix + "[")):
                        raise SpecError(
                            source,
                            f"grid.{key}",
                            f"{files[root]} has no key {error.key!r} ({error.message})",
                        ) from None
            raise _in_point(error, source, overrides) from None
    return specs["model"], specs["protocol"]


def _in_point(error: SpecError, source: Path, overrides: dict, seed: int | None = None):
    """The spec's own error, with the sweep point it came from appended."""
    parts = [f"{key} = {value!r}" for key, value in overrides.items()]
    parts += [] if seed is None else [f"seed {seed}"]
    where = f": {', '.join(parts)}" if parts else ""
    return SpecError(error.file, error.key, f"{error.message} (sweep {source}{where})")


def _check_point(model, protocol, run: dict, source: Path, overrides: dict, seed: int) -> None:
    """What depends on the model, the protocol and the run options together."""
    try:
        check_compatible(model, protocol)
    except SpecError as error:
        raise _in_point(error, source, overrides, seed) from None
    if run["data"] is not None:
        from arsim.datasets import N_CLASSES, N_PIXELS, DatasetError, find_dataset_folder

        if model.input.size != N_PIXELS or model.output.size != N_CLASSES:
            raise SpecError(
                model.source,
                "layers",
                f"training on {run['data']} needs {N_PIXELS} inputs and {N_CLASSES} outputs; got "
                f"{model.input.size} and {model.output.size} (sweep {source})",
            )
        try:
            find_dataset_folder(run["data"], run["data-dir"])
        except DatasetError as error:
            raise SpecError(source, "run.data", str(error).splitlines()[0]) from None
        return
    from arsim.run import ExecutionError, check_execution

    try:
        check_execution(protocol, run["mode"], run["device"], model)
    except ExecutionError as error:
        raise SpecError(
            source, "run.mode", f"{error} (point {_describe(overrides, seed)})"
        ) from None


# --------------------------------------------------------------------------------------------
# One point
# --------------------------------------------------------------------------------------------
def _write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (a temporary file renamed over ``path``)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(data, indent=2, default=str))
    os.replace(temporary, path)


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def finished_status(folder: Path) -> dict | None:
    """The status.json of a finished run folder (``completed`` or ``diverged``), else None."""
    status = _read_json(Path(folder) / "status.json")
    return status if status is not None and status.get("status") in FINISHED else None


def point_payload(sweep: Sweep, point: Point, out: Path, blas_threads: int | None) -> dict:
    """What a point's process needs: resolved tables, seed, run options and its folder.

    Parameters
    ----------
    sweep : Sweep
        The sweep.
    point : Point
        The point.
    out : Path
        The sweep folder (absolute).
    blas_threads : int or None
        BLAS threads of the point's process (None: left to the environment).

    Returns
    -------
    dict
        JSON-serialisable; written to ``OUT/points/<id>.json`` when the point runs.
    """
    return {
        "id": point.id,
        "sweep": str(sweep.source),
        "overrides": point.overrides,
        "seed": point.seed,
        "model": point.model,
        "protocol": point.protocol,
        "model_source": str(sweep.model_path),
        "protocol_source": str(sweep.protocol_path),
        "run": sweep.run,
        "folder": str(Path(out) / "points" / point.id),
        "blas_threads": blas_threads,
    }


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
    import pandas as pd

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
    outcome = _read_json(folder.with_name(folder.name + ".outcome.json")) or {}
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
            _write_json(outcome, {"exit_status": None, "message": None, "note": note})
        return point_row(payload) | {"ran": False}
    folder.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(folder)
    spec = folder.with_name(folder.name + ".json")
    log = folder.with_name(folder.name + ".log")
    _write_json(spec, payload)
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
    _write_json(folder.with_name(folder.name + ".outcome.json"), outcome)
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


def _point_main(path: str) -> int:
    """Run the point described in ``path`` (``POINT.json``); returns the exit status."""
    _exit_with_parent()
    from arsim.datasets import DatasetError, load_dataset
    from arsim.run import ExecutionError, RunFolderError, run_to_folder
    from arsim.train import TrainError, train

    payload = json.loads(Path(path).read_text())
    run, out = payload["run"], Path(payload["folder"])
    try:
        model = model_from_dict(payload["model"], payload["model_source"])
        protocol = protocol_from_dict(payload["protocol"], payload["protocol_source"])
        if run["data"] is not None:
            dataset = load_dataset(run["data"], run["data-dir"], train_limit=run["train-samples"])
            _, status = train(
                model,
                protocol,
                dataset,
                out,
                run["epochs"],
                payload["seed"],
                train_samples=run["train-samples"],
                metrics_every=run["metrics-every"],
                baseline=run["baseline"] == "backprop",
                progress=False,
                target=run["target"],
            )
            diverged = status["message"] if status["status"] == "diverged" else None
        else:
            _, result = run_to_folder(
                model,
                protocol,
                out,
                run["samples"],
                payload["seed"],
                run["target"],
                progress=False,
                mode=run["mode"],
                device=run["device"],
            )
            diverged = result.diverged
    except (SpecError, RunFolderError, ExecutionError, TrainError, DatasetError) as error:
        print(f"arsim: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if diverged:
        print(f"arsim: {diverged}", file=sys.stderr)
        return EXIT_DIVERGED
    return EXIT_COMPLETED


# --------------------------------------------------------------------------------------------
# The sweep
# --------------------------------------------------------------------------------------------
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
    if out.is_dir() and any(out.iterdir()) and not (out / "sweep.json").is_file():
        raise SweepError(
            f"{out}: exists, is not empty and holds no sweep.json (not a sweep folder); "
            "choose another --out"
        )


def results_table(rows: list[dict], grid_keys: list[str]):
    """The results table of some point rows (a pandas DataFrame, columns in a fixed order)."""
    import pandas as pd

    first = ["point", "seed", *grid_keys, "status", "error", "wall_seconds", "blas_threads"]
    first.append("folder")
    columns = list(first)
    for row in rows:
        columns += [column for column in row if column not in columns and column != "ran"]
    return pd.DataFrame(rows, columns=columns)


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
        Worker processes of the local cluster (default: the number of cores). With more than
        one, each point's BLAS runs on ``cores // workers`` threads (on a scheduler's cluster:
        1 thread).
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
    from tqdm.auto import tqdm

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
    try:
        (out / "points").mkdir(parents=True, exist_ok=True)
        _write_json(out / "sweep.json", _sweep_record(sweep, executor))
        _write_results(out, rows, order, grid_keys)
        if todo:
            from distributed import as_completed

            token = uuid.uuid4().hex[:8]
            payloads = {point.id: point_payload(sweep, point, out, blas_threads) for point in todo}
            keys = {}
            futures = []
            for point in todo:
                future = client.submit(
                    run_point,
                    payloads[point.id],
                    key=f"arsim-point-{point.id}-{token}",
                    retries=RETRIES,
                    pure=False,
                )
                keys[future.key] = point.id
                futures.append(future)
            pending = as_completed(futures)
            del futures, future  # a finished future is released once its row is read
            for future in pending:
                point_id = keys[future.key]
                try:
                    row = future.result()
                except Exception as error:  # a lost worker (KilledWorker), a cancelled task
                    text = f"{type(error).__name__}: {error}".splitlines()[0]
                    row = point_row(payloads[point_id], text) | {"ran": False}
                future.release()
                ran += bool(row.pop("ran", False))
                rows[point_id] = row
                _write_results(out, rows, order, grid_keys)
                bar.set_postfix_str(_counts_text(rows.values()), refresh=False)
                bar.update(1)
                if on_point is not None:
                    on_point(row)
    finally:
        bar.close()
        if own:
            client.close()
        if cluster is not None:
            cluster.close()
    table = _write_results(out, rows, order, grid_keys)
    table.attrs = {
        "out": str(out),
        "points_run": ran,
        "points_reused": reused,
        "counts": {status: int((table["status"] == status).sum()) for status in STATUSES},
    }
    return table


def _connect(client, scheduler: str | None, workers: int | None, todo: int):
    """The Dask client to run ``todo`` points with, and what it is.

    Returns
    -------
    (cluster, client, blas_threads, executor)
        The local cluster made here (or None), the client (None when there is nothing to
        run), the BLAS threads of each point process and a description for ``sweep.json``.
    """
    cluster, blas_threads = None, 1
    if not todo:
        return None, None, None, {"scheduler": None, "points_to_run": 0}
    if client is None:
        from distributed import Client, LocalCluster

        if scheduler:
            try:
                client = Client(scheduler, timeout="20s")
            except (OSError, TimeoutError, ValueError) as error:
                raise SweepError(f"--scheduler {scheduler}: cannot connect: {error}") from None
        else:
            import logging

            workers = min(workers or available_cores(), todo)
            cluster = LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address="127.0.0.1:0",  # no fixed port to collide on
                silence_logs=logging.ERROR,
            )
            try:
                client = Client(cluster)
            except BaseException:
                cluster.close()
                raise
            blas_threads = max(1, available_cores() // workers)
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


def _counts_text(rows) -> str:
    statuses = [row["status"] for row in rows]
    return ", ".join(f"{statuses.count(status)} {status}" for status in STATUSES)


def _sweep_record(sweep: Sweep, executor: dict) -> dict:
    from arsim.run import versions

    try:
        import dask

        dask_version = dask.__version__
    except ImportError:  # pragma: no cover - a dependency
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


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------
def add_sweep_arguments(parser) -> None:
    """Add the ``arsim sweep`` arguments to an argparse parser."""
    parser.add_argument(
        "sweep", type=Path, help="sweep file (TOML), e.g. sweeps/relaxation-memory.toml"
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="sweep folder (default: runs/sweep-<name>); reruns skip finished points",
    )
    parser.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="Dask scheduler, e.g. tcp://host:8786 (default: local)",
    )
    parser.add_argument(
        "--workers",
        type=_positive_int,
        help="local worker processes (default: the number of cores)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _positive_int(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def main_from_args(args) -> int:
    """Run ``arsim sweep`` as parsed; returns the exit status (0, 1 some not completed, 2)."""
    try:
        sweep = load_sweep(args.sweep)
        table = run_sweep(
            sweep,
            args.out,
            scheduler=args.scheduler,
            workers=args.workers,
            progress=not args.quiet,
        )
    except (SpecError, SweepError) as error:
        print(f"arsim: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    counts = table.attrs["counts"]
    print(
        f"arsim: wrote {Path(table.attrs['out']) / 'results.csv'} ({len(table)} points: "
        + ", ".join(f"{counts[status]} {status}" for status in STATUSES)
        + f"; {table.attrs['points_run']} run, {table.attrs['points_reused']} finished before)"
    )
    bad = table[table["status"] != "completed"]
    for _, row in bad.head(20).iterrows():
        print(f"arsim: point {row['point']}: {row['status']}: {row['error']}", file=sys.stderr)
    return EXIT_COMPLETED if bad.empty else EXIT_SOME_FAILED


def main(argv: list[str] | None = None) -> int:
    """``python -m arsim.sweep _point POINT.json`` (one point) or ``SWEEP.toml [options]``."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 2 and argv[0] == "_point":
        return _point_main(argv[1])
    from arsim.cli import main as cli_main

    return cli_main(["sweep", *argv])


if __name__ == "__main__":
    sys.exit(main())

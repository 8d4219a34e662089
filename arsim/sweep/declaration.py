"""The sweep file: its points, each a model and protocol with grid values and a seed.

:func:`load_sweep` reads a sweep file (see :mod:`arsim.sweep`), expands the grid and validates
every point before anything runs; :func:`point_payload` is what a point's process receives.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arsim.datasets import (
    DATASET_NAMES,
    N_CLASSES,
    N_PIXELS,
    DatasetError,
    find_dataset_source,
)
from arsim.jobs import BASELINES, Training
from arsim.modes import DEVICES, MODES, ExecutionError, check_execution
from arsim.spec import (
    CODEGEN_TARGETS,
    SpecError,
    check_compatible,
    check_name,
    model_from_dict,
    protocol_from_dict,
    read_toml,
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
    "compare-every": Training.compare_every,
    "baseline": "backprop",
    "timeout": None,
}
"""``[run]`` options and their defaults (the names of the ``arsim run`` options)."""
RUN_CHOICES: dict[str, tuple] = {
    "mode": tuple(MODES),
    "device": DEVICES,
    "target": CODEGEN_TARGETS,
    "data": DATASET_NAMES,
    "baseline": BASELINES,
}
"""The values a ``[run]`` option may take, where they are a fixed set."""
RANDOM_ONLY = ("samples", "mode", "device")
TRAINING_ONLY = (
    "data-dir",
    "epochs",
    "train-samples",
    "metrics-every",
    "compare-every",
    "baseline",
)


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
    choices = RUN_CHOICES
    for key, value in table.items():
        where = f"run.{key}"
        if key in choices and value not in choices[key]:
            raise SpecError(
                source, where, f"expected one of {', '.join(choices[key])}; got {value!r}"
            )
        if key in ("samples", "epochs", "train-samples", "metrics-every", "compare-every") and (
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


def parse_setting(text: str) -> tuple[str, list | Any]:
    """``KEY=VALUES`` of ``arsim sweep --set``: the key and its values (a TOML value).

    ``protocol.phases.relaxation=["20 ms", "50 ms"]`` gives a list; a bare word that is not a
    TOML value (``model.memory.kind=trace``) is taken as a string.
    """
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise SpecError("--set", text, "expected KEY=VALUES, e.g. 'seeds=[0]'")
    try:
        parsed = tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value.strip()
    return key.strip(), parsed


def _apply_settings(data: dict, settings: dict, source: Path) -> None:
    """Replace the sweep file's seeds, run options or grid lists by ``settings``."""
    grid = _flatten_grid(data.get("grid", {})) if isinstance(data.get("grid", {}), dict) else {}
    for key, value in settings.items():
        values = value if isinstance(value, list) else [value]
        if key == "seeds":
            data["seeds"] = values
        elif key.startswith("run."):
            if not isinstance(data.setdefault("run", {}), dict):
                raise SpecError(source, "run", "expected a table")
            data["run"][key.removeprefix("run.")] = value
        elif key.split(".")[0] in GRID_ROOTS:
            grid[key] = values
            data["grid"] = grid
        else:
            raise SpecError(
                "--set", key, "expected seeds, run.OPTION or a grid key (model.… or protocol.…)"
            )


def load_sweep(path: str | Path, settings: dict | None = None) -> Sweep:
    """Read a sweep file, expand its grid and validate every point.

    Parameters
    ----------
    path : str or Path
        The sweep file (TOML; see the module docstring).
    settings : dict, optional
        Replacements of the file's ``seeds``, ``run.OPTION`` values or grid lists (a grid key
        not in the file is added), as ``arsim sweep --set KEY=VALUES`` gives them.

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
    _apply_settings(data, settings or {}, source)
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
    name = check_name(data["name"], source, "name") if "name" in data else source.stem
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
    """The run options that decide a point's numbers (not where data lie or how long to wait).

    ``compare-every`` counts only where it is not the default, so that the points of sweeps
    made before the option existed keep their digests.
    """
    options = {key: value for key, value in run.items() if key not in ("data-dir", "timeout")}
    if options.get("compare-every") == RUN_DEFAULTS["compare-every"]:
        del options["compare-every"]
    return options


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
        if model.input.size != N_PIXELS or model.output.size != N_CLASSES:
            raise SpecError(
                model.source,
                "layers",
                f"training on {run['data']} needs {N_PIXELS} inputs and {N_CLASSES} outputs; got "
                f"{model.input.size} and {model.output.size} (sweep {source})",
            )
        try:
            find_dataset_source(run["data"], run["data-dir"])
        except DatasetError as error:
            raise SpecError(source, "run.data", str(error).splitlines()[0]) from None
        return
    try:
        check_execution(protocol, run["mode"], run["device"], model)
    except ExecutionError as error:
        raise SpecError(
            source, "run.mode", f"{error} (point {_describe(overrides, seed)})"
        ) from None


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

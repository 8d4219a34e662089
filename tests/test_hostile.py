"""Hostile declarations: each is refused with one line naming the file and key, exit 2, and
nothing written; a property-based test mutates the shipped files."""

from __future__ import annotations

import contextlib
import copy
import io
import tomllib
from pathlib import Path

import pytest
from conftest import PAPER_MODEL, PAPER_PROTOCOL
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arsim import cli, jobs
from arsim.memory import check_memory
from arsim.modes import check_execution
from arsim.spec import check_compatible


def _arsim(tmp_path: Path, model: Path, protocol: Path, *extra) -> tuple[int, str]:
    """``arsim run`` in this process; returns the exit status and stderr."""
    err = io.StringIO()
    out = tmp_path / "run"
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(
            ["run", str(model), str(protocol), "--out", str(out), "--quiet", "--samples", "1"]
            + list(extra)
        )
    return code, err.getvalue()


def _refused(tmp_path, model_text=None, protocol_text=None, *extra) -> str:
    model, protocol = PAPER_MODEL, PAPER_PROTOCOL
    if model_text is not None:
        model = tmp_path / "m.toml"
        model.write_text(model_text) if isinstance(model_text, str) else model.write_bytes(
            model_text
        )
    if protocol_text is not None:
        protocol = tmp_path / "p.toml"
        protocol.write_text(protocol_text)
    code, err = _arsim(tmp_path, model, protocol, *extra)
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("arsim: error: "), err
    assert "Traceback" not in err
    assert not (tmp_path / "run").exists() and not list(tmp_path.glob(".run.partial-*"))
    return err


def test_deeply_nested_toml_is_refused(tmp_path):
    err = _refused(tmp_path, "x = " + "[" * 100_000 + "]" * 100_000 + "\n")
    assert "m.toml" in err and "nested too deeply" in err


def test_sizes_that_cannot_fit_in_memory_are_refused(tmp_path):
    text = PAPER_MODEL.read_text().replace("size = 300", "size = 300000000", 1)
    err = _refused(tmp_path, text)
    assert "m.toml: layers[].size" in err and "bytes of memory" in err


def test_a_batch_size_that_cannot_fit_in_memory_is_refused(tmp_path):
    text = PAPER_PROTOCOL.read_text().replace("batch_size = 64", "batch_size = 1000000000000")
    err = _refused(tmp_path, None, text)
    assert "p.toml: learning.batch_size" in err and "bytes of memory" in err


@pytest.mark.parametrize(
    "old, new, key",
    [
        ('relaxation = "100 ms"', 'relaxation = "1e400 ms"', "phases.relaxation"),
        ('tau = "10 ms"', 'tau = "1e400 ms"', "tau"),
        ('dt = "1 ms"', 'dt = "1e400 ms"', "dt"),
    ],
)
def test_durations_that_overflow_are_refused(tmp_path, old, new, key):
    err = _refused(tmp_path, None, PAPER_PROTOCOL.read_text().replace(old, new))
    assert f"p.toml: {key}:" in err and "finite" in err


@pytest.mark.parametrize("name", ["../x", "a\\u0000b", "x" * 5000, ".hidden", ""])
def test_names_unsafe_in_a_path_are_refused(tmp_path, name):
    text = PAPER_MODEL.read_text().replace('name = "paper-mlp"', f'name = "{name}"')
    err = _refused(tmp_path, text)
    assert "m.toml: name:" in err and len(err) < 400


# --------------------------------------------------------------------------------------------
# Property-based: mutated shipped files end in exit 0, 2 or 3 with one line, never a traceback
# --------------------------------------------------------------------------------------------
MODEL_DATA = tomllib.loads(PAPER_MODEL.read_text())
PROTOCOL_DATA = tomllib.loads(PAPER_PROTOCOL.read_text())

VALUES = st.one_of(
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=20),
    st.sampled_from(["10 ms", "1e400 ms", "-1 ms", "0 ms", "1e-300 s", "5 Hz", "90 deg", "x"]),
    st.lists(st.integers(-3, 3), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


def _paths(data, prefix=()):
    """Every (path, value) of a nested dict/list."""
    yield prefix, data
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from _paths(value, (*prefix, index))


def _toml(data) -> str:
    """A small TOML writer (inline tables; enough for the mutated files)."""

    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.encode("unicode_escape").decode().replace('"', '\\"') + '"'
        if isinstance(v, float):
            return {"inf": "inf", "-inf": "-inf", "nan": "nan"}.get(repr(v), repr(v))
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{key(k)} = {value(x)}" for k, x in v.items()) + "}"
        return str(v)

    def key(k):
        return '"' + str(k).encode("unicode_escape").decode().replace('"', '\\"') + '"'

    return "".join(f"{key(k)} = {value(v)}\n" for k, v in data.items())


@st.composite
def mutated(draw, data):
    """A copy of ``data`` with one entry replaced, removed or added, or its text cut."""
    data = copy.deepcopy(data)
    paths = [path for path, _ in _paths(data) if path]
    path = draw(st.sampled_from(paths))
    parent = data
    for step in path[:-1]:
        parent = parent[step]
    action = draw(st.sampled_from(["replace", "remove", "add"]))
    if action == "replace":
        parent[path[-1]] = draw(VALUES)
    elif action == "remove" and isinstance(parent, dict):
        del parent[path[-1]]
    elif isinstance(parent, dict):
        parent[draw(st.text(min_size=1, max_size=8))] = draw(VALUES)
    text = _toml(data)
    if draw(st.booleans()) and draw(st.booleans()):  # bytes: a cut or a stray byte
        cut = draw(st.integers(0, len(text)))
        return text.encode()[:cut] + draw(st.binary(max_size=3))
    return text.encode()


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(which=st.sampled_from(["model", "protocol"]), data=st.data())
def test_mutated_declarations_end_in_one_line(tmp_path_factory, which, data):
    tmp_path = tmp_path_factory.mktemp("hostile")
    source = MODEL_DATA if which == "model" else PROTOCOL_DATA
    content = data.draw(mutated(source))
    model, protocol = PAPER_MODEL, PAPER_PROTOCOL
    target = tmp_path / f"{which}.toml"
    target.write_bytes(content)
    if which == "model":
        model = target
    else:
        protocol = target
    code, err = _validate_only(tmp_path, model, protocol)
    assert code in (0, 2, 3), err
    assert "Traceback" not in err
    if code != 0:
        assert err.count("\n") == 1 and err.startswith("arsim: error: "), err
    assert not list(tmp_path.glob(".run.partial-*"))


def _validate_only(tmp_path, model, protocol):
    """``arsim run`` up to the point where a valid pair would start simulating (exit 0)."""
    started = []

    def stop_before_running(job, progress=True):
        started.append(job)
        try:
            check_compatible(job.model, job.protocol)
            check_execution(job.protocol, job.mode, job.device, job.model)
            check_memory(job.model, job.protocol, 1)
        except Exception as error:  # what execute maps to bad input
            if isinstance(error, jobs.BAD_INPUT_ERRORS):
                return jobs.bad_input(error)
            raise
        return jobs.Outcome(0, "arsim: would run")

    original = cli.execute
    cli.execute = stop_before_running
    try:
        return _arsim(tmp_path, model, protocol)
    finally:
        cli.execute = original

"""The documentation builds warning-free, documents every spec key, and its tutorials run."""

from __future__ import annotations

import ast
import subprocess
import sys

import nbclient
import nbformat
import pytest
from conftest import ROOT

import arsim
from arsim import docgen
from arsim.spec import keys

READERS = {"get", "number", "integer", "duration", "frequency", "phase", "table", "tables"}


def _shipped(kind):
    return sorted((ROOT / f"{kind}s").glob("*.toml"))


def test_sphinx_builds_without_warnings(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "-q",
            "-b",
            "html",
            str(ROOT / "docs"),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    page = (tmp_path / "reference" / "protocol.html").read_text(encoding="utf-8")
    assert "oscillation.frequency" in page and "Hz, kHz" in page
    assert (tmp_path / "tutorials" / "first-simulation.html").exists()
    assert "arsim.plot.traces" in (tmp_path / "api.html").read_text(encoding="utf-8")


def test_every_key_the_readers_accept_is_documented():
    models, protocols = _shipped("model"), _shipped("protocol")
    assert docgen.undocumented(models, protocols) == []
    assert docgen.unexplained(models, protocols) == []


def test_every_key_name_in_the_spec_readers_is_documented():
    """Static check: a key read with a literal name anywhere in arsim/spec is documented."""
    documented = {
        part.removesuffix("[]")
        for table in (keys.MODEL_KEYS, keys.PROTOCOL_KEYS)
        for key in table
        for part in key.split(".")
    }
    names = set()
    for path in (ROOT / "arsim" / "spec").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in READERS
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
                and not (
                    isinstance(node.func.value, ast.Attribute) and node.func.value.attr == "data"
                )
            ):
                names.add(node.args[0].value)
    assert names - documented == set()


def test_a_key_without_documentation_is_reported(monkeypatch):
    monkeypatch.delitem(keys.PROTOCOL_KEYS, "noise")
    assert docgen.undocumented() == ["protocol: noise"]


@pytest.mark.parametrize("name", ["first-simulation", "timing-hypothesis"])
def test_tutorial_notebooks_run(name):
    notebook = nbformat.read(ROOT / "docs" / "tutorials" / f"{name}.ipynb", as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=900,
        kernel_name="python3",
        resources={"metadata": {"path": str(ROOT / "docs" / "tutorials")}},
    )
    client.execute()
    text = "".join(
        output.get("text", "") for cell in notebook.cells for output in cell.get("outputs", [])
    )
    if name == "first-simulation":
        line = next(s for s in text.splitlines() if s.startswith("angle between AR"))
        assert float(line.split(":")[1].split()[0]) < 1.0
    else:
        table = next(
            c.outputs[0]["data"]["text/plain"] for c in notebook.cells if "run_sweep(" in c.source
        )
        assert table.count("completed") == 3


def test_version_and_project_files():
    done = subprocess.run(
        [sys.executable, "-m", "arsim", "--version"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout.strip() == f"arsim {arsim.__version__}"
    for name in ("LICENSE", "CHANGELOG.md", "CITATION.cff"):
        assert (ROOT / name).stat().st_size > 200
    assert "MIT License" in (ROOT / "LICENSE").read_text()
    assert "2009.05359" in (ROOT / "CITATION.cff").read_text()
    assert (ROOT / "README.md").stat().st_size <= 8 * 1024

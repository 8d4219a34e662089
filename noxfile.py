"""Smoke runs on every supported Python besides the default one (nox; ``.ci/run`` calls it).

``python3 -m nox`` runs the session ``smoke`` once per Python of :data:`OTHER_PYTHONS`: in a
fresh virtual environment (``python3.X -m venv``) it installs arsim as the README says
(``pip install -e '.[test]'``), runs the main job (``arsim run models/paper-mlp.toml
protocols/paper.toml --samples 64``) into a temporary folder and the tests of
:data:`SMOKE_TESTS` (:data:`SMOKE_SELECTION`). A Python that is not installed is skipped,
not failed.
``python3 -m nox --report FILE`` writes which sessions passed and which were skipped.

An interpreter is looked up as ``python3.X`` on ``PATH`` and, when that does not run (a pyenv
shim of a version that is not selected), in pyenv's versions folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import nox

OTHER_PYTHONS = ("3.12", "3.13")
"""Supported Pythons besides the default 3.11 (``requires-python`` in pyproject.toml)."""

SMOKE_TESTS = (
    "tests/test_network.py",
    "tests/test_oracle.py",
    "tests/test_period_oracle.py",
    "tests/test_cli.py",
)
"""The smoke subset: the Brian2 network, both NumPy references, the CLI."""

SMOKE_SELECTION = "not cython and not cpp_standalone"
"""Without the compiled code generation targets: compiling them for a new Python takes minutes
of CPU (the default Python's suite runs them); the NumPy target runs every network test."""

nox.options.sessions = ["smoke"]
nox.options.default_venv_backend = "venv"  # `python3.X -m venv`, as the README says
nox.options.reuse_venv = "no"  # a fresh environment every time
nox.options.error_on_missing_interpreters = False  # a Python not installed is skipped


def _runs(executable: str) -> bool:
    try:
        done = subprocess.run([executable, "--version"], capture_output=True, timeout=60)
    except OSError:
        return False
    return done.returncode == 0


def _make_pyenv_versions_findable(versions, folder: Path) -> None:
    """Make pyenv's ``python3.X`` findable where the one on ``PATH`` does not run.

    For each of ``versions`` whose ``python3.X`` on ``PATH`` is missing or fails (a pyenv shim
    of a version not selected), link pyenv's newest ``3.X.*`` into ``folder`` and put that
    folder at the front of ``PATH``.
    """
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    for version in versions:
        name = f"python{version}"
        found = shutil.which(name)
        if found and _runs(found):
            continue
        candidates = sorted(root.glob(f"{version}.*/bin/{name}"), key=lambda p: p.parts[-3])
        candidates = [path for path in candidates if _runs(str(path))]
        if not candidates:
            continue
        folder.mkdir(parents=True, exist_ok=True)
        staged = folder / f".{name}.{os.getpid()}"  # concurrent nox processes: atomic replace
        staged.unlink(missing_ok=True)
        staged.symlink_to(candidates[-1])  # the newest patch release
        os.replace(staged, folder / name)
        if str(folder) not in os.environ["PATH"].split(os.pathsep):
            os.environ["PATH"] = f"{folder}{os.pathsep}{os.environ['PATH']}"


_make_pyenv_versions_findable(OTHER_PYTHONS, Path(__file__).parent / ".nox" / "interpreters")


@nox.session(python=list(OTHER_PYTHONS))
def smoke(session: nox.Session) -> None:
    """Install arsim as the README says, run the main job and the smoke tests."""
    started = time.monotonic()
    session.install("-e", ".[test]")
    installed = time.monotonic()
    versions = "print('smoke: Python', sys.version.split()[0], '| brian2', brian2.__version__)"
    session.run("python", "-c", f"import sys, brian2; {versions}")
    out = Path(session.create_tmp()) / "paper-run"
    shutil.rmtree(out, ignore_errors=True)
    session.run(
        "arsim", "run", "models/paper-mlp.toml", "protocols/paper.toml",
        "--samples", "64", "--out", str(out), "--quiet",
    )  # fmt: skip
    pytest = ["python", "-m", "pytest", "-q", "-n", "2", "-p", "no:cacheprovider"]
    ran = time.monotonic()
    session.run(*pytest, "-k", SMOKE_SELECTION, *SMOKE_TESTS)
    session.log(
        f"smoke times: install {installed - started:.0f} s, main job {ran - installed:.0f} s, "
        f"tests {time.monotonic() - ran:.0f} s"
    )

"""Brian2 leaves no files in the temp folder and prints no "please report" banner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

FAILING_RUN = """
import os, signal, sys
import arsim.run  # noqa: F401  (what every arsim process imports)
import brian2 as b2

group = b2.NeuronGroup(3, "dv/dt = -v / (10*ms) : 1")
b2.Network(group).run(1 * b2.ms)  # target 'auto': Brian2 captures a compiler's output
if sys.argv[1] == "kill":
    os.kill(os.getpid(), signal.SIGKILL)


@b2.network_operation
def fail():
    raise ValueError("a failure inside a Brian2 run")


b2.Network(b2.NeuronGroup(3, "v : 1"), fail).run(1 * b2.ms)
"""


def _python(code: str, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh Python whose temp folder is ``tmp``."""
    tmp.mkdir(exist_ok=True)
    env = dict(os.environ) | {"TMPDIR": str(tmp)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=tmp,
    )


def test_an_uncaught_error_in_a_brian2_run_leaves_no_files_and_no_banner(tmp_path):
    """The process fails with its traceback only: no "please report" banner, no second copy
    of the traceback, a few dozen lines at most, and nothing in its temp folder."""
    done = _python(FAILING_RUN, tmp_path / "tmp", "raise")
    assert done.returncode == 1
    assert done.stderr.rstrip().endswith("ValueError: a failure inside a Brian2 run")
    assert "please report" not in done.stderr and done.stderr.count("Traceback") == 1
    assert len(done.stderr.splitlines()) <= 40, done.stderr
    assert list((tmp_path / "tmp").iterdir()) == []


def test_a_killed_brian2_process_leaves_no_files(tmp_path):
    """SIGKILL after a run (no exit handler runs): nothing in the temp folder."""
    done = _python(FAILING_RUN, tmp_path / "tmp", "kill")
    assert done.returncode == -9, done.stderr
    assert list((tmp_path / "tmp").iterdir()) == []

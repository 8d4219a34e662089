"""docs/first-hypothesis.md: its files and commands, run as written on a small budget."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pandas as pd
from conftest import ROOT, fashion_mnist_or_skip

PAGE = ROOT / "docs" / "first-hypothesis.md"
BUDGET = {"2000": "96"}  # training images: the page's number → the test's
FORBIDDEN = ("Warning", "never included in a network", "Traceback")
"""What no command of the page may print on stderr."""


def _blocks(text: str) -> list[tuple[str, str]]:
    """The fenced code blocks of a Markdown page: (language, code), in order."""
    return re.findall(r"```(\w+)\n(.*?)```", text, flags=re.S)


def _small(text: str) -> str:
    for page, test in BUDGET.items():
        text = re.sub(rf"\b{page}\b", test, text)
    return text


def _check_stderr(command: str, stderr: str) -> None:
    for word in FORBIDDEN:
        assert word not in stderr, f"{command}: {stderr}"


def test_the_first_hypothesis_page_runs_as_written(tmp_path):
    fashion_mnist_or_skip()
    (tmp_path / "models").symlink_to(ROOT / "models")
    env = dict(os.environ) | {"PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
    last_lines = []
    for language, code in _blocks(PAGE.read_text(encoding="utf-8")):
        code = _small(code)
        if language == "toml":  # the first line names the file
            name = code.splitlines()[0].removeprefix("# ").strip()
            (tmp_path / name).write_text(code)
        elif language == "bash":
            for line in code.strip().splitlines():
                words = shlex.split(line)
                assert words[0] == "arsim", line
                done = subprocess.run(
                    [sys.executable, "-m", "arsim", *words[1:], "--quiet"],
                    cwd=tmp_path, env=env, capture_output=True, text=True, timeout=3000,
                )  # fmt: skip
                assert done.returncode == 0, f"{line}: {done.stderr}"
                _check_stderr(line, done.stderr)
                last_lines.append(done.stdout.strip().splitlines()[-1])
        elif language == "python":
            done = subprocess.run(
                [sys.executable, "-c", code],
                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
            )  # fmt: skip
            assert done.returncode == 0, f"{code}: {done.stderr}"
            _check_stderr(code, done.stderr)
    # the training's last line names the angle to backprop
    assert re.search(r"angle to backprop [0-9.]+ deg", last_lines[0]), last_lines[0]
    run = tmp_path / "runs" / "alpha"
    for figure in ("traces.png", "learning.png"):
        assert (run / "figures" / figure).stat().st_size > 10_000
    metrics = pd.read_csv(run / "metrics.csv")
    assert list(metrics.kind) == ["epoch"]  # 2 minibatches: the plot drew the epoch row
    assert (run / "traces" / "epoch-0" / "meta.json").exists()
    table = pd.read_csv(tmp_path / "runs" / "alpha-sweep" / "results.csv")
    assert list(table["protocol.feedforward.tau"]) == ["1 ms", "2 ms", "5 ms"]
    assert (table.status == "completed").all()
    assert table[["ar_test_acc", "angle_deg", "relax_relerr_h1"]].notna().all().all()
    assert (tmp_path / "runs" / "alpha-sweep" / "tau.png").exists()

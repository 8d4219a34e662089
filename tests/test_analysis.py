"""The analysis scripts run and their numbers agree with closed forms."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
from conftest import ROOT


def test_relaxation_duration_script_follows_the_euler_tail(tmp_path):
    out = tmp_path / "relaxation-duration.png"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "analysis" / "relaxation_duration.py"),
            "--steps",
            "60",
            "--samples",
            "8",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert out.exists() and out.stat().st_size > 10_000
    table = pd.read_csv(out.with_suffix(".csv"))
    chain = table[table.network.str.contains("linear")]
    assert set(chain.hops) == {1, 2, 3} and len(chain) == 3 * 61
    relative = ((chain.relative_error - chain.euler).abs() / chain.euler).max()
    assert relative < 1e-9  # the simulated linear chain is the Euler closed form
    paper = table[~table.network.str.contains("linear")]
    start, end = paper[paper.t_over_tau == 0], paper[paper.t_over_tau == paper.t_over_tau.max()]
    assert (end.relative_error.to_numpy() < start.relative_error.to_numpy()).all()
    assert end.angle_deg.iloc[0] < start.angle_deg.iloc[0]


def test_spike_code_script_follows_campbell_and_the_integrate_and_fire_bound(tmp_path):
    out = tmp_path / "spike-code.png"
    done = subprocess.run(
        [sys.executable, str(ROOT / "analysis" / "spike_code.py"), "--rates", "100", "400",
         "--taus", "5", "--populations", "1", "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert out.exists() and out.stat().st_size > 10_000
    table = pd.read_csv(out.with_suffix(".csv"))
    poisson = table[table.encoder == "poisson"]
    assert ((poisson.rms_error / poisson.predicted - 1).abs() < 0.1).all()
    regular = table[table.encoder == "integrate-and-fire"]
    assert (regular.rms_error < regular.predicted).all() and len(regular) == 2

"""`arsim sweep --set KEY=VALUES` and `--limit N` shrink a shipped sweep without copying it."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import ROOT

from arsim.spec import SpecError
from arsim.sweep import load_sweep, parse_setting

SWEEP = ROOT / "sweeps" / "relaxation-memory.toml"


def test_parse_setting_reads_toml_values_and_bare_words():
    assert parse_setting('protocol.phases.relaxation=["20 ms", "50 ms"]') == (
        "protocol.phases.relaxation",
        ["20 ms", "50 ms"],
    )
    assert parse_setting("seeds=[0, 2]") == ("seeds", [0, 2])
    assert parse_setting("run.samples=8") == ("run.samples", 8)
    assert parse_setting("model.memory.kind=trace") == ("model.memory.kind", "trace")
    with pytest.raises(SpecError, match="expected KEY=VALUES"):
        parse_setting("seeds")


def test_settings_replace_grid_lists_seeds_and_run_options():
    full = load_sweep(SWEEP)
    assert len(full.points) == 24  # 3 durations x 2 starts x 2 memories x 2 seeds
    settings = dict(
        [
            parse_setting('protocol.phases.relaxation=["10 ms"]'),
            parse_setting("seeds=[5]"),
            parse_setting("run.samples=4"),
        ]
    )
    small = load_sweep(SWEEP, settings)
    assert len(small.points) == 1 * 2 * 2 * 1
    assert {p.overrides["protocol.phases.relaxation"] for p in small.points} == {"10 ms"}
    assert {p.seed for p in small.points} == {5} and small.run["samples"] == 4
    assert small.points[0].protocol["phases"]["relaxation"] == "10 ms"


def test_a_bad_setting_is_one_line_with_exit_2(tmp_path):
    with pytest.raises(SpecError, match="grid.protocol.phases.relaxation"):
        load_sweep(SWEEP, {"protocol.phases.relaxation": []})
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "arsim",
            "sweep",
            str(SWEEP),
            "--set",
            "nothing=1",
            "--limit",
            "1",
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "arsim: error: --set: nothing: expected seeds, run.OPTION or a grid key (model.… or "
        "protocol.…)"
    ]
    assert not (tmp_path / "out").exists()

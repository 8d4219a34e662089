"""How a run stops: SIGINT and SIGTERM, a second SIGINT, divergence, I/O failures, races."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import brian2
import numpy as np
import pandas as pd
import psutil
import pytest
from conftest import PAPER_MODEL, PAPER_PROTOCOL, ROOT, fashion_mnist_or_skip

import arsim.run
from arsim import stops
from arsim.jobs import RandomRun, execute
from arsim.run import random_data, run_to_folder
from arsim.spec import load_model, load_protocol
from arsim.sweep import BLAS_THREAD_VARIABLES

TINY_MODEL = """name = "tiny"
[init]
variance = {variance}
[[layers]]
name = "input"
size = 3
[[layers]]
name = "h1"
size = 3
activation = "linear"
[[layers]]
name = "output"
size = 2
"""
TINY_PROTOCOL = """name = "tiny"
tau = "10 ms"
dt = "1 ms"
[phases]
feedforward = "1 ms"
relaxation = "5 ms"
update = "1 ms"
[learning]
rate = {rate}
batch_size = 4
[record]
variables = ["x"]
samples = [0]
"""


def tiny(tmp_path: Path, rate: float = 0.01, variance: float = 0.05) -> tuple[Path, Path]:
    """A 3-3-2 linear network and a 7-step protocol with minibatches of 4 (files)."""
    model, protocol = tmp_path / "tiny-model.toml", tmp_path / "tiny-protocol.toml"
    model.write_text(TINY_MODEL.format(variance=variance))
    protocol.write_text(TINY_PROTOCOL.format(rate=rate))
    return model, protocol


def _environment() -> dict:
    """This process's environment with its BLAS threads pinned for a subprocess."""
    threads = stops.blas_threads()
    return dict(os.environ) | {name: str(threads) for name in BLAS_THREAD_VARIABLES}


def _wait_for(found, process, deadline_s: float = 600.0):
    """Poll ``found()`` until it is true or the process ends (a generous deadline)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline and process.poll() is None:
        if found():
            return True
        time.sleep(0.02)
    return bool(found())


def _rows(path: Path) -> int:
    try:
        return max(0, len(path.read_text().splitlines()) - 1)
    except OSError:
        return 0


def _signal_after_first_minibatch(args, out: Path, number: int, metrics: str = "metrics.csv"):
    """Start ``arsim run ARGS --out OUT``, send ``number`` once a metrics row is on disk."""
    process = subprocess.Popen(
        [sys.executable, "-m", "arsim.cli", "run", *map(str, args), "--out", str(out), "--quiet"],
        cwd=ROOT,
        env=_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        pattern = f".{out.name}.partial-*/{metrics}"
        seen = _wait_for(lambda: any(_rows(p) for p in out.parent.glob(pattern)), process)
        assert seen, "no minibatch was done before the run ended"
        process.send_signal(number)
        stdout, stderr = process.communicate(timeout=600)
    finally:
        if process.poll() is None:
            process.kill()
    return process.returncode, stdout, stderr


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_a_random_run_at_a_minibatch_boundary(tmp_path, number):
    model, protocol = tiny(tmp_path)
    out = tmp_path / "run"
    code, stdout, stderr = _signal_after_first_minibatch(
        [model, protocol, "--samples", 400_000], out, number
    )
    assert code == 128 + number, stderr
    assert stderr.count("\n") == 1 and stdout == "", stderr
    name = signal.Signals(number).name
    assert f"interrupted by {name}" in stderr and str(out) in stderr
    status = json.loads((out / "status.json").read_text())
    assert status["status"] == "interrupted" and status["signal"] == name
    done = status["batches_done"]
    assert 1 <= done < 1_000_000 and status["samples_done"] == 4 * done
    metrics = pd.read_csv(out / "metrics.csv")
    assert list(metrics["batch"]) == list(range(done))
    assert len(pd.read_csv(out / "samples.csv")) == 4 * done
    weights = np.load(out / "weights" / "at-stop.npz")
    assert not (out / "weights" / "final.npz").exists()
    assert all(np.isfinite(weights[key]).all() for key in weights.files)
    assert not list(tmp_path.glob(".run.partial-*"))
    # the weights at the stop are those of an uninterrupted run after as many minibatches
    again = tmp_path / "again"
    run_to_folder(load_model(model), load_protocol(protocol), again, 4 * done, progress=False)
    final = np.load(again / "weights" / "final.npz")
    for key in final.files:
        np.testing.assert_array_equal(weights[key], final[key])


def _training_args(samples: int) -> list:
    return [
        PAPER_MODEL,
        PAPER_PROTOCOL,
        "--data",
        "fashion-mnist",
        "--train-samples",
        samples,
        "--epochs",
        1,
        "--metrics-every",
        1,
        "--baseline",
        "none",
    ]


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_a_training_and_it_resumes_bit_identically(tmp_path, number):
    fashion_mnist_or_skip()
    from arsim.datasets import load_dataset  # noqa: PLC0415 (after the skip)
    from arsim.train import train  # noqa: PLC0415 (after the skip)

    samples = 1024
    out = tmp_path / "stopped"
    code, stdout, stderr = _signal_after_first_minibatch(_training_args(samples), out, number)
    assert code == 128 + number, stderr
    assert stderr.count("\n") == 1 and "--resume" in stderr and str(out) in stderr, stderr
    status = json.loads((out / "status.json").read_text())
    assert status["status"] == "interrupted" and status["epochs_done"] == 0
    assert 1 <= status["batches"] < samples // 64
    assert _rows(out / "metrics.csv") == status["batches"]
    assert (out / "weights" / "at-stop.npz").is_file()
    assert not (out / "weights" / "final.npz").exists()
    if number != signal.SIGINT:
        return
    model, protocol = load_model(PAPER_MODEL), load_protocol(PAPER_PROTOCOL)
    data = load_dataset("fashion-mnist", train_limit=samples)
    common = dict(train_samples=samples, metrics_every=1, baseline=False, progress=False)
    resumed, status = train(model, protocol, data, out, 1, resume=True, **common)
    assert status["status"] == "completed" and resumed == out
    assert not (out / "weights" / "at-stop.npz").exists()
    whole, _ = train(model, protocol, data, tmp_path / "whole", 1, **common)
    a, b = np.load(whole / "weights" / "final.npz"), np.load(out / "weights" / "final.npz")
    for key in a.files:
        np.testing.assert_array_equal(a[key], b[key])
    assert (whole / "metrics.csv").read_text() == (out / "metrics.csv").read_text()


def test_a_second_sigint_stops_at_once():
    before = signal.getsignal(signal.SIGINT)
    with stops.StopRequests() as requests:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)  # the handler runs in this thread at the next bytecode
        assert requests.signal == signal.SIGINT and stops.requested() == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    assert stops.requested() is None
    assert signal.getsignal(signal.SIGINT) is before


def test_stopped_at_once_leaves_no_folder_and_exits_130(tmp_path, monkeypatch, capsys):
    model, protocol = tiny(tmp_path)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(arsim.run, "simulate", interrupted)
    job = RandomRun(model=load_model(model), protocol=load_protocol(protocol), out=tmp_path / "r")
    assert execute(job, progress=False).report() == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "stopped at once" in err and "nothing was kept" in err
    assert not (tmp_path / "r").exists() and not list(tmp_path.glob(".r.partial-*"))


def test_divergence_keeps_the_rows_before_it_and_the_last_finite_weights(tmp_path):
    model, protocol = tiny(tmp_path, rate=3.0, variance=0.25)  # blows up after a few updates
    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "arsim.cli", "run", model, protocol, "--samples", "200"]
        + ["--out", str(out), "--quiet"],
        capture_output=True,
        text=True,
        timeout=600,
        env=_environment(),
    )
    assert done.returncode == 3 and done.stderr.count("\n") == 1, done.stderr
    status = json.loads((out / "status.json").read_text())
    kept = status["batches_done"]
    sample = int(done.stderr.split("sample ")[1].split(" ")[0])
    assert kept >= 1 and kept == sample // 4, done.stderr  # every minibatch before it
    assert f"{kept} minibatches before it kept (samples 0-{4 * kept - 1}" in done.stderr
    assert list(pd.read_csv(out / "metrics.csv")["batch"]) == list(range(kept))
    assert sorted(pd.read_csv(out / "samples.csv")["sample"]) == list(range(4 * kept))
    assert not (out / "weights" / "final.npz").exists()
    last = np.load(out / "weights" / "at-divergence.npz")
    assert all(np.isfinite(last[key]).all() for key in last.files)
    # the same weights as a run of those minibatches alone
    run_to_folder(
        load_model(model), load_protocol(protocol), tmp_path / "a", 4 * kept, progress=False
    )
    alone = np.load(tmp_path / "a" / "weights" / "final.npz")
    for key in alone.files:
        np.testing.assert_array_equal(alone[key], last[key])


def test_random_data_of_a_sample_does_not_depend_on_the_sample_count():
    model = load_model(PAPER_MODEL)
    few, many = random_data(model, 3, 7), random_data(model, 50, 7)
    np.testing.assert_array_equal(few[0], many[0][:3])
    np.testing.assert_array_equal(few[1], many[1][:3])
    assert many[1].sum(axis=1).tolist() == [1.0] * 50  # one-hot


# --------------------------------------------------------------------------------------------
# I/O failures: one line, exit 2, nothing half-written
# --------------------------------------------------------------------------------------------
def _run(tmp_path, out, *extra):
    model, protocol = tiny(tmp_path)
    return subprocess.run(
        [sys.executable, "-m", "arsim.cli", "run", model, protocol, "--samples", "4"]
        + ["--out", str(out), "--quiet", *extra],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_out_in_the_way_of_a_file_exits_2_with_one_line(tmp_path, where):
    afile = tmp_path / "afile"
    afile.write_text("precious")
    out = afile if where == "a file" else afile / "run"
    done = _run(tmp_path, out)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("arsim: error:") and "afile" in done.stderr
    assert afile.read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "afile",
        "tiny-model.toml",
        "tiny-protocol.toml",
    ]


def test_sweep_out_under_a_file_exits_2_with_one_line(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("")
    done = subprocess.run(
        [sys.executable, "-m", "arsim.cli", "sweep", str(ROOT / "sweeps" / "oscillation.toml")]
        + ["--out", str(afile / "sweep"), "--quiet"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "afile" in done.stderr


@pytest.mark.parametrize("failure", [errno.ENOSPC, errno.EACCES])
def test_a_failing_write_exits_2_and_leaves_nothing(tmp_path, monkeypatch, capsys, failure):
    model, protocol = tiny(tmp_path)

    def failing(path, **arrays):
        raise OSError(failure, os.strerror(failure), str(path))

    monkeypatch.setattr(arsim.run, "save_npz", failing)
    job = RandomRun(model=load_model(model), protocol=load_protocol(protocol), out=tmp_path / "r")
    assert execute(job, progress=False).report() == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and os.strerror(failure) in err and "initial.npz" in err
    assert not (tmp_path / "r").exists() and not list(tmp_path.glob(".r.partial-*"))


def test_the_loser_of_a_race_for_the_same_out_says_where_its_results_are(
    tmp_path, monkeypatch, capsys
):
    model, protocol = tiny(tmp_path)
    out = tmp_path / "r"
    simulate = arsim.run.simulate

    def racing(*args, **kwargs):  # the other run finishes first
        out.mkdir()
        (out / "status.json").write_text("{}")
        return simulate(*args, **kwargs)

    monkeypatch.setattr(arsim.run, "simulate", racing)
    job = RandomRun(model=load_model(model), protocol=load_protocol(protocol), out=out, samples=8)
    assert execute(job, progress=False).report() == 2
    err = capsys.readouterr().err
    (partial,) = tmp_path.glob(".r.partial-*")
    assert err.count("\n") == 1 and f"the run stays in {partial}" in err
    assert json.loads((partial / "status.json").read_text())["status"] == "completed"
    assert (partial / "weights" / "final.npz").is_file()


# --------------------------------------------------------------------------------------------
# Ctrl-C on a sweep
# --------------------------------------------------------------------------------------------
def _sweep_command(tmp_path: Path) -> list[str]:
    """``arsim sweep`` of 4 tiny points (40 samples each) on one local worker."""
    model, protocol = tiny(tmp_path)
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(
        f'model = "{model.name}"\nprotocol = "{protocol.name}"\nseeds = [0]\n[grid]\n'
        '"protocol.learning.rate" = [0.001, 0.002, 0.003, 0.004]\n[run]\nsamples = 40\n'
    )
    out = tmp_path / "out"
    return [sys.executable, "-m", "arsim.cli", "sweep", str(sweep), "--out", str(out)] + [
        "--workers",
        "1",
        "--quiet",
    ]


def _point_processes(out: Path) -> list:
    """Point processes of the sweep in ``out`` still alive."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if any(str(out) in part for part in process.info["cmdline"] or []):
            found.append(process)
    return found


def test_ctrl_c_stops_a_sweep_with_one_line_and_a_rerun_finishes_it(tmp_path):
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) once a point is
    done: exit 130, one line with the points finished and left, no traceback, no point process
    left running; the same command again runs only the points left."""
    command = _sweep_command(tmp_path)
    out = tmp_path / "out"
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        done = lambda: any((out / "points").glob("*/status.json"))  # noqa: E731
        assert _wait_for(done, process), "no point finished before the sweep ended"
        os.killpg(process.pid, signal.SIGINT)
        stdout, stderr = process.communicate(timeout=600)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130, stderr
    assert stderr.count("\n") == 1 and "Traceback" not in stderr and stdout == "", stderr
    words = stderr.split("sweep interrupted: ")[1].split()
    finished, left = int(words[0]), int(words[3])
    assert words[1:3] == ["points", "finished,"] and words[4] == "left", stderr
    assert finished >= 1 and left >= 1 and finished + left == 4, stderr
    assert f"in {out}" in stderr
    kept = sorted(path.parent for path in (out / "points").glob("*/status.json"))
    assert len(kept) == finished
    stamps = [(folder / "status.json").stat().st_mtime_ns for folder in kept]
    deadline = time.monotonic() + 60
    while _point_processes(out) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _point_processes(out), "a point process outlived the sweep"
    again = subprocess.run(
        command, cwd=ROOT, env=_environment(), capture_output=True, text=True, timeout=900
    )
    assert again.returncode == 0, again.stderr
    assert f"4 points: 4 completed, 0 diverged, 0 failed; {left} run, {finished}" in again.stdout
    results = pd.read_csv(out / "results.csv")
    assert list(results["status"]) == ["completed"] * 4
    assert stamps == [(folder / "status.json").stat().st_mtime_ns for folder in kept]


# --------------------------------------------------------------------------------------------
# Resumption: the recorded target and BLAS threads; an I/O failure keeps the training's folder
# --------------------------------------------------------------------------------------------
def test_resume_reuses_the_recorded_target_and_blas_threads(tmp_path, monkeypatch):
    """A training started with target numpy and resumed with 'auto' (which compiles here:
    the threshold is patched to 1 presentation) runs numpy again and ends bit-identical to an
    uninterrupted numpy run; it uses the recorded BLAS threads, not the process's."""
    fashion_mnist_or_skip()
    from arsim.datasets import load_dataset  # noqa: PLC0415 (after the skip)
    from arsim.modes import resolve_codegen_target  # noqa: PLC0415 (patched threshold below)
    from arsim.train import train  # noqa: PLC0415 (after the skip)

    monkeypatch.setattr("arsim.modes.COMPILE_PAYS_OFF", 1)
    if resolve_codegen_target("auto", 256) != "cython":
        pytest.skip("Cython cannot compile here: 'auto' is numpy anyway")
    model, protocol = load_model(PAPER_MODEL), load_protocol(PAPER_PROTOCOL)
    data = load_dataset("fashion-mnist", train_limit=128, test_limit=500)
    common = dict(train_samples=128, metrics_every=1, baseline=False, progress=False)
    recorded = stops.blas_threads()
    whole, _ = train(model, protocol, data, tmp_path / "whole", 2, target="numpy", **common)
    part, _ = train(model, protocol, data, tmp_path / "part", 1, target="numpy", **common)
    used = []
    limited = stops.blas_threads_limited
    monkeypatch.setattr(stops, "blas_threads", lambda: recorded + 1)  # another process
    monkeypatch.setattr(stops, "blas_threads_limited", lambda n: used.append(n) or limited(n))
    brian2.prefs.codegen.target = "cython"  # what a fresh process could have
    resumed, status = train(model, protocol, data, part, 2, resume=True, **common)
    assert status["status"] == "completed" and resumed == part
    assert brian2.prefs.codegen.target == "numpy" and used == [recorded]
    config = json.loads((part / "config.json").read_text())
    assert config["options"]["codegen_target"] == "numpy"
    assert config["resumed"][-1]["codegen_target"] == "numpy"
    assert config["resumed"][-1]["blas_threads"] == recorded
    a, b = np.load(whole / "weights" / "final.npz"), np.load(part / "weights" / "final.npz")
    for key in a.files:
        np.testing.assert_array_equal(a[key], b[key])
    assert (whole / "metrics.csv").read_text() == (part / "metrics.csv").read_text()


def test_an_io_failure_in_a_training_says_where_its_folder_stayed(tmp_path, monkeypatch, capsys):
    """A full disk at the first checkpoint: exit 2, one line naming the file, the reason, the
    temporary folder kept and how to resume; --resume then finishes the training."""
    fashion_mnist_or_skip()
    import arsim.train  # noqa: PLC0415 (after the skip)
    from arsim.jobs import Training  # noqa: PLC0415 (after the skip)

    save = arsim.train.save_npz

    def full_disk(path, **arrays):
        if path.parent.name == "checkpoints":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        save(path, **arrays)

    monkeypatch.setattr(arsim.train, "save_npz", full_disk)
    out = tmp_path / "t"
    model, protocol = load_model(PAPER_MODEL), load_protocol(PAPER_PROTOCOL)
    options = dict(data="fashion-mnist", train_samples=64, epochs=1, metrics_every=1)
    job = Training(model=model, protocol=protocol, out=out, baseline="none", **options)
    assert execute(job, progress=False).report() == 2
    err = capsys.readouterr().err
    (partial,) = tmp_path.glob(".t.partial-*")
    assert err.count("\n") == 1 and err.startswith("arsim: error: ")
    assert os.strerror(errno.ENOSPC) in err and str(partial / "checkpoints" / "epoch-") in err
    assert f"the unfinished run stays in {partial} (--resume {out} continues it" in err
    assert not out.exists() and (partial / "config.json").is_file()
    monkeypatch.setattr(arsim.train, "save_npz", save)
    resume = Training(model=model, protocol=protocol, resume=out, **options)
    assert execute(resume, progress=False).report() == 0
    assert (out / "weights" / "final.npz").is_file() and not partial.exists()


def test_a_random_run_stopped_before_its_first_minibatch_builds_no_network(tmp_path, monkeypatch):
    """A stop requested before the run starts: no network is built (building one would
    fail here); the folder keeps the initial weights as the weights at the stop, no row."""
    model, protocol = tiny(tmp_path)

    def no_network(*args, **kwargs):
        raise AssertionError("a network was built")

    monkeypatch.setattr(arsim.run, "build_network", no_network)
    out = tmp_path / "run"
    with stops.StopRequests() as requests:
        requests.signal = signal.SIGTERM  # as if SIGTERM came while the folder was prepared
        folder, result = run_to_folder(
            load_model(model), load_protocol(protocol), out, 40, seed=0, progress=False
        )
    assert result.interrupted == signal.SIGTERM and result.batches_done == 0
    status = json.loads((folder / "status.json").read_text())
    assert status["status"] == "interrupted" and status["samples_done"] == 0
    assert status["signal"] == "SIGTERM"
    initial, at_stop = (
        np.load(folder / "weights/initial.npz"),
        np.load(folder / "weights/at-stop.npz"),
    )
    for key in initial.files:
        np.testing.assert_array_equal(initial[key], at_stop[key])
    assert _rows(folder / "metrics.csv") == 0
    assert len(arsim.traces.load(folder)) == 0

"""Jobs: one random-data run or one training, with its exit status and one-line report.

``arsim run`` and every point of a sweep do the same thing: build a job from resolved options
(:class:`RandomRun` or :class:`Training`), :func:`execute` it, and report its
:class:`Outcome`. Every error of bad input (a file, a key, a folder, a dataset, a mode that
cannot run the protocol) becomes exit status :data:`EXIT_BAD_INPUT` with one line naming
what is wrong; a run that diverged keeps its run folder and exits with :data:`EXIT_DIVERGED`.

Exit status of the ``arsim`` command and of a sweep point's process:

====  ======================================================================================
0     done (:data:`EXIT_COMPLETED`)
1     ``arsim sweep``: some point did not complete (:data:`EXIT_SOME_FAILED`)
2     bad input; nothing or an unfinished folder is written (:data:`EXIT_BAD_INPUT`)
3     the simulation diverged; the run folder keeps what was recorded (:data:`EXIT_DIVERGED`)
4     a sweep point's process whose launching worker died (:data:`EXIT_ORPHANED`)
130   stopped by SIGINT (Ctrl-C); the run folder keeps what was computed (143: SIGTERM)
====  ======================================================================================

An I/O failure around the run folder (a file in the way, no permission, a full disk) is bad
input too: one line naming the path and the reason, exit status 2.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from arsim import stops
from arsim.datasets import DatasetError, load_dataset
from arsim.modes import ExecutionError
from arsim.run import RunResult, run_to_folder
from arsim.runfolder import RunFolderError, default_run_folder, final_name
from arsim.spec import ModelSpec, ProtocolSpec, SpecError
from arsim.train import TrainError, TrainingOptions, _find_resume_folder, train

EXIT_COMPLETED = 0
EXIT_SOME_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3
EXIT_ORPHANED = 4
EXIT_INTERRUPTED = 130
"""Exit status after SIGINT (128 + 2); after SIGTERM a run exits with 143."""

BASELINES = ("backprop", "none")
"""Baselines a training runs beside AR: backprop from the same weights, or none."""
BAD_INPUT_ERRORS = (SpecError, DatasetError, RunFolderError, ExecutionError, TrainError)
"""Errors that mean bad input; their message is one line naming the file, key or folder."""


@dataclass(frozen=True, kw_only=True)
class Job:
    """What every job names (all fields are keyword-only).

    Attributes
    ----------
    model, protocol : ModelSpec, ProtocolSpec
        The network and the protocol.
    out : Path or None
        Run folder (None: ``runs/<model>__<protocol>[__<data>]__seed<S>``).
    seed : int or None
        Seed of weights and data (None: the model's).
    target, mode, device : str
        Brian2 code generation target, execution mode and Brian2 device.
    """

    model: ModelSpec
    protocol: ProtocolSpec
    out: Path | None = None
    seed: int | None = None
    target: str = "auto"
    mode: str = "dense"
    device: str = "runtime"


@dataclass(frozen=True, kw_only=True)
class RandomRun(Job):
    """A run on random data (``arsim run MODEL PROTOCOL``).

    Attributes
    ----------
    samples : int
        Samples to present (besides the fields of :class:`Job`).
    """

    samples: int = 64


@dataclass(frozen=True, kw_only=True)
class Training(Job):
    """A training on a dataset beside a baseline (``arsim run ... --data NAME``), or its resumption.

    Besides the fields of :class:`Job` (``out`` is ignored and ``seed`` is the run's own when
    resuming; a training runs the dense mode on the runtime device only):

    Attributes
    ----------
    data : str or None
        Dataset name; None only when resuming (then the run's own).
    data_dir : Path or str or None
        Folder of the dataset files (None: the run's own when resuming, else the search path).
    epochs : int or None
        Total epochs (None: the run's own when resuming, else 1).
    train_samples : int or None
        Use only the first N training samples (None: the run's own when resuming, else all).
    metrics_every : int
        A metrics row every this many minibatches.
    compare_every : int
        Compare with backprop on every this many minibatches (and each row's last).
    eval_samples : int
        Training and test samples of the accuracies of ``batch`` rows (the first of each set).
    baseline : str
        One of :data:`BASELINES`.
    resume : Path or None
        Continue the run in this folder (or its partial folder) from its last checkpoint.
    """

    data: str | None = None
    data_dir: Path | str | None = None
    epochs: int | None = None
    train_samples: int | None = None
    metrics_every: int = 50
    compare_every: int = TrainingOptions.compare_every
    eval_samples: int = TrainingOptions.eval_samples
    baseline: str = "backprop"
    resume: Path | None = None


@dataclass(frozen=True)
class Outcome:
    """What a job ended with.

    Attributes
    ----------
    status : int
        Exit status (:data:`EXIT_COMPLETED`, :data:`EXIT_BAD_INPUT` or :data:`EXIT_DIVERGED`).
    message : str
        One line: ``arsim: wrote FOLDER (…)`` when done, else ``arsim: error: …``.
    folder : Path or None
        The run folder written (None when the input was bad).
    """

    status: int
    message: str
    folder: Path | None = None

    def report(self) -> int:
        """Print the message (stdout when done, else stderr); return the exit status."""
        print(self.message, file=sys.stdout if self.status == EXIT_COMPLETED else sys.stderr)
        return self.status


def bad_input(error: object) -> Outcome:
    """The outcome of bad input: exit status 2 and ``arsim: error: <error>``."""
    return Outcome(EXIT_BAD_INPUT, f"arsim: error: {error}")


def _diverged(message: str, folder: Path) -> Outcome:
    return Outcome(EXIT_DIVERGED, f"arsim: error: {message}; run folder {folder}", folder)


def _interrupted(signal: int, folder: Path, done: str, then: str) -> Outcome:
    """A run stopped by ``signal`` at a minibatch boundary: exit status 128 + the signal."""
    return Outcome(
        stops.EXIT_STATUS[signal],
        f"arsim: interrupted by {stops.signal_name(signal)} {done}; wrote {folder}; {then}",
        folder,
    )


def io_failure(error: OSError) -> Outcome:
    """The outcome of an I/O failure: exit status 2 and one line naming the path.

    A training's error names the unfinished run folder it leaves (``kept_folder``): the line
    says where it stayed and how to continue it.
    """
    where = error.filename if error.filename is not None else "run folder"
    reason = error.strerror or str(error)
    kept = getattr(error, "kept_folder", None)
    if kept is None:
        return bad_input(f"{where}: {reason}")
    return Outcome(
        EXIT_BAD_INPUT,
        f"arsim: error: {where}: {reason}; the unfinished run stays in {kept} "
        f"(--resume {final_name(kept)} continues it from its last checkpoint)",
        kept,
    )


def execute(job: Job, progress: bool = True) -> Outcome:
    """Run ``job`` and map every error of bad input to its exit status and one-line message.

    Parameters
    ----------
    job : RandomRun or Training
        What to run.
    progress : bool
        Show a progress bar.

    Returns
    -------
    Outcome
        Exit status, one-line message and run folder.

    SIGINT and SIGTERM stop the job at the next minibatch boundary (:mod:`arsim.stops`); a
    second SIGINT stops it at once.
    """
    try:
        with stops.StopRequests() as requests:
            try:
                if isinstance(job, Training):
                    return _train(job, progress)
                return _run_random(job, progress)
            except stops.StoppedAtOnce as stopped:
                return _stopped_at_once(stopped, requests.signal or 2)
    except BAD_INPUT_ERRORS as error:
        return bad_input(error)
    except OSError as error:
        return io_failure(error)


def _stopped_at_once(stopped: stops.StoppedAtOnce, signal: int) -> Outcome:
    if stopped.folder is None:
        kept = "nothing was kept"
    else:
        kept = f"the unfinished folder {stopped.folder} is kept (--resume continues it)"
    return Outcome(
        stops.EXIT_STATUS.get(signal, 130),
        f"arsim: stopped at once by a second SIGINT in the middle of a minibatch; {kept}",
        stopped.folder,
    )


def _run_random(job: RandomRun, progress: bool) -> Outcome:
    seed = job.model.seed if job.seed is None else job.seed
    out = job.out or default_run_folder(job.model, job.protocol, seed)
    folder, result = run_to_folder(
        job.model,
        job.protocol,
        out,
        job.samples,
        seed,
        job.target,
        progress=progress,
        mode=job.mode,
        device=job.device,
    )
    if result.diverged:
        return _diverged(result.diverged, folder)
    if result.interrupted is not None:
        return _random_interrupted(result, folder)
    last = result.metrics.iloc[-1]
    return Outcome(
        EXIT_COMPLETED,
        f"arsim: wrote {folder} ({result.trace_rows} trace rows; last batch loss "
        f"{last['loss']:.4g}, angle to backprop {last['angle_deg']:.3g} deg)",
        folder,
    )


def _random_interrupted(result: RunResult, folder: Path) -> Outcome:
    done = f"after {result.batches_done} minibatches ({result.samples_done} samples)"
    return _interrupted(
        result.interrupted,
        folder,
        done,
        "weights/at-stop.npz holds the weights; a run on random data does not resume "
        "(run it again)",
    )


def _resumed(job: Training) -> Training:
    """``job`` with what it leaves open read from the configuration of the run it resumes."""
    folder = _find_resume_folder(job.resume)
    config = json.loads((folder / "config.json").read_text())
    if not isinstance(config.get("data"), dict) or "epochs" not in config:
        raise TrainError(
            f"{folder}: a run on random data, not a training: it has no checkpoints to resume "
            "from (run it again; --resume continues a training on a dataset)"
        )
    return replace(
        job,
        data=job.data or config["data"]["name"],
        out=job.resume,
        data_dir=job.data_dir or config["data"]["source"],
        epochs=job.epochs or config["epochs"],
        train_samples=job.train_samples or config["data"]["train_samples"],
        seed=config["seed"],
    )


def _train(job: Training, progress: bool) -> Outcome:
    if (job.mode, job.device) != ("dense", "runtime"):
        return bad_input(
            f"--mode {job.mode} --device {job.device}: training on a dataset runs in the "
            "dense mode (drop --mode/--device)"
        )
    if job.resume is None:
        return _train_resolved(job, progress)
    try:  # the run folder to resume and its records may be missing or damaged
        return _train_resolved(_resumed(job), progress)
    except OSError as error:
        if getattr(error, "kept_folder", None) is not None:
            return io_failure(error)  # a failure while training, not of the records
        return bad_input(f"cannot resume: {error}")
    except (json.JSONDecodeError, KeyError) as error:
        return bad_input(f"cannot resume: {error}")


def _train_resolved(job: Training, progress: bool) -> Outcome:
    seed = job.model.seed if job.seed is None else job.seed
    out = job.out or default_run_folder(job.model, job.protocol, seed, data=job.data)
    dataset = load_dataset(job.data, job.data_dir, train_limit=job.train_samples)
    folder, status = train(
        job.model,
        job.protocol,
        dataset,
        out,
        job.epochs or 1,
        seed,
        train_samples=job.train_samples,
        metrics_every=job.metrics_every,
        compare_every=job.compare_every,
        eval_samples=job.eval_samples,
        baseline=job.baseline == "backprop",
        resume=job.resume is not None,
        progress=progress,
        target=job.target,
    )
    if status["status"] == "diverged":
        return _diverged(status["message"], folder)
    if status["status"] == "interrupted":
        done = (
            f"in epoch {status['epochs_done'] + 1} after {status['batches']} minibatches "
            f"({status['epochs_done']} epochs checkpointed)"
        )
        resume = f"continue with: arsim run {job.model.source} {job.protocol.source} --resume "
        resume += str(folder)
        return _interrupted(stops.signal_number(status["signal"]), folder, done, resume)
    accuracy = {key: status.get(key) for key in ("ar_test_acc", "bp_test_acc")}
    text = ", ".join(
        f"{who} {value:.4f}"
        for who, value in zip(("AR", "backprop"), accuracy.values(), strict=True)
        if value is not None
    )
    angle = status.get("angle_deg")
    if angle is not None and angle == angle:  # NaN: no minibatch was compared
        text += f"; angle to backprop {angle:.3g} deg"
    return Outcome(
        EXIT_COMPLETED,
        f"arsim: wrote {folder} ({status['epochs_done']} epochs; test accuracy {text})",
        folder,
    )

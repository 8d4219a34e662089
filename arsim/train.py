"""Training on an image dataset (Fashion-MNIST, MNIST): AR in Brian2 beside a backprop baseline.

``train`` presents the training set in epochs of seeded shuffled minibatches to the Brian2
network (the ``dense`` execution mode) and, from the same initial weights and on the same
batches, trains a backprop baseline (NumPy, :func:`arsim.oracle.backprop`, plain SGD with the
same step convention as AR), so the two can be compared step by step. Test accuracy is measured
by the feedforward sweep alone. The baseline and the evaluations compute in the protocol's
``precision``; the comparisons with backprop use the float64 oracle.

The run folder::

    config.json                 resolved model and protocol, data, seed, options, versions
    weights/initial.npz         W0, b0, psi0, … before training (``Params.to_arrays()``)
    weights/final.npz           AR's weights after the last epoch (a completed run only)
    weights/backprop-final.npz  the backprop baseline's weights after the last epoch
    weights/at-divergence.npz   a diverged run: AR's last finite weights (after the last
                                minibatch before the one that diverged); backprop-at-…
    weights/at-stop.npz         a run stopped by SIGINT or SIGTERM: AR's weights after the
                                last minibatch done; backprop-at-stop.npz the baseline's
    metrics.csv                 one row every ``metrics_every`` minibatches and one per epoch
    checkpoints/epoch-<k>.npz   after epoch k (1-based): ``ar_W0 …`` and ``bp_W0 …``
    checkpoints/epoch-<k>.json  position (epochs, batches, samples done), metrics rows, shuffle
    status.json                 running, completed, diverged (with the message) or
                                interrupted (with the signal); position reached

``metrics.csv`` columns (one row per point; AR and the baseline side by side):

=====================  ===================================================================
``kind``               ``batch`` (every N minibatches) or ``epoch`` (end of an epoch)
``epoch``              1-based epoch the row belongs to
``batch``              minibatches done in the run (global count); ``samples`` likewise
``ar_loss``            mean per-sample training loss of AR's minibatches since the last row
                       (each before its update); ``bp_loss`` the baseline's
``angle_deg``          mean over those minibatches compared with backprop (the first of the
                       epoch, every ``compare_every``-th and the row's last) of the angle
                       between AR's update (−ΔW, all matrices and biases flattened into one
                       vector) and the backprop gradient of the same weights and batch;
                       ``angle_deg_max``,
                       ``angle_deg_last``; ``angle_deg_W<l>`` per weight matrix (mean)
``relax_relerr_<layer>``  ``|x − ∂L/∂x̂| / |∂L/∂x̂|`` per hidden layer after the protocol's
                       relaxation (NumPy oracle, float64) on the first
                       ``RELAXATION_ERROR_SAMPLES`` samples of the row's last minibatch (the
                       epoch's last in ``epoch`` rows), from the weights before its update
``ar_train_acc``       accuracy (feedforward sweep) on the training set — the first
                       ``eval_samples`` of it in ``batch`` rows, all of it in ``epoch`` rows;
                       ``ar_test_acc`` on the test set, likewise (the first ``eval_samples``
                       test images in ``batch`` rows); ``ar_train_loss``/``ar_test_loss``
                       the mean loss there; ``bp_*`` the same for the baseline (empty
                       without a baseline)
=====================  ===================================================================

Shuffling: epoch ``e`` (0-based) presents ``default_rng([seed, 3, e]).permutation(n)``, so the
epoch index is all a resumed run needs. A fresh Brian2 network is built at the start of every
epoch from the current weights, in an uninterrupted run as in a resumed one, which is what
makes a resumed run end bit-identical to an uninterrupted one. The BLAS threads (they decide
how the matrix products split their sums) and the code generation target are recorded in
``config.json`` and a resumed run uses them again.

A run stopped by SIGINT or SIGTERM (:mod:`arsim.stops`) ends at a minibatch boundary, keeps
the metrics rows written so far, and resumes from its last epoch checkpoint.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.std import tqdm  # a text bar, as arsim.run explains

from arsim import oracle, stops
from arsim import threads as thread_policy
from arsim.activations import loss_value
from arsim.datasets import Dataset
from arsim.loop import ChunkLoop, Minibatch, presentation_slots
from arsim.memory import check_memory
from arsim.metrics import evaluate, relaxation_errors
from arsim.modes import build_network, resolve_codegen_target, session, set_codegen_target
from arsim.network import FLOAT_DTYPES, seed_noise
from arsim.params import Params, SeedStream, init_params, seeded_rng
from arsim.runfolder import (
    derived_timing,
    partial_folders,
    prepare_run_folder,
    publish,
    save_npz,
    versions,
    write_json,
)
from arsim.spec import ModelSpec, ProtocolSpec, check_compatible
from arsim.traces import epoch_recorder
from arsim.trainlog import MetricsTable, Window

LAST_EPOCH_KEYS = ("ar_test_acc", "bp_test_acc", "angle_deg")
"""What the last epoch row passes to the checkpoint and the final status: test accuracies
and the mean angle (degrees) between AR's update and backprop over the epoch."""


class TrainError(ValueError):
    """A training run that cannot start or resume (one-line message)."""


# --------------------------------------------------------------------------------------------
# Small pieces
# --------------------------------------------------------------------------------------------
RELAXATION_ERROR_SAMPLES = 16
"""Samples of a ``batch`` row's last minibatch on which the relaxation's error is measured (a
float64 relaxation of the oracle: on 16 samples a quarter of the cost of a whole minibatch)."""


def epoch_order(seed: int, epoch: int, n_samples: int) -> np.ndarray:
    """Presentation order of epoch ``epoch`` (0-based): a permutation of ``n_samples``."""
    return seeded_rng(seed, SeedStream.SHUFFLE, epoch).permutation(n_samples)


def backprop_step(
    model: ModelSpec, params: Params, inputs: np.ndarray, targets: np.ndarray, rate: float
) -> tuple[Params, np.ndarray]:
    """One SGD step of the baseline: ``W -= η ∂L/∂W`` (and biases); ψ is left alone.

    Computes in the float type of ``params`` and ``inputs``. Returns the new parameters and
    the loss of each sample before the step (from the same feedforward sweep).
    """
    grads = oracle.backprop(model, params, inputs, targets, input_layers=False)
    output = grads.forward.xhat[-1]
    loss = loss_value(model.loss, output, targets, model.loss_scale)
    weights = [w - rate * g for w, g in zip(params.W, grads.W, strict=True)]
    biases = [None if b is None else b - rate * g for b, g in zip(params.b, grads.b, strict=True)]
    feedback = [None if psi is None else psi.copy() for psi in params.psi]
    return Params(weights, biases, feedback), loss


def _params_from_arrays(model: ModelSpec, arrays, prefix: str = "") -> Params:
    weights, biases, feedbacks = [], [], []
    for layer, connection in enumerate(model.connections):
        weights.append(np.array(arrays[f"{prefix}W{layer}"]))
        key = f"{prefix}b{layer}"
        biases.append(np.array(arrays[key]) if connection.bias else None)
        feedbacks.append(
            None if connection.feedback == "transpose" else np.array(arrays[f"{prefix}psi{layer}"])
        )
    return Params(weights, biases, feedbacks)


def _comparable(spec_dict: dict) -> dict:
    data = json.loads(json.dumps(spec_dict))
    data.pop("source", None)
    return data


def _find_resume_folder(out: Path) -> Path:
    """``out`` itself when it holds a run, else the newest ``.<name>.partial-*`` beside it."""
    if (out / "config.json").is_file():
        return out
    partials = [p for p in partial_folders(out) if (p / "config.json").is_file()]
    if not partials:
        raise TrainError(f"{out}: no run to resume here (no config.json, no partial run folder)")
    return partials[-1]


def _latest_checkpoint(folder: Path) -> int:
    done = 0
    for path in (folder / "checkpoints").glob("epoch-*.json"):
        epoch = int(path.stem.split("-")[1])
        if (folder / "checkpoints" / f"epoch-{epoch}.npz").is_file():
            done = max(done, epoch)
    return done


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------
@dataclass
class TrainingOptions:
    """Choices a training run keeps from start to end (stored in ``config.json``).

    Attributes
    ----------
    seed : int
        Seed of the weights, ψ, the noise and the shuffles.
    metrics_every : int
        A ``batch`` row of ``metrics.csv`` every this many minibatches of an epoch.
    baseline : bool
        Train the backprop baseline beside AR.
    eval_samples : int
        Training and test samples (the first ones of each set) on which ``batch`` rows measure
        accuracy and loss; ``epoch`` rows measure them on both whole sets. 1,000 samples give
        an accuracy near 85 % within about ±1.1 pp (binomial standard error) at a fiftieth of
        the cost of the whole sets.
    compare_every : int
        Compare AR's update with backprop (the angles of ``metrics.csv``) on every this many
        minibatches of an epoch (the first, then every ``compare_every``-th) and on the last
        one of every ``batch`` row; the weights do not depend on it.
    blas_threads : int or None
        BLAS threads of the matrix products (None: as the process has them).
    """

    seed: int
    metrics_every: int = 50
    baseline: bool = True
    eval_samples: int = 1000
    compare_every: int = 10
    blas_threads: int | None = None

    def compared(self, index: int) -> bool:
        """Whether minibatch ``index`` (0-based, in its epoch) is compared with backprop."""
        return index % self.compare_every == 0 or (index + 1) % self.metrics_every == 0


class Training:
    """A training run's state and its stages.

    The stages: :meth:`start` or :meth:`resume`, then :meth:`run` (each :meth:`epoch` with
    its :meth:`evaluate` rows, then a :meth:`checkpoint`), then :meth:`finish`.

    Parameters
    ----------
    model, protocol : ModelSpec, ProtocolSpec
        The network and the protocol.
    dataset : Dataset
        Test images and labels, and the number of classes.
    images : ndarray, shape (n_train, n_in)
        The training images used.
    labels : ndarray of int, shape (n_train,)
        Their labels.

    Attributes
    ----------
    folder : Path
        The (temporary) run folder written into.
    options : TrainingOptions
        The run's choices.
    ar, bp : Params
        AR's weights and the baseline's (None without a baseline).
    epochs_done, batches, samples : int
        Position: epochs, minibatches and samples done.
    table : MetricsTable
        ``metrics.csv``.
    test_accuracy : dict
        ``ar_test_acc``, ``bp_test_acc`` and ``angle_deg`` of the last epoch row.
    """

    def __init__(
        self,
        model: ModelSpec,
        protocol: ProtocolSpec,
        dataset: Dataset,
        images: np.ndarray,
        labels: np.ndarray,
    ):
        self.model, self.protocol, self.dataset = model, protocol, dataset
        self.images, self.labels = images, labels
        self.targets = dataset.one_hot(labels)
        self.folder = Path()
        self.options = TrainingOptions(seed=model.seed)
        self.ar: Params | None = None
        self.bp: Params | None = None
        self.dtype = FLOAT_DTYPES[protocol.precision]
        """Float type of the baseline and of the accuracy and loss evaluations."""
        self._cast_images: dict[str, np.ndarray] = {}
        self.epochs_done = self.batches = self.samples = 0
        self.test_accuracy: dict = {}
        self.stopped_by: int | None = None
        self.table = MetricsTable(self.folder / "metrics.csv", model, protocol)

    def _use_folder(self, folder: Path) -> None:
        self.folder = folder
        self.table = MetricsTable(folder / "metrics.csv", self.model, self.protocol)

    # -- start or resume ----------------------------------------------------------------------
    def start(self, out: Path, epochs: int, data: dict, options: TrainingOptions, target: str):
        """Create the run folder: configuration, initial weights, the metrics header."""
        model, protocol = self.model, self.protocol
        self.options = options
        self._use_folder(prepare_run_folder(out))
        (self.folder / "checkpoints").mkdir()
        config = {
            "model": model.to_dict(),
            "protocol": protocol.to_dict(),
            "derived": derived_timing(model, protocol),
            "seed": options.seed,
            "epochs": epochs,
            "data": data,
            "options": {
                "metrics_every": options.metrics_every,
                "baseline": options.baseline,
                "eval_samples": options.eval_samples,
                "compare_every": options.compare_every,
                "codegen_target": target,
                "blas_threads": options.blas_threads,
                "mode": "dense",
                "threads": thread_policy.describe(options.blas_threads),
            },
            "versions": versions(),
            "command": sys.argv,
        }
        write_json(self.folder / "config.json", config)
        self.ar = init_params(model, options.seed)
        self.bp = self.ar.astype(self.dtype) if options.baseline else None
        np.savez(self.folder / "weights" / "initial.npz", **self.ar.to_arrays())
        self.table.keep(0)

    def resume(self, out: Path, epochs: int, data: dict, target: str, threads: int | None):
        """Continue the run in ``out`` (or its partial folder) from its last checkpoint.

        ``config.json`` records the resumption: command, time, code generation ``target`` and
        BLAS ``threads`` used.

        Raises
        ------
        TrainError
            If there is no run there, or it was made with another model, protocol or data.
        """
        self._use_folder(_find_resume_folder(out))
        config = json.loads((self.folder / "config.json").read_text())
        self._check_same_run(config, data)
        options = config["options"]
        self.options = TrainingOptions(
            config["seed"],
            options["metrics_every"],
            options["baseline"],
            options["eval_samples"],
            blas_threads=options.get("blas_threads"),
        )
        self.options.compare_every = options.get("compare_every", 1)  # 1: runs made before it
        for name in ("at-stop", "at-divergence"):  # the records of the stop resumed from
            for prefix in ("", "backprop-"):
                (self.folder / "weights" / f"{prefix}{name}.npz").unlink(missing_ok=True)
        config["epochs"] = epochs
        resumption = {"command": sys.argv, "time": time.time(), "codegen_target": target}
        config.setdefault("resumed", []).append(resumption | {"blas_threads": threads})
        write_json(self.folder / "config.json", config)
        done = _latest_checkpoint(self.folder)
        kept_rows = 0
        if done:
            state = json.loads((self.folder / "checkpoints" / f"epoch-{done}.json").read_text())
            arrays = np.load(self.folder / "checkpoints" / f"epoch-{done}.npz")
            self.ar = _params_from_arrays(self.model, arrays, "ar_")
            self.bp = (
                _params_from_arrays(self.model, arrays, "bp_").astype(self.dtype)
                if options["baseline"]
                else None
            )
            kept_rows = state["metrics_rows"]
            self.batches, self.samples = state["batches"], state["samples"]
            self.test_accuracy = {key: state.get(key) for key in LAST_EPOCH_KEYS}
        else:
            arrays = np.load(self.folder / "weights" / "initial.npz")
            self.ar = _params_from_arrays(self.model, arrays)
            self.bp = self.ar.astype(self.dtype) if options["baseline"] else None
        self.table.keep(kept_rows)
        self.epochs_done = done

    def _check_same_run(self, config: dict, data: dict) -> None:
        folder, model, protocol = self.folder, self.model, self.protocol
        if _comparable(config["model"]) != _comparable(model.to_dict()):
            raise TrainError(f"{folder}: the run was made with another model than {model.source}")
        if _comparable(config["protocol"]) != _comparable(protocol.to_dict()):
            raise TrainError(
                f"{folder}: the run was made with another protocol than {protocol.source}"
            )
        used = {key: config["data"][key] for key in ("name", "train_samples")}
        if used != {key: data[key] for key in ("name", "train_samples")}:
            raise TrainError(
                f"{folder}: the run used {used['train_samples']} samples of {used['name']}, "
                f"not {data['train_samples']} of {data['name']}"
            )

    # -- epochs --------------------------------------------------------------------------------
    def run(self, epochs: int, progress: bool = True) -> str | None:
        """Train up to ``epochs`` epochs, a checkpoint after each; the divergence message."""
        write_json(
            self.folder / "status.json", {"status": "running", "epochs_done": self.epochs_done}
        )
        per_epoch = presentation_slots(self.protocol, len(self.images))
        bar = tqdm(
            total=epochs * per_epoch,
            initial=self.epochs_done * per_epoch,
            unit="sample",
            disable=not progress,
            desc=f"{self.model.name}/{self.protocol.name}",
        )
        try:
            with self.table:
                for epoch in range(self.epochs_done, epochs):
                    message = self.epoch(epoch, bar)
                    if message is not None or self.stopped_by is not None:
                        return message
                    self.checkpoint()
        finally:
            bar.close()
        return None

    def epoch(self, epoch: int, bar=None) -> str | None:
        """Train epoch ``epoch`` (0-based) and write its row; the divergence message, if any.

        A fresh network starts from the current weights and a noise stream of its own, so a
        resumed run repeats the epoch exactly.
        """
        model, protocol, seed = self.model, self.protocol, self.options.seed
        self.stopped_by = stops.requested()
        if self.stopped_by is not None:  # stopped between epochs: no network is built
            return None
        order = epoch_order(seed, epoch, len(self.images))
        seed_noise(seed, epoch)
        recorder = epoch_recorder(self.folder / "traces", protocol, epoch, order)
        record = recorder is not None
        with (
            session(protocol, "dense"),  # Brian2's preferences for the epoch's network
            build_network(model, protocol, self.ar, "dense", record=record) as network,
        ):
            network.seed_key = (seed, epoch)
            loop = ChunkLoop(
                network, model, protocol, self.images, self.targets, self.ar, order=order, bar=bar,
                compare=self.options.compared, recorder=recorder,
            )  # fmt: skip
            n_layers = len(model.connections)
            window, epoch_window = Window(n_layers), Window(n_layers)
            batch = None
            for batch in loop:
                bp_loss = self._baseline_step(batch)
                window.add(batch.metrics, bp_loss)
                epoch_window.add(batch.metrics, bp_loss)
                self.ar = batch.after
                self.batches += 1
                self.samples += batch.last - batch.first
                if (batch.index + 1) % self.options.metrics_every == 0:
                    row = self.evaluate("batch", epoch, window, full=False)
                    row |= self._relaxation_errors(batch)
                    self.table.write(row)
                    window = Window(n_layers)
        if loop.divergence is not None:
            return loop.divergence.message(epoch + 1)
        if loop.interrupted is not None:
            self.stopped_by = loop.interrupted
            return None
        row = self.evaluate("epoch", epoch, epoch_window, full=True)
        if batch is not None:  # the epoch's last minibatch, as a batch row measures it
            row |= self._relaxation_errors(batch)
        self.table.write(row)
        self.test_accuracy = {key: row.get(key) for key in LAST_EPOCH_KEYS}
        self.epochs_done = epoch + 1
        return None

    def _relaxation_errors(self, batch: Minibatch) -> dict:
        """``relax_relerr_<layer>`` of ``batch`` (its first :data:`RELAXATION_ERROR_SAMPLES`)."""
        first = slice(RELAXATION_ERROR_SAMPLES)
        return relaxation_errors(
            self.model, self.protocol, batch.before, batch.inputs[first], batch.targets[first]
        )

    def _baseline_step(self, batch: Minibatch) -> float:
        """The baseline's loss on the minibatch, then its SGD step (NaN without a baseline)."""
        if self.bp is None:
            return math.nan
        x, y = batch.inputs.astype(self.dtype), batch.targets.astype(self.dtype)
        rate = self.dtype(batch.rate)
        with np.errstate(all="ignore"):
            self.bp, loss = backprop_step(self.model, self.bp, x, y, rate)
        return float(loss.mean())

    # -- evaluate ------------------------------------------------------------------------------
    def evaluate(self, kind: str, epoch: int, window: Window, full: bool) -> dict:
        """A metrics row: position, the window's summary, accuracies and losses.

        ``full``: accuracy and loss on the whole training and test sets, else on the first
        ``eval_samples`` of each.
        """
        row = {"kind": kind, "epoch": epoch + 1, "batch": self.batches, "samples": self.samples}
        row |= window.summary()
        if full:
            images, labels = self.images, self.labels  # cast block by block
        else:
            images = self._cast("train", self.images[: self.options.eval_samples])
            labels = self.labels[: self.options.eval_samples]
        test_images = self._cast("test", self.dataset.test_images)
        test_labels, n_classes = self.dataset.test_labels, self.dataset.n_classes
        if not full:
            test_images = test_images[: self.options.eval_samples]
            test_labels = test_labels[: self.options.eval_samples]
        for who, params in (("ar", self.ar), ("bp", self.bp)):
            if params is None:
                continue
            row[f"{who}_train_acc"], row[f"{who}_train_loss"] = evaluate(
                self.model, params, images, labels, n_classes, dtype=self.dtype
            )
            row[f"{who}_test_acc"], row[f"{who}_test_loss"] = evaluate(
                self.model, params, test_images, test_labels, n_classes, dtype=self.dtype
            )
        return row

    def _cast(self, name: str, images: np.ndarray) -> np.ndarray:
        """``images`` as :attr:`dtype`, cast once per run (``name``: which set)."""
        cached = self._cast_images.get(name)
        if cached is None or len(cached) != len(images):
            cached = self._cast_images[name] = images.astype(self.dtype, copy=False)
        return cached

    # -- checkpoint ----------------------------------------------------------------------------
    def checkpoint(self) -> None:
        """Save the weights and the position after the epochs done."""
        done, seed = self.epochs_done, self.options.seed
        arrays = {f"ar_{k}": v for k, v in self.ar.to_arrays().items()}
        if self.bp is not None:
            arrays |= {f"bp_{k}": v for k, v in self.bp.to_arrays().items()}
        save_npz(self.folder / "checkpoints" / f"epoch-{done}.npz", **arrays)
        position = {
            "epochs_done": done,
            "batches": self.batches,
            "samples": self.samples,
            "metrics_rows": self.table.rows,
            "seed": seed,
            "next_epoch_shuffle": [seed, int(SeedStream.SHUFFLE), done],
        }
        write_json(
            self.folder / "checkpoints" / f"epoch-{done}.json", position | self.test_accuracy
        )
        write_json(self.folder / "status.json", {"status": "running", "epochs_done": done})

    # -- finish --------------------------------------------------------------------------------
    def finish(self, message: str | None) -> tuple[Path, dict]:
        """Write the final weights and status and give the folder its final name.

        Raises
        ------
        RunFolderError
            If a folder with the final name holds something (the run stays where it is).
        """
        state = "diverged" if message else "completed"
        if not message and self.stopped_by is not None:
            state = "interrupted"
        name = {"completed": "final", "diverged": "at-divergence", "interrupted": "at-stop"}[state]
        save_npz(self.folder / "weights" / f"{name}.npz", **self.ar.to_arrays())
        if self.bp is not None:
            save_npz(self.folder / "weights" / f"backprop-{name}.npz", **self.bp.to_arrays())
        status = {
            "status": state,
            "message": message,
            "epochs_done": _latest_checkpoint(self.folder),
            "batches": self.batches,
            "samples": self.samples,
        }
        if state == "completed":
            status |= {key: self.test_accuracy.get(key) for key in LAST_EPOCH_KEYS}
        if state == "interrupted":
            status["signal"] = stops.signal_name(self.stopped_by)
        write_json(self.folder / "status.json", status)
        return publish(self.folder), status


def _training_set(dataset: Dataset, model: ModelSpec, train_samples: int | None):
    """The training images and labels used (the first ``train_samples``), checked."""
    if model.input_size != dataset.train_images.shape[1] or model.output.size != dataset.n_classes:
        raise TrainError(
            f"{model.source}: the model maps {model.input_size} inputs to {model.output.size} "
            f"outputs but {dataset.name} has {dataset.train_images.shape[1]} pixels and "
            f"{dataset.n_classes} classes"
        )
    images, labels = dataset.train_images, dataset.train_labels
    if train_samples is not None:
        images, labels = images[:train_samples], labels[:train_samples]
    if len(images) < 1:
        raise TrainError("no training samples")
    return images, labels


def train(
    model: ModelSpec,
    protocol: ProtocolSpec,
    dataset: Dataset,
    out: Path,
    epochs: int,
    seed: int | None = None,
    train_samples: int | None = None,
    metrics_every: int = 50,
    baseline: bool = True,
    resume: bool = False,
    progress: bool = True,
    eval_samples: int = TrainingOptions.eval_samples,
    target: str = "auto",
    compare_every: int = TrainingOptions.compare_every,
) -> tuple[Path, dict]:
    """Train AR (Brian2, dense mode) and the backprop baseline; write the run folder.

    Parameters
    ----------
    model, protocol : ModelSpec, ProtocolSpec
        The network and the protocol (batch size, learning rates, relaxation).
    dataset : Dataset
        Training and test images and labels (``arsim.datasets.load_dataset``).
    out : Path
        Run folder. Written under a temporary name and renamed when training ends.
    epochs : int
        Total number of epochs (a resumed run continues up to this number).
    seed : int, optional
        Seed of the weights, ψ and the shuffles (the model's seed by default).
    train_samples : int, optional
        Use only the first ``train_samples`` training samples.
    metrics_every : int
        A ``batch`` row of ``metrics.csv`` every this many minibatches of an epoch.
    baseline : bool
        Train the backprop baseline beside AR.
    resume : bool
        Continue the run in ``out`` (or its partial folder) from its last checkpoint; the
        model, protocol and data must be those of the run. Its seed and options then hold.
    progress : bool
        Show a progress bar over samples.
    eval_samples : int
        Training and test samples on which ``batch`` rows measure accuracy and loss
        (:class:`TrainingOptions`).
    target : {'auto', 'numpy', 'cython'}
        Brian2 code generation target; ``'auto'`` compiles (Cython) for long trainings
        (``arsim.modes.resolve_codegen_target`` over the epochs' sample presentations), and
        when resuming stands for the target the run recorded.
    compare_every : int
        Compare with backprop on every this many minibatches (:class:`TrainingOptions`).

    The run uses the thread policy's BLAS threads (:mod:`arsim.threads`) and records them; a
    resumed run uses the recorded ones again.

    An I/O failure (``OSError``, e.g. a full disk) while creating the run folder removes it;
    later, the folder stays with its checkpoints for ``--resume``, and the error raised carries
    it as ``kept_folder``.

    Returns
    -------
    (Path, dict)
        The run folder and the final status (``status``, ``message``, final accuracies).
    """
    check_compatible(model, protocol)
    if epochs < 1:
        raise TrainError(f"--epochs: expected a positive number of epochs, got {epochs}")
    if metrics_every < 1:
        raise TrainError(f"--metrics-every: expected a positive integer, got {metrics_every}")
    if compare_every < 1:
        raise TrainError(f"--compare-every: expected a positive integer, got {compare_every}")
    images, labels = _training_set(dataset, model, train_samples)
    data = {
        "name": dataset.name,
        "source": dataset.source,
        "train_samples": len(images),
        "test_samples": len(dataset.test_images),
        "shuffle": f"epoch e presents default_rng([seed, {SeedStream.SHUFFLE:d}, e])"
        ".permutation(n)",
    }
    check_memory(model, protocol, len(images))
    threads = thread_policy.resolve()
    if resume:  # the run's own target and BLAS threads: the same numbers as an uninterrupted run
        recorded = _recorded_options(Path(out))
        target = recorded.get("codegen_target", target) if target == "auto" else target
        threads = recorded.get("blas_threads") or threads
    target = resolve_codegen_target(target, len(images) * epochs)
    set_codegen_target(target)
    thread_policy.apply(threads)
    training = Training(model, protocol, dataset, images, labels)
    with stops.blas_threads_limited(threads):
        if resume:
            training.resume(Path(out), epochs, data, target, threads)
        else:
            seed = model.seed if seed is None else seed
            options = TrainingOptions(
                seed, metrics_every, baseline, eval_samples, compare_every, threads
            )
            try:
                training.start(Path(out), epochs, data, options, target)
            except OSError:  # nothing to resume from: no half-written folder is left
                if training.folder != Path():
                    shutil.rmtree(training.folder, ignore_errors=True)
                raise
        try:
            return training.finish(training.run(epochs, progress))
        except KeyboardInterrupt:
            raise stops.StoppedAtOnce(training.folder) from None
        except OSError as error:  # the folder keeps the checkpoints: --resume continues it
            error.kept_folder = training.folder
            raise


def _recorded_options(out: Path) -> dict:
    """The options recorded in ``config.json`` of the run to resume in ``out``."""
    config = json.loads((_find_resume_folder(out) / "config.json").read_text())
    return config.get("options", {})

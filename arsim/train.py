"""Training on an image dataset (Fashion-MNIST, MNIST): AR in Brian2 beside a backprop baseline.

``train`` presents the training set in epochs of seeded shuffled minibatches to the Brian2
network (the ``dense`` execution mode) and, from the same initial weights and on the same
batches, trains a backprop baseline (NumPy, :func:`arsim.oracle.backprop`, plain SGD with the
same step convention as AR), so the two can be compared step by step. Test accuracy is measured
by the feedforward sweep alone.

The run folder::

    config.json                 resolved model and protocol, data, seed, options, versions
    weights/initial.npz         W0, b0, psi0, … before training (``Params.to_arrays()``)
    weights/final.npz           AR's weights after the last epoch
    weights/backprop-final.npz  the backprop baseline's weights after the last epoch
    metrics.csv                 one row every ``metrics_every`` minibatches and one per epoch
    checkpoints/epoch-<k>.npz   after epoch k (1-based): ``ar_W0 …`` and ``bp_W0 …``
    checkpoints/epoch-<k>.json  position (epochs, batches, samples done), metrics rows, shuffle
    status.json                 running, completed or diverged (with the message)

``metrics.csv`` columns (one row per point; AR and the baseline side by side):

=====================  ===================================================================
``kind``               ``batch`` (every N minibatches) or ``epoch`` (end of an epoch)
``epoch``              1-based epoch the row belongs to
``batch``              minibatches done in the run (global count); ``samples`` likewise
``ar_loss``            mean per-sample training loss of AR's minibatches since the last row
                       (each before its update); ``bp_loss`` the baseline's
``angle_deg``          mean over those minibatches of the angle between AR's update
                       (−ΔW, all matrices and biases flattened into one vector) and the
                       backprop gradient of the same weights and batch; ``angle_deg_max``,
                       ``angle_deg_last``; ``angle_deg_W<l>`` per weight matrix (mean)
``relax_relerr_<layer>``  ``|x − ∂L/∂x̂| / |∂L/∂x̂|`` per hidden layer after the protocol's
                       relaxation (NumPy oracle) on the last minibatch, AR's weights
``ar_train_acc``       accuracy (feedforward sweep) on the training set — the first
                       ``eval_samples`` of it in ``batch`` rows, all of it in ``epoch`` rows;
                       ``ar_test_acc`` on the test set; ``ar_train_loss``/``ar_test_loss``
                       the mean loss there; ``bp_*`` the same for the baseline (empty
                       without a baseline)
=====================  ===================================================================

Shuffling: epoch ``e`` (0-based) presents ``default_rng([seed, 3, e]).permutation(n)``, so the
epoch index is all a resumed run needs. A fresh Brian2 network is built at the start of every
epoch from the current weights, in an uninterrupted run as in a resumed one, which is what
makes a resumed run end bit-identical to an uninterrupted one (given the same number of BLAS
threads, e.g. ``OPENBLAS_NUM_THREADS``: it decides how the matrix products split their sums).
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from arsim import oracle
from arsim.activations import loss_value
from arsim.datasets import Dataset
from arsim.metrics import relative_error
from arsim.oracle import Params
from arsim.spec import ModelSpec, ProtocolSpec, check_compatible

SHUFFLE_STREAM = 3
"""Third element of the shuffle seed ``[seed, 3, epoch]`` (0–2 are weights, ψ, random data)."""


class TrainError(ValueError):
    """A training run that cannot start or resume (one-line message)."""


# --------------------------------------------------------------------------------------------
# Small pieces
# --------------------------------------------------------------------------------------------
def epoch_order(seed: int, epoch: int, n_samples: int) -> np.ndarray:
    """Presentation order of epoch ``epoch`` (0-based): a permutation of ``n_samples``."""
    return np.random.default_rng([seed, SHUFFLE_STREAM, epoch]).permutation(n_samples)


def backprop_step(
    model: ModelSpec, params: Params, inputs: np.ndarray, targets: np.ndarray, rate: float
) -> Params:
    """One SGD step of the baseline: ``W -= η ∂L/∂W`` (and biases); ψ is left alone."""
    grads = oracle.backprop(model, params, inputs, targets)
    new = params.copy()
    for layer, gradient in enumerate(grads.W):
        new.W[layer] = params.W[layer] - rate * gradient
        if params.b[layer] is not None:
            new.b[layer] = params.b[layer] - rate * grads.b[layer]
    return new


def evaluate(
    model: ModelSpec,
    params: Params,
    images: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    block: int = 10000,
) -> tuple[float, float]:
    """Accuracy and mean loss of the feedforward sweep on ``images`` (vectorised in blocks)."""
    correct, total_loss = 0, 0.0
    with np.errstate(all="ignore"):
        for start in range(0, len(images), block):
            x, y = images[start : start + block], labels[start : start + block]
            output = oracle.forward(model, params, x).xhat[-1]
            targets = np.eye(n_classes)[y]
            total_loss += float(loss_value(model.loss, output, targets, model.loss_scale).sum())
            correct += int((output.argmax(axis=1) == y).sum())
    return correct / len(images), total_loss / len(images)


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


def _save_npz(path: Path, **arrays) -> None:
    temporary = path.with_name(path.name + ".tmp.npz")
    np.savez(temporary, **arrays)
    os.replace(temporary, path)


def _write_json(path: Path, data: dict) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data, indent=2))
    os.replace(temporary, path)


def _comparable(spec_dict: dict) -> dict:
    data = json.loads(json.dumps(spec_dict))
    data.pop("source", None)
    return data


def metric_columns(model: ModelSpec) -> list[str]:
    """Columns of ``metrics.csv`` in order."""
    hidden = [layer.name for layer in model.layers if model.relaxes(layer.name)]
    columns = ["kind", "epoch", "batch", "samples", "ar_loss", "bp_loss"]
    columns += ["angle_deg", "angle_deg_max", "angle_deg_last"]
    columns += [f"angle_deg_W{layer}" for layer in range(len(model.connections))]
    columns += [f"relax_relerr_{name}" for name in hidden]
    for who in ("ar", "bp"):
        columns += [f"{who}_train_acc", f"{who}_test_acc", f"{who}_train_loss", f"{who}_test_loss"]
    return columns


class _Window:
    """Per-batch numbers accumulated between two metric rows."""

    def __init__(self):
        self.ar_loss, self.bp_loss, self.angle, self.layer_angles = [], [], [], []

    def add(self, row: dict, bp_loss: float, n_layers: int) -> None:
        self.ar_loss.append(row["loss"])
        self.bp_loss.append(bp_loss)
        self.angle.append(row["angle_deg"])
        self.layer_angles.append([row[f"angle_deg_W{layer}"] for layer in range(n_layers)])

    def summary(self, n_layers: int) -> dict:
        if not self.angle:
            return {}
        layer_angles = np.array(self.layer_angles)
        row = {
            "ar_loss": float(np.mean(self.ar_loss)),
            "bp_loss": float(np.mean(self.bp_loss)),
            "angle_deg": float(np.mean(self.angle)),
            "angle_deg_max": float(np.max(self.angle)),
            "angle_deg_last": float(self.angle[-1]),
        }
        for layer in range(n_layers):
            row[f"angle_deg_W{layer}"] = float(np.mean(layer_angles[:, layer]))
        return row


def relaxation_errors(
    model: ModelSpec, protocol: ProtocolSpec, params: Params, inputs, targets
) -> dict[str, float]:
    """Relative error of the relaxed activity of every hidden layer against backprop."""
    with np.errstate(all="ignore"):
        relaxed = oracle.relax_as(model, protocol, params, inputs, targets)
        exact = oracle.backprop(model, params, inputs, targets)
        return {
            f"relax_relerr_{layer.name}": relative_error(relaxed.x[index], exact.activity[index])
            for index, layer in enumerate(model.layers)
            if model.relaxes(layer.name)
        }


def _find_resume_folder(out: Path) -> Path:
    """``out`` itself when it holds a run, else the newest ``.<name>.partial-*`` beside it."""
    if (out / "config.json").is_file():
        return out
    partials = sorted(
        out.resolve().parent.glob(f".{out.name}.partial-*"), key=lambda p: p.stat().st_mtime
    )
    partials = [p for p in partials if (p / "config.json").is_file()]
    if not partials:
        raise TrainError(f"{out}: no run to resume here (no config.json, no partial run folder)")
    return partials[-1]


def _final_name(folder: Path) -> Path:
    name = folder.name
    if name.startswith(".") and ".partial-" in name:
        return folder.with_name(name[1 : name.rindex(".partial-")])
    return folder


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
    eval_samples: int = 10000,
    target: str = "auto",
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
        model, protocol and data must be those of the run.
    progress : bool
        Show a progress bar over samples.
    eval_samples : int
        Training samples (the first ones) on which ``batch`` rows measure the train accuracy.
    target : {'auto', 'numpy', 'cython'}
        Brian2 code generation target; ``'auto'`` compiles (Cython) for long trainings
        (``arsim.run.resolve_codegen_target`` over the epochs' sample presentations).

    Returns
    -------
    (Path, dict)
        The run folder and the final status (``status``, ``message``, final accuracies).
    """
    from arsim.dense import DenseNetwork
    from arsim.network import NOISE_STREAM, seed_noise
    from arsim.run import (
        batch_metrics,
        prepare_run_folder,
        resolve_codegen_target,
        set_codegen_target,
        versions,
    )

    check_compatible(model, protocol)
    if epochs < 1:
        raise TrainError(f"--epochs: expected a positive number of epochs, got {epochs}")
    if metrics_every < 1:
        raise TrainError(f"--metrics-every: expected a positive integer, got {metrics_every}")
    if model.input_size != dataset.train_images.shape[1] or model.output.size != dataset.n_classes:
        raise TrainError(
            f"{model.source}: the model maps {model.input_size} inputs to {model.output.size} "
            f"outputs but {dataset.name} has {dataset.train_images.shape[1]} pixels and "
            f"{dataset.n_classes} classes"
        )
    images, labels = dataset.train_images, dataset.train_labels
    if train_samples is not None:
        images, labels = images[:train_samples], labels[:train_samples]
    n_train = len(images)
    if n_train < 1:
        raise TrainError("no training samples")
    data = {
        "name": dataset.name,
        "source": dataset.source,
        "train_samples": n_train,
        "test_samples": len(dataset.test_images),
        "shuffle": f"epoch e presents default_rng([seed, {SHUFFLE_STREAM}, e]).permutation(n)",
    }
    target = resolve_codegen_target(target, n_train * epochs)
    set_codegen_target(target)
    n_layers = len(model.connections)
    columns = metric_columns(model)
    out = Path(out)

    if resume:
        folder = _find_resume_folder(out)
        config = json.loads((folder / "config.json").read_text())
        if _comparable(config["model"]) != _comparable(model.to_dict()):
            raise TrainError(f"{folder}: the run was made with another model than {model.source}")
        if _comparable(config["protocol"]) != _comparable(protocol.to_dict()):
            raise TrainError(
                f"{folder}: the run was made with another protocol than {protocol.source}"
            )
        if {k: config["data"][k] for k in ("name", "train_samples")} != {
            "name": data["name"],
            "train_samples": n_train,
        }:
            raise TrainError(
                f"{folder}: the run used {config['data']['train_samples']} samples of "
                f"{config['data']['name']}, not {n_train} of {data['name']}"
            )
        seed = config["seed"]
        baseline = config["options"]["baseline"]
        metrics_every = config["options"]["metrics_every"]
        eval_samples = config["options"]["eval_samples"]
        config["epochs"] = epochs
        config.setdefault("resumed", []).append({"command": sys.argv, "time": time.time()})
        _write_json(folder / "config.json", config)
        done = _latest_checkpoint(folder)
        if done:
            state = json.loads((folder / "checkpoints" / f"epoch-{done}.json").read_text())
            arrays = np.load(folder / "checkpoints" / f"epoch-{done}.npz")
            ar_params = _params_from_arrays(model, arrays, "ar_")
            bp_params = _params_from_arrays(model, arrays, "bp_") if baseline else None
            kept_rows = state["metrics_rows"]
            batches_done, samples_done = state["batches"], state["samples"]
        else:
            arrays = np.load(folder / "weights" / "initial.npz")
            ar_params = _params_from_arrays(model, arrays)
            bp_params = ar_params.copy() if baseline else None
            kept_rows, batches_done, samples_done = 0, 0, 0
        with (folder / "metrics.csv").open(newline="") as handle:
            rows = list(csv.reader(handle))[1 : kept_rows + 1]
        with (folder / "metrics.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(columns)
            writer.writerows(rows)
        start_epoch = done
    else:
        seed = model.seed if seed is None else seed
        folder = prepare_run_folder(out)
        (folder / "checkpoints").mkdir()
        config = {
            "model": model.to_dict(),
            "protocol": protocol.to_dict(),
            "derived": {
                "eta_x": protocol.eta_x,
                "relaxation_steps": protocol.phase_steps["relaxation"],
            },
            "seed": seed,
            "epochs": epochs,
            "data": data,
            "options": {
                "metrics_every": metrics_every,
                "baseline": baseline,
                "eval_samples": eval_samples,
                "codegen_target": target,
                "mode": "dense",
            },
            "versions": versions(),
            "command": sys.argv,
        }
        _write_json(folder / "config.json", config)
        ar_params = oracle.init_params(model, seed)
        bp_params = ar_params.copy() if baseline else None
        np.savez(folder / "weights" / "initial.npz", **ar_params.to_arrays())
        with (folder / "metrics.csv").open("w", newline="") as handle:
            csv.writer(handle).writerow(columns)
        start_epoch, batches_done, samples_done, kept_rows = 0, 0, 0, 0

    _write_json(folder / "status.json", {"status": "running", "epochs_done": start_epoch})
    metrics_rows = kept_rows
    point: dict = {}
    if resume and start_epoch:
        point = {key: state.get(key) for key in ("ar_test_acc", "bp_test_acc")}
    eval_images, eval_labels = images[:eval_samples], labels[:eval_samples]
    n_classes = dataset.n_classes
    # samples presented per epoch; with a stimulus stream, sample periods × batch (the stream
    # shows every sample once per epoch and the sweeps see those present at their phase)
    per_epoch = n_train
    if protocol.dwell > 0:
        per_epoch = protocol.stream_periods(n_train) * protocol.batch_size
    bar = tqdm(
        total=epochs * per_epoch,
        initial=start_epoch * per_epoch,
        unit="sample",
        disable=not progress,
        desc=f"{model.name}/{protocol.name}",
    )
    message = None
    csv_handle = (folder / "metrics.csv").open("a", newline="")
    writer = csv.writer(csv_handle)

    def write_row(row: dict) -> None:
        nonlocal metrics_rows
        writer.writerow([_format(row.get(column)) for column in columns])
        csv_handle.flush()
        metrics_rows += 1

    def accuracies(row: dict, full: bool) -> None:
        train_x, train_y = (images, labels) if full else (eval_images, eval_labels)
        for who, params in (("ar", ar_params), ("bp", bp_params)):
            if params is None:
                continue
            row[f"{who}_train_acc"], row[f"{who}_train_loss"] = evaluate(
                model, params, train_x, train_y, n_classes
            )
            row[f"{who}_test_acc"], row[f"{who}_test_loss"] = evaluate(
                model, params, dataset.test_images, dataset.test_labels, n_classes
            )

    try:
        for epoch in range(start_epoch, epochs):
            order = epoch_order(seed, epoch, n_train)
            seed_noise(seed, NOISE_STREAM, epoch)  # per epoch, so that a resumed run repeats it
            network = DenseNetwork(model, protocol, ar_params, record=False)
            if protocol.dwell > 0:  # the stimulus stream shows the epoch's samples in order
                stream = images[order], dataset.one_hot(labels[order])
                network.set_stream(*stream)
            chunk, batch = network.chunk_samples, protocol.batch_size
            window, epoch_window = _Window(), _Window()
            batch_in_epoch = 0
            for start in range(0, per_epoch, chunk):
                stop = min(start + chunk, per_epoch)
                if protocol.dwell > 0:  # the stream shows the images; these are placeholders
                    inputs = np.zeros((stop - start, images.shape[1]))
                    targets = np.zeros((stop - start, n_classes))
                else:
                    index = order[start:stop]
                    inputs, targets = images[index], dataset.one_hot(labels[index])
                upcoming = (None, None)
                if stop < n_train and protocol.dwell == 0:
                    following = order[stop : stop + chunk]
                    upcoming = (images[following], dataset.one_hot(labels[following]))
                with np.errstate(all="ignore"):
                    network.run_chunk(inputs, targets, *upcoming)
                found = network.first_divergence()
                if found is not None:
                    layer, neuron, sample, t = found
                    message = (
                        f"simulation diverged: non-finite activity in layer {layer!r} (neuron "
                        f"{neuron}) in epoch {epoch + 1}, sample {start + sample} of the epoch"
                    )
                    break
                for first, after in zip(
                    range(0, stop - start, batch), network.batch_params, strict=True
                ):
                    last = min(first + batch, stop - start)
                    x, y = inputs[first:last], targets[first:last]
                    if protocol.dwell > 0:  # what the sweep saw; the baseline learns it too
                        swept = protocol.stream_samples(
                            batch_in_epoch * protocol.sample_steps, n_train
                        )
                        x, y = stream[0][swept], stream[1][swept]
                    rate, _ = protocol.learning_rates(len(x))
                    with np.errstate(all="ignore"):
                        row = batch_metrics(model, ar_params, after, x, y, rate)
                        bp_loss = math.nan
                        if bp_params is not None:
                            bp_loss = float(oracle.loss(model, bp_params, x, y).mean())
                            bp_params = backprop_step(model, bp_params, x, y, rate)
                    window.add(row, bp_loss, n_layers)
                    epoch_window.add(row, bp_loss, n_layers)
                    before = ar_params
                    ar_params = after
                    batch_in_epoch += 1
                    batches_done += 1
                    samples_done += last - first
                    if batch_in_epoch % metrics_every == 0:
                        point = {
                            "kind": "batch",
                            "epoch": epoch + 1,
                            "batch": batches_done,
                            "samples": samples_done,
                        }
                        point |= window.summary(n_layers)
                        point |= relaxation_errors(model, protocol, before, x, y)
                        accuracies(point, full=False)
                        write_row(point)
                        window = _Window()
                bar.update(stop - start)
            if message is not None:
                break
            point = {
                "kind": "epoch",
                "epoch": epoch + 1,
                "batch": batches_done,
                "samples": samples_done,
            }
            point |= epoch_window.summary(n_layers)
            accuracies(point, full=True)
            write_row(point)
            arrays = {f"ar_{k}": v for k, v in ar_params.to_arrays().items()}
            if bp_params is not None:
                arrays |= {f"bp_{k}": v for k, v in bp_params.to_arrays().items()}
            _save_npz(folder / "checkpoints" / f"epoch-{epoch + 1}.npz", **arrays)
            _write_json(
                folder / "checkpoints" / f"epoch-{epoch + 1}.json",
                {
                    "epochs_done": epoch + 1,
                    "batches": batches_done,
                    "samples": samples_done,
                    "metrics_rows": metrics_rows,
                    "seed": seed,
                    "next_epoch_shuffle": [seed, SHUFFLE_STREAM, epoch + 1],
                    "ar_test_acc": point.get("ar_test_acc"),
                    "bp_test_acc": point.get("bp_test_acc"),
                },
            )
            _write_json(folder / "status.json", {"status": "running", "epochs_done": epoch + 1})
    finally:
        csv_handle.close()
        bar.close()

    np.savez(folder / "weights" / "final.npz", **ar_params.to_arrays())
    if bp_params is not None:
        np.savez(folder / "weights" / "backprop-final.npz", **bp_params.to_arrays())
    status = {
        "status": "diverged" if message else "completed",
        "message": message,
        "epochs_done": _latest_checkpoint(folder),
        "batches": batches_done,
        "samples": samples_done,
    }
    if message is None:
        status["ar_test_acc"] = point.get("ar_test_acc")
        status["bp_test_acc"] = point.get("bp_test_acc")
    _write_json(folder / "status.json", status)
    final = _final_name(folder)
    if final != folder:
        if final.exists():
            if final.is_dir() and not any(final.iterdir()):
                final.rmdir()
            else:
                raise TrainError(f"{final}: exists; the run stays in {folder}")
        folder.rename(final)
    return final, status


def _format(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)

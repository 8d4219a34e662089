"""Command line: every ``arsim`` argument is parsed here.

``arsim run MODEL PROTOCOL [--out DIR] [--samples N] [--seed S]`` runs on random data and
writes a run folder; with ``--data fashion-mnist`` (or ``--resume DIR``) it trains on the
dataset in epochs beside a backprop baseline instead (see :mod:`arsim.train`).

``arsim sweep SWEEP.toml [--out DIR] [--scheduler ADDRESS] [--workers N]`` runs a grid of
points (see :mod:`arsim.sweep`; exit status 1 when some point did not complete); a ``tls://``
scheduler takes ``--tls-ca-file``, ``--tls-cert`` and ``--tls-key``.

``arsim bench`` measures samples per second of every execution mode (see :mod:`arsim.bench`).

Exit status (see :mod:`arsim.jobs`): 0 done, 2 bad input (one line on stderr naming the file
and key, or the path of an I/O failure), 3 the simulation diverged (the run folder keeps what
was recorded), 130 or 143 stopped by SIGINT or SIGTERM (the run folder keeps what was computed).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import arsim
from arsim import bench, threads
from arsim.datasets import DATASET_NAMES
from arsim.jobs import (
    BASELINES,
    EXIT_BAD_INPUT,
    EXIT_COMPLETED,
    EXIT_INTERRUPTED,
    EXIT_SOME_FAILED,
    RandomRun,
    Training,
    execute,
    io_failure,
)
from arsim.modes import DEVICES, MODES
from arsim.spec import (
    CODEGEN_TARGETS,
    PRECISIONS,
    ModelSpec,
    ProtocolSpec,
    SpecError,
    load_model,
    load_protocol,
)
from arsim.sweep import (
    STATUSES,
    PlainSchedulerWarning,
    SweepError,
    SweepInterrupted,
    TlsFiles,
    load_sweep,
    parse_setting,
    plain_scheduler_risk,
    run_sweep,
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, as for any bad input
        self.exit(EXIT_BAD_INPUT, f"arsim: error: {message}\n")


def _integer_at_least(minimum: int, description: str):
    """An argparse type: an integer >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a {description} integer, got {text!r}")
        return value

    return parse


positive_int = _integer_at_least(1, "positive")
"""argparse type: an integer >= 1."""
non_negative_int = _integer_at_least(0, "non-negative")
"""argparse type: an integer >= 0."""


# --------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------
def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``arsim run`` arguments on random data (model, protocol, ``--samples``, …)."""
    parser.add_argument("model", type=Path, help="model file (TOML), e.g. models/paper-mlp.toml")
    parser.add_argument(
        "protocol", type=Path, help="protocol file (TOML), e.g. protocols/paper.toml"
    )
    parser.add_argument(
        "--out", type=Path, help="run folder (default: runs/<model>__<protocol>__seed<S>)"
    )
    parser.add_argument(
        "--samples", type=positive_int, default=64, help="samples to present (default 64)"
    )
    parser.add_argument(
        "--seed", type=non_negative_int, help="seed of weights and data (default: the model's)"
    )
    parser.add_argument(
        "--target",
        choices=CODEGEN_TARGETS,
        default="auto",
        help="Brian2 code generation of the neurons: numpy starts at once; cython compiles "
        "(about 30 s the first time, then cached) and makes a dense step about a quarter "
        "faster; auto (default) compiles for jobs of 10,000 sample presentations or more",
    )
    parser.add_argument(
        "--mode",
        choices=tuple(MODES),
        default="dense",
        help="execution mode: dense (default; a minibatch relaxes in parallel, connections by "
        "BLAS) or synapses (Brian2 Synapses with per-synapse plasticity); same numbers",
    )
    parser.add_argument(
        "--device",
        choices=DEVICES,
        default="runtime",
        help="Brian2 device of the synapses mode: runtime, or cpp_standalone (one C++ build, "
        "then one program run per minibatch)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_threads_argument(parser)
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="floating point of the simulation, overriding the protocol's precision key "
        "(single: float32 neurons and BLAS in the dense mode; the oracle stays float64)",
    )


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--threads N`` (BLAS/OpenMP threads per process, :mod:`arsim.threads`)."""
    parser.add_argument(
        "--threads",
        type=positive_int,
        help=f"BLAS/OpenMP threads per process (default: ${threads.VARIABLE}, else "
        f"{threads.DEFAULT_THREADS}; more threads collapse when another process takes a core)",
    )


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the training options (``--data``, ``--epochs``, ``--resume``, …) to a parser."""
    group = parser.add_argument_group("training on a dataset")
    group.add_argument(
        "--data",
        choices=DATASET_NAMES,
        help="train on this dataset (epochs of shuffled minibatches) instead of random samples",
    )
    group.add_argument(
        "--data-dir",
        type=Path,
        help="folder with the IDX files (default: $ARSIM_DATA_DIR, the Debian package, …)",
    )
    group.add_argument("--epochs", type=positive_int, help="epochs to train (default 1)")
    group.add_argument(
        "--train-samples", type=positive_int, help="use the first N training samples only"
    )
    group.add_argument(
        "--metrics-every",
        type=positive_int,
        default=50,
        help="a metrics row every N minibatches (default 50) besides one per epoch",
    )
    group.add_argument(
        "--compare-every",
        type=positive_int,
        default=Training.compare_every,
        help="compare AR's update with backprop (the angles) on every K-th minibatch and the "
        "last of each metrics row (default 10: about 2 %% of an epoch; 1: every minibatch)",
    )
    group.add_argument(
        "--eval-samples",
        type=positive_int,
        default=Training.eval_samples,
        help="accuracy and loss of each metrics row on the first N training and N test images "
        f"(default {Training.eval_samples:,}); the epoch rows use the whole sets",
    )
    group.add_argument(
        "--baseline",
        choices=BASELINES,
        default="backprop",
        help="train a backprop baseline from the same weights on the same batches (default)",
    )
    group.add_argument(
        "--resume",
        type=Path,
        metavar="DIR",
        help="continue the run in DIR (or its partial folder) from its last epoch checkpoint",
    )


def add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``arsim sweep`` arguments to a parser."""
    parser.add_argument(
        "--out",
        type=Path,
        help="sweep folder (default: runs/sweep-<name>); reruns skip finished points",
    )
    parser.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="Dask scheduler, e.g. tls://host:8786 with the three --tls-* files, or "
        "tcp://127.0.0.1:8786 (default: a local cluster)",
    )
    for option, what in (
        ("--tls-ca-file", "certificate of the authority that signed the cluster's (PEM)"),
        ("--tls-cert", "this client's certificate, signed by that authority (PEM)"),
        ("--tls-key", "the private key of --tls-cert (PEM; omit if the certificate holds it)"),
    ):
        parser.add_argument(option, type=Path, metavar="FILE", help=f"tls:// scheduler: {what}")
    parser.add_argument(
        "--workers",
        type=positive_int,
        help="local worker processes (default: the number of cores)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUES",
        help="replace the file's seeds, a run.OPTION or a grid list (TOML values), e.g. "
        "--set 'protocol.phases.relaxation=[\"20 ms\"]' --set seeds=[0]",
    )
    parser.add_argument(
        "--limit", type=positive_int, metavar="N", help="run only the first N points"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_threads_argument(parser)
    parser.add_argument(
        "sweep", type=Path, help="sweep file (TOML), e.g. sweeps/relaxation-memory.toml"
    )


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``arsim bench`` arguments to a parser."""
    parser.add_argument("--out", type=Path, help="write the results as JSON to this file")
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=bench.ROWS,
        help="what to measure (default: every mode but synapses-numpy and the epochs; with "
        "--epoch: the epochs only)",
    )
    parser.add_argument(
        "--contended",
        action="store_true",
        help="measure every mode again while a CPU-bound process occupies one core "
        "(contended_ratio = contended / idle samples per second)",
    )
    parser.add_argument(
        "--batch", type=positive_int, default=bench.DEFAULT_BATCH, help="minibatch size (64)"
    )
    parser.add_argument(
        "--epoch",
        action="store_true",
        help="time one Fashion-MNIST training epoch in single and double precision against "
        "the NumPy reference on the same samples (epoch_s, epoch_ratio)",
    )
    parser.add_argument(
        "--epoch-samples", type=positive_int, help="training samples of an epoch (all 60,000)"
    )
    parser.add_argument(
        "--rounds",
        type=positive_int,
        default=bench.ROUNDS,
        help=f"turns each row and the NumPy reference take; the median round's ratio is "
        f"reported ({bench.ROUNDS})",
    )
    add_threads_argument(parser)


def build_parser() -> argparse.ArgumentParser:
    """The ``arsim`` argument parser."""
    parser = _Parser(prog="arsim", description="Activation Relaxation in Brian2 rate neurons.")
    parser.add_argument("--version", action="version", version=f"arsim {arsim.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = commands.add_parser("run", help="run a model under a protocol and write a run folder")
    add_run_arguments(run)
    add_train_arguments(run)
    add_bench_arguments(
        commands.add_parser(
            "bench", help="samples per second of every execution mode on the paper network"
        )
    )
    add_sweep_arguments(
        commands.add_parser(
            "sweep", help="run a model and protocol over a grid of parameters and seeds (Dask)"
        )
    )
    return parser


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------
def job_from_args(
    args: argparse.Namespace, model: ModelSpec, protocol: ProtocolSpec
) -> RandomRun | Training:
    """The job the parsed ``arsim run`` arguments ask for.

    A training with ``--data`` or ``--resume``, else a run on random data; options that the
    parser lacks take their defaults.
    """
    common = {
        "model": model,
        "protocol": protocol,
        "out": getattr(args, "out", None),
        "seed": getattr(args, "seed", None),
        "target": getattr(args, "target", None) or "auto",
        "mode": getattr(args, "mode", "dense"),
        "device": getattr(args, "device", "runtime"),
    }
    if getattr(args, "data", None) is None and getattr(args, "resume", None) is None:
        return RandomRun(samples=args.samples, **common)
    return Training(
        data=args.data,
        data_dir=args.data_dir,
        epochs=args.epochs,
        train_samples=args.train_samples,
        metrics_every=args.metrics_every,
        compare_every=getattr(args, "compare_every", Training.compare_every),
        eval_samples=getattr(args, "eval_samples", Training.eval_samples),
        baseline=args.baseline,
        resume=args.resume,
        **common,
    )


def run_from_args(args: argparse.Namespace, model: ModelSpec, protocol: ProtocolSpec) -> int:
    """Run or train as the parsed arguments say; report it and return the exit status."""
    job = job_from_args(args, model, protocol)
    return execute(job, progress=not getattr(args, "quiet", False)).report()


def _run(args: argparse.Namespace) -> int:
    try:
        model, protocol = load_model(args.model), load_protocol(args.protocol)
    except SpecError as error:
        print(f"arsim: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if getattr(args, "precision", None):
        protocol = replace(protocol, precision=args.precision)
    return run_from_args(args, model, protocol)


def _sweep(args: argparse.Namespace) -> int:
    try:
        settings = dict(parse_setting(text) for text in args.set)
        sweep = load_sweep(args.sweep, settings)
        if args.limit:
            sweep = replace(sweep, points=sweep.points[: args.limit])
        risk = plain_scheduler_risk(args.scheduler)
        if risk is not None:
            print(f"arsim: warning: {risk}", file=sys.stderr)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PlainSchedulerWarning)  # printed above, one line
            table = run_sweep(
                sweep,
                args.out,
                scheduler=args.scheduler,
                workers=args.workers,
                tls=TlsFiles(args.tls_ca_file, args.tls_cert, args.tls_key),
                progress=not args.quiet,
            )
    except (SpecError, SweepError) as error:
        print(f"arsim: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as error:
        print(io_failure(error).message, file=sys.stderr)
        return EXIT_BAD_INPUT
    except SweepInterrupted as stop:
        print(
            f"arsim: sweep interrupted: {stop.finished} points finished, {stop.left} left in "
            f"{stop.out}; run the same command again to finish them",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    counts = table.attrs["counts"]
    print(
        f"arsim: wrote {Path(table.attrs['out']) / 'results.csv'} ({len(table)} points: "
        + ", ".join(f"{counts[status]} {status}" for status in STATUSES)
        + f"; {table.attrs['points_run']} run, {table.attrs['points_reused']} finished before)"
    )
    bad = table[table["status"] != "completed"]
    for _, row in bad.head(20).iterrows():
        print(f"arsim: point {row['point']}: {row['status']}: {row['error']}", file=sys.stderr)
    return EXIT_COMPLETED if bad.empty else EXIT_SOME_FAILED


def _bench(args: argparse.Namespace) -> int:
    modes = args.modes or ([] if args.epoch else list(bench.DEFAULT_ROWS))
    modes += [name for name in bench.EPOCHS if args.epoch and name not in modes]
    rows = bench.run_benchmark(
        modes, args.threads, args.out, contended=args.contended, batch=args.batch,
        epoch_samples=args.epoch_samples, rounds=args.rounds,
    )  # fmt: skip
    return EXIT_SOME_FAILED if any("error" in row for row in rows) else EXIT_COMPLETED


COMMANDS = {"run": _run, "sweep": _sweep, "bench": _bench}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``arsim`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        args.threads = threads.apply(args.threads)
    except ValueError as error:  # $ARSIM_THREADS is not a positive integer
        print(f"arsim: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return COMMANDS[args.command](args)


if __name__ == "__main__":
    sys.exit(main())

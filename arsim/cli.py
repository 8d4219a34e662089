"""Command line: ``arsim run MODEL PROTOCOL [--out DIR] [--samples N] [--seed S]``.

``arsim sweep SWEEP.toml [--out DIR] [--scheduler ADDRESS] [--workers N]`` runs a grid of
points (see :mod:`arsim.sweep`; exit status 1 when some point did not complete).

With ``--data fashion-mnist`` (or ``--resume DIR``) the run trains on the dataset in epochs
beside a backprop baseline instead (see :mod:`arsim.train`).

Exit status: 0 done, 2 bad input (one line on stderr naming the file and key), 3 the
simulation diverged (the run folder keeps what was recorded).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from arsim.spec import CODEGEN_TARGETS, SpecError

EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3


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


_positive_int = _integer_at_least(1, "positive")
_seed = _integer_at_least(0, "non-negative")


def build_parser() -> argparse.ArgumentParser:
    """The ``arsim`` argument parser."""
    parser = _Parser(prog="arsim", description="Activation Relaxation in Brian2 rate neurons.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = commands.add_parser("run", help="run a model under a protocol and write a run folder")
    run.add_argument("model", type=Path, help="model file (TOML), e.g. models/paper-mlp.toml")
    run.add_argument("protocol", type=Path, help="protocol file (TOML), e.g. protocols/paper.toml")
    run.add_argument(
        "--out", type=Path, help="run folder (default: runs/<model>__<protocol>__seed<S>)"
    )
    run.add_argument(
        "--samples", type=_positive_int, default=64, help="samples to present (default 64)"
    )
    run.add_argument("--seed", type=_seed, help="seed of weights and data (default: the model's)")
    run.add_argument(
        "--target",
        choices=CODEGEN_TARGETS,
        default="auto",
        help="Brian2 code generation of the neurons: numpy starts at once; cython compiles "
        "(about 30 s the first time, then cached) and makes a dense step about a quarter "
        "faster; auto (default) compiles for jobs of 10,000 sample presentations or more",
    )
    run.add_argument(
        "--mode",
        choices=("dense", "synapses"),
        default="dense",
        help="execution mode: dense (default; a minibatch relaxes in parallel, connections by "
        "BLAS) or synapses (Brian2 Synapses with per-synapse plasticity); same numbers",
    )
    run.add_argument(
        "--device",
        choices=("runtime", "cpp_standalone"),
        default="runtime",
        help="Brian2 device of the synapses mode: runtime, or cpp_standalone (one C++ build, "
        "then one program run per minibatch)",
    )
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    from arsim.train import add_train_arguments

    add_train_arguments(run)
    bench = commands.add_parser(
        "bench", help="samples per second of every execution mode on the paper network"
    )
    bench.add_argument("--out", type=Path, help="write the results as JSON to this file")
    bench.add_argument(
        "--modes",
        nargs="+",
        default=[
            "numpy-reference",
            "dense",
            "dense-numpy",
            "synapses-standalone",
            "synapses-cython",
        ],
        choices=[
            "numpy-reference",
            "dense",
            "dense-numpy",
            "synapses-standalone",
            "synapses-cython",
            "synapses-numpy",
        ],
        help="what to measure (default: all but synapses-numpy)",
    )
    bench.add_argument("--threads", type=_positive_int, default=2, help="BLAS threads (default 2)")
    from arsim.sweep import add_sweep_arguments

    add_sweep_arguments(
        commands.add_parser(
            "sweep", help="run a model and protocol over a grid of parameters and seeds (Dask)"
        )
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``arsim`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.command == "sweep":
        from arsim.sweep import main_from_args

        return main_from_args(args)
    if args.command == "bench":
        from arsim.bench import run_benchmark

        rows = run_benchmark(args.modes, args.threads, args.out)
        return 1 if any("error" in row for row in rows) else 0
    from arsim.run import ExecutionError, RunFolderError, default_run_folder, run_to_folder
    from arsim.spec import load_model, load_protocol

    try:
        model = load_model(args.model)
        protocol = load_protocol(args.protocol)
        if args.data is not None or args.resume is not None:
            from arsim.train import run_from_args

            return run_from_args(args, model, protocol)
        seed = model.seed if args.seed is None else args.seed
        out = args.out or default_run_folder(model, protocol, seed)
        folder, result = run_to_folder(
            model,
            protocol,
            out,
            args.samples,
            seed,
            args.target,
            progress=not args.quiet,
            mode=args.mode,
            device=args.device,
        )
    except (SpecError, RunFolderError, ExecutionError) as error:
        print(f"arsim: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if result.diverged:
        print(f"arsim: error: {result.diverged}; run folder {folder}", file=sys.stderr)
        return EXIT_DIVERGED
    last = result.metrics.iloc[-1]
    print(
        f"arsim: wrote {folder} ({len(result.traces)} trace rows; last batch loss "
        f"{last['loss']:.4g}, angle to backprop {last['angle_deg']:.3g} deg)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

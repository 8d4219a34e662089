"""Relaxation traces of a run: each recorded neuron's activity through the sample's phases.

Figure (:func:`arsim.plot.traces`): one panel per layer, x (solid) and x̂ (dashed), or the
variables named, of at most 8 recorded neurons (or those named) against time within the
sample, the phases shaded and the plasticity step marked. Usage::

    python analysis/plot_relaxation.py RUN_DIR [--sample 0] [--variables x,xhat,fb]
        [--neurons 0,1] [--out FIGURE.png]

Writes ``RUN_DIR/figures/relaxation-sample<k>.png`` unless ``--out`` is given.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
from arsim import plot  # noqa: E402
from arsim.traces import load  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="run folder written by `arsim run`")
    parser.add_argument("--sample", type=int, default=0, help="sample index (default 0)")
    parser.add_argument("--variables", default="x,xhat", help="comma-separated (x,xhat,fb,...)")
    parser.add_argument("--neurons", help="comma-separated neuron indices (default: first 8)")
    parser.add_argument("--out", type=Path, help="figure file (PNG)")
    args = parser.parse_args(argv)
    try:
        rows = load(args.run, samples=[args.sample])
    except FileNotFoundError as error:
        print(f"plot_relaxation: error: {error} (is this a run folder?)", file=sys.stderr)
        return 2
    if rows.empty:
        recorded = sorted(load(args.run, neurons=[0])["sample"].unique())
        print(
            f"plot_relaxation: error: --sample {args.sample}: not recorded; recorded: {recorded}",
            file=sys.stderr,
        )
        return 2
    variables = tuple(args.variables.split(","))
    neurons = None if args.neurons is None else [int(n) for n in args.neurons.split(",")]
    fig = plot.traces(args.run, args.sample, variables, neurons=neurons)
    out = args.out or args.run / "figures" / f"relaxation-sample{args.sample}.png"
    plot.save(fig, out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

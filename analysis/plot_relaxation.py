"""Relaxation traces of a run: each recorded neuron's activity through the sample's phases.

Figure: one panel per layer, x (solid) and x̂ (dashed) of the recorded neurons against time
within the sample, the relaxation phase shaded. Usage::

    python analysis/plot_relaxation.py RUN_DIR [--sample 0] [--out FIGURE.png]

Writes ``RUN_DIR/figures/relaxation-sample<k>.png`` unless ``--out`` is given.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from arsim.traces import load  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="run folder written by `arsim run`")
    parser.add_argument("--sample", type=int, default=0, help="sample index (default 0)")
    parser.add_argument("--out", type=Path, help="figure file (PNG)")
    args = parser.parse_args(argv)
    try:
        rows = load(args.run, samples=[args.sample])
    except FileNotFoundError as error:
        print(f"plot_relaxation: error: {error} (is this a run folder?)", file=sys.stderr)
        return 2
    config = json.loads((args.run / "config.json").read_text())
    if rows.empty:
        recorded = sorted(load(args.run, neurons=[0])["sample"].unique())
        print(
            f"plot_relaxation: error: --sample {args.sample}: not recorded; recorded: {recorded}",
            file=sys.stderr,
        )
        return 2
    layers = [
        layer["name"] for layer in config["model"]["layers"] if layer["name"] in set(rows.layer)
    ]
    dt, steps = config["protocol"]["dt"], config["derived"]["phase_steps"]
    start = rows.t.min() - dt
    relax_from = steps["feedforward"] * dt * 1e3
    relax_to = (steps["feedforward"] + steps["relaxation"]) * dt * 1e3
    fig, axes = plt.subplots(
        len(layers), 1, figsize=(7, 2.2 * len(layers)), sharex=True, squeeze=False
    )
    for axis, layer in zip(axes[:, 0], layers, strict=True):
        axis.axvspan(relax_from, relax_to, color="0.93", label="relaxation")
        for (variable, neuron), group in rows[rows.layer == layer].groupby(
            ["variable", "neuron"], observed=True
        ):
            if variable not in ("x", "xhat"):
                continue
            style = "-" if variable == "x" else "--"
            axis.plot((group.t - start) * 1e3, group.value, style, lw=1, color=f"C{neuron % 10}")
        axis.set_ylabel(layer)
    axes[-1, 0].set_xlabel("time in sample (ms)")
    names = f"{config['model']['name']} / {config['protocol']['name']}"
    axes[0, 0].set_title(f"{names}: sample {args.sample} (x solid, x̂ dashed)")
    fig.tight_layout()
    out = args.out or args.run / "figures" / f"relaxation-sample{args.sample}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

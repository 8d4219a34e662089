"""Figures 3 and 4 of the paper: the variants of AR (test accuracy, and angle to backprop).

Figure 3 (``--figure 3``): test accuracy over training of every variant (solid) with the
backprop baselines (dashed; the MSE variants share one baseline: same initial weights, same
batches). Figure 4 (``--figure 4``): the angle between each variant's weight update and the
backprop gradient of the same weights and batch (all matrices flattened into one vector).
Usage::

    python analysis/fig3_variants_accuracy.py RUN_DIR... [--out FIG.png]
    python analysis/fig4_variants_angle.py RUN_DIR... [--out FIG.png]

writing ``FIRST_RUN_DIR/figures/fig3-variants-accuracy.png`` or ``fig4-variants-angle.png`` by
default. A run with fewer than two ``batch`` rows in its ``metrics.csv`` is left out (and said
so); when no run is left, the panels say so instead of staying empty;

e.g. ``RUN_DIR...`` = ``runs/fmnist-exact runs/fmnist-fa runs/fmnist-learned
runs/fmnist-noderiv runs/fmnist-learned-noderiv runs/fmnist-ce``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from arsim.plot import save, too_little_data  # noqa: E402

FIGURE_NAMES = {3: "fig3-variants-accuracy.png", 4: "fig4-variants-angle.png"}
"""File name of each figure in ``FIRST_RUN_DIR/figures/`` (without ``--out``)."""


def load_run(run: Path) -> tuple[pd.DataFrame, dict]:
    config = json.loads((run / "config.json").read_text())
    metrics = pd.read_csv(run / "metrics.csv")
    metrics["epochs"] = metrics["samples"] / config["data"]["train_samples"]
    return metrics, config


def variant(model: dict) -> str:
    """The model's name, with its feedback and derivative settings where the name omits them.

    The settings are those of the weighted connections (a max-pooling has none); variants made
    by overriding ``[defaults]`` (``arsim sweep``) keep their model's name, e.g.
    ``cnn, learned ψ, no f'``.
    """
    name = model["name"]
    weighted = [c for c in model["connections"] if c.get("operation", "dense") != "maxpool"]
    kinds = {c.get("feedback", "transpose") for c in weighted}
    notes = [f"{kind} ψ" for kind in sorted(kinds - {"transpose"}) if kind not in name]
    if weighted and not any(c.get("derivative", True) for c in weighted) and "noderiv" not in name:
        notes.append("no f'")
    return ", ".join([name, *notes])


def label(config: dict) -> str:
    name = variant(config["model"]).removeprefix("paper-mlp-").removeprefix("paper-mlp")
    protocol = config["protocol"]["name"]
    return (name or "exact") + ("" if protocol == "paper" else f" ({protocol})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--figure", type=int, choices=(3, 4), required=True)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    out = args.out or args.runs[0] / "figures" / FIGURE_NAMES[args.figure]
    if args.figure == 3:
        fig, ax = plt.subplots(figsize=(8, 4.8))
        log_ax = None
    else:
        fig, (ax, log_ax) = plt.subplots(1, 2, figsize=(12, 4.6))
    baselines, drawn = {}, 0
    for k, run in enumerate(args.runs):
        metrics, config = load_run(run)
        batch = metrics[metrics.kind == "batch"]
        if len(batch) < 2:
            print(f"variants_plot: {run}: {len(batch)} batch row(s) in metrics.csv; left out")
            continue
        drawn += 1
        color = f"C{k}"
        if args.figure == 3:
            ax.plot(
                batch.epochs, 100 * batch.ar_test_acc, color=color, label=label(config), zorder=3
            )
            loss = config["model"]["loss"]
            if loss not in baselines and batch.bp_test_acc.notna().any():
                baselines[loss] = (batch.epochs, 100 * batch.bp_test_acc)
        else:
            ax.plot(batch.epochs, batch.angle_deg, color=color, label=label(config))
            log_ax.semilogy(batch.epochs, batch.angle_deg, color=color, label=label(config))
    if not drawn:
        message = "too little data: no run has 2 batch rows in metrics.csv (lower --metrics-every)"
        for axis in (ax, log_ax) if log_ax else (ax,):
            too_little_data(axis, message)
        print(f"wrote {save(fig, out, dpi=100)}")
        return 0
    if args.figure == 3:
        for loss, (x, y) in sorted(baselines.items()):
            ax.plot(
                x,
                y,
                "--",
                color="k" if loss == "mse" else "grey",
                lw=1.2,
                label=f"backprop ({loss})",
            )
        ax.set(ylabel="test accuracy (%)", title="AR variants: test accuracy (Fashion-MNIST)")
        ax.set_ylim(bottom=max(0, ax.get_ylim()[0]))
    else:
        ax.set(
            ylabel="angle to backprop (degrees)",
            title="AR variants: angle of the update to the backprop gradient",
            ylim=(0, 90),
        )
        ax.set_yticks(range(0, 91, 10))
        ax.grid(alpha=0.3)
        log_ax.set(
            xlabel="epoch", ylabel="angle to backprop (degrees, log)", title="the same, log scale"
        )
        log_ax.axhline(1.0, color="grey", ls=":", lw=1)
        log_ax.grid(alpha=0.3, which="both")
    ax.set_xlabel("epoch")
    ax.legend(fontsize=8)
    fig.tight_layout()
    print(f"wrote {save(fig, out, dpi=100)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

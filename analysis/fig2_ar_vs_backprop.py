"""Figure 2 of the paper: AR against backprop from the same initial weights on the same batches.

Three panels over training (x: epochs): train accuracy and test accuracy of AR (solid) and of
the backprop baseline (dashed), and the angle between AR's weight update and the backprop
gradient (all weight matrices and biases flattened into one vector; mean over the minibatches
between two metric rows, the band reaching their maximum; thin lines per weight matrix).
Train accuracy in the ``batch`` rows is on the first ``eval_samples`` training images; the
markers are the per-epoch rows (whole training and test sets). Usage::

    python analysis/fig2_ar_vs_backprop.py RUN_DIR [--out RUN_DIR/figures/fig2-ar-vs-backprop.png]

RUN_DIR is a folder written by ``arsim run --data ...``, e.g.
``runs/fmnist-exact``.
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


def load_run(run: Path) -> tuple[pd.DataFrame, dict]:
    """metrics.csv with an ``epochs`` column (samples / training samples), and config.json."""
    config = json.loads((run / "config.json").read_text())
    metrics = pd.read_csv(run / "metrics.csv")
    metrics["epochs"] = metrics["samples"] / config["data"]["train_samples"]
    return metrics, config


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--out", type=Path, help="default: RUN_DIR/figures/fig2-ar-vs-backprop.png")
    args = parser.parse_args(argv)
    metrics, config = load_run(args.run)
    batch, epoch = metrics[metrics.kind == "batch"], metrics[metrics.kind == "epoch"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    out = args.out or args.run / "figures" / "fig2-ar-vs-backprop.png"
    if len(batch) < 2:
        message = f"too little data: {len(batch)} batch row(s) in metrics.csv; at least 2 needed"
        for ax in axes:
            too_little_data(ax, message)
        print(f"fig2_ar_vs_backprop: {args.run}: {message} (lower --metrics-every)")
        print(f"wrote {save(fig, out)}")
        return 0
    for ax, split in zip(axes[:2], ("train", "test"), strict=True):
        ax.plot(batch.epochs, 100 * batch[f"ar_{split}_acc"], color="C0", label="AR")
        ax.plot(batch.epochs, 100 * batch[f"bp_{split}_acc"], "--", color="C3", label="backprop")
        ax.plot(epoch.epochs, 100 * epoch[f"ar_{split}_acc"], "o", color="C0")
        ax.plot(epoch.epochs, 100 * epoch[f"bp_{split}_acc"], "x", color="C3")
        ax.set(xlabel="epoch", ylabel=f"{split} accuracy (%)", title=f"{split} accuracy")
        ax.legend()
    ax = axes[2]
    ax.plot(batch.epochs, batch.angle_deg, color="k", label="all weights (mean)")
    ax.fill_between(
        batch.epochs,
        batch.angle_deg,
        batch.angle_deg_max,
        color="k",
        alpha=0.15,
        label="max over minibatches",
    )
    for layer in range(len(config["model"]["connections"])):
        ax.plot(batch.epochs, batch[f"angle_deg_W{layer}"], lw=0.8, label=f"W{layer}")
    ax.set(
        xlabel="epoch", ylabel="angle to backprop (degrees)", title="gradient angle", ylim=(0, None)
    )
    ax.legend(fontsize=7)
    protocol = config["protocol"]
    fig.suptitle(
        f"{config['model']['name']} / {protocol['name']} on {config['data']['name']} "
        f"({config['data']['train_samples']} training samples, seed {config['seed']})",
        fontsize=10,
    )
    fig.tight_layout()
    print(f"wrote {save(fig, out, dpi=100)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

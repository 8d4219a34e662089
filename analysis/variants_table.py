"""Table: test accuracy of every AR variant beside its backprop baseline, and the angles.

One markdown row per run folder: final test accuracy (feedforward sweep, whole test set) of AR
and of the backprop baseline trained from the same weights on the same batches, their
difference in percentage points, and the angle between AR's update and the backprop gradient
(mean over the first and the last metric window, over the run, and the largest single
minibatch). Usage::

    python analysis/variants_table.py RUN_DIR... [--out TABLE.md]

Prints the table; writes it only to ``--out``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
from variants_plot import variant

ROOT = Path(__file__).resolve().parents[1]


def row(run: Path) -> str:
    config = json.loads((run / "config.json").read_text())
    status = json.loads((run / "status.json").read_text())
    metrics = pd.read_csv(run / "metrics.csv")
    batch, epoch = metrics[metrics.kind == "batch"], metrics[metrics.kind == "epoch"]
    last = epoch.iloc[-1] if len(epoch) else None
    ar = 100 * last.ar_test_acc if last is not None else float("nan")
    bp = 100 * last.bp_test_acc if last is not None else float("nan")
    cells = [
        variant(config["model"]),
        config["protocol"]["name"],
        f"{status['status']}, {status.get('epochs_done', 0)} ep",
        f"{ar:.2f}",
        f"{bp:.2f}",
        f"{ar - bp:+.2f}",
        f"{batch.angle_deg.iloc[0]:.2f}",
        f"{batch.angle_deg.iloc[-1]:.2f}",
        f"{epoch.angle_deg.mean():.2f}" if len(epoch) else "",
        f"{batch.angle_deg_max.max():.2f}",
    ]
    return "| " + " | ".join(cells) + " |"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    header = (
        "| model | protocol | status | AR test acc (%) | backprop test acc (%) | AR − BP (pp) "
        "| angle first window (°) | angle last window (°) | angle mean (°) | angle max (°) |\n"
        "|---|---|---|---|---|---|---|---|---|---|"
    )
    text = "\n".join([header, *(row(run) for run in args.runs)]) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

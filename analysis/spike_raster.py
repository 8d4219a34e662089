"""A spiking relaxation's raster beside the rate model's trace, and their numbers side by side.

Reads two training folders of the paper network made as ``docs/spikes.md`` ("Tutorial: a
spiking relaxation, recorded") shows: one whose top-down signal travels as spikes
(``[spikes]``, recording ``x`` and ``spikes``), one without (recording ``x``). Draws the
spikes a layer sent in one sample above which its x and the rate model's x are drawn
(:func:`arsim.plot.raster`), and prints the test accuracy and the angle between AR's update
and backprop of both (the epoch row of each ``metrics.csv``).

Usage::

    python analysis/spike_raster.py runs/spiking runs/rate [--layer h3] [--sample 0]
        [--out runs/spiking/figures/spike-raster.png]

Writes the figure, and the numbers as CSV beside it, into the spiking run's ``figures/`` unless
``--out`` says otherwise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import pandas as pd  # noqa: E402

from arsim import plot, threads  # noqa: E402


def numbers(spiking: Path, rate: Path) -> pd.DataFrame:
    """Test accuracy (%) and angle to backprop (degrees) of the last epoch row of each run."""
    rows = []
    for name, folder in (("spiking", spiking), ("rate", rate)):
        metrics = pd.read_csv(folder / "metrics.csv")
        last = metrics[metrics.kind == "epoch"].iloc[-1]
        clipped = {c: int(last[c]) for c in metrics if c.startswith("spikes_clipped_")}
        rows.append(
            {
                "run": name,
                "ar_test_acc_pct": 100 * last.ar_test_acc,
                "bp_test_acc_pct": 100 * last.bp_test_acc,
                "angle_deg": last.angle_deg,
            }
            | clipped
        )
    table = pd.DataFrame(rows)
    counts = [c for c in table if c.startswith("spikes_clipped_")]
    return table.astype({c: "Int64" for c in counts})  # the rate run has none


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spiking", type=Path, help="training folder with [spikes]")
    parser.add_argument("rate", type=Path, help="the same training without [spikes]")
    parser.add_argument("--layer", default="h3", help="sending layer (default h3)")
    parser.add_argument("--sample", type=int, default=0)
    parser.add_argument("--out", type=Path, help="default: SPIKING/figures/spike-raster.png")
    args = parser.parse_args(argv)
    threads.apply()  # one BLAS thread (arsim's policy): a busy machine does not collapse it
    args.out = args.out or args.spiking / "figures" / "spike-raster.png"
    fig = plot.raster(args.spiking, args.layer, sample=args.sample, reference=args.rate)
    print(f"wrote {plot.save(fig, args.out)}")
    table = numbers(args.spiking, args.rate)
    table.to_csv(args.out.with_suffix(".csv"), index=False)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

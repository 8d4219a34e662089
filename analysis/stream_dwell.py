"""Gradient angle against stimulus dwell time: a stream that does not wait for the relaxation.

Under theta-gated plasticity (``protocols/stimulus-stream.toml``: one 125 ms theta cycle per
minibatch, relaxation 10 τ, weights change at 300°) the stimulus and its target change every
``dwell`` ms on their own clock. Each point runs the paper network (dense mode) on Fashion-MNIST
training images and reports the angle between each AR weight update and the backprop gradient of
the weights and sweep input the network actually had (mean and spread over the minibatches), per
weight matrix too. A dwell of a whole cycle (or a multiple of it) is the ordinary protocol.
Each point shows as many images as make ``--periods`` theta cycles at its dwell (the stream
shows each image once: a fast stream passes many images per cycle).

Usage::

    python analysis/stream_dwell.py [--periods 20] [--dwells 5 10 20 40 60 80 100 125 190 250]
        [--out runs/stream-dwell/stream-dwell.png]

Writes the numbers as CSV next to the figure. With fewer than two dwells the figure says so
instead of drawing.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from arsim import oracle  # noqa: E402
from arsim.datasets import load_dataset  # noqa: E402
from arsim.plot import save, too_little_data  # noqa: E402
from arsim.run import simulate
from arsim.spec import load_model, load_protocol  # noqa: E402
from arsim.spec.schedule import Schedule

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "paper-mlp.toml")
    parser.add_argument(
        "--protocol", type=Path, default=ROOT / "protocols" / "stimulus-stream.toml"
    )
    parser.add_argument("--periods", type=int, default=20)
    parser.add_argument(
        "--dwells", type=float, nargs="+", default=[5, 10, 20, 40, 60, 80, 100, 125, 190, 250]
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", type=Path, default=Path("runs") / "stream-dwell" / "stream-dwell.png"
    )
    args = parser.parse_args(argv)
    model, protocol = load_model(args.model), load_protocol(args.protocol)
    dataset = load_dataset("fashion-mnist", None)
    params = oracle.init_params(model, args.seed)
    schedule = Schedule(None, protocol)
    cycle_ms = schedule.sample_duration * 1e3
    rows = []
    for dwell_ms in args.dwells:
        point = replace(protocol, dwell=dwell_ms * 1e-3)
        point_schedule = Schedule(None, point)
        minibatches = -(-args.periods * point_schedule.sample_steps // point_schedule.dwell_steps)
        count = min(minibatches * point.batch_size, len(dataset.train_images))
        inputs = dataset.train_images[:count]
        targets = dataset.one_hot(dataset.train_labels[:count])
        result = simulate(model, point, inputs, targets, params.copy(), record=False)
        if result.diverged:
            raise SystemExit(f"stream_dwell: dwell {dwell_ms} ms: {result.diverged}")
        metrics = result.metrics
        row = {
            "dwell_ms": dwell_ms,
            "dwell_over_cycle": dwell_ms / cycle_ms,
            "images": count,
            "periods": len(metrics),
            "angle_deg_mean": metrics.angle_deg.mean(),
            "angle_deg_min": metrics.angle_deg.min(),
            "angle_deg_max": metrics.angle_deg.max(),
        }
        for column in [c for c in metrics if c.startswith("angle_deg_W")]:
            row[column] = metrics[column].mean()
        rows.append(row)
        print(f"dwell {dwell_ms:g} ms: angle {row['angle_deg_mean']:.3g} deg", flush=True)
    table = pd.DataFrame(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out.with_suffix(".csv"), index=False)
    print(table.to_string(index=False))

    figure, axis = plt.subplots(figsize=(6.4, 4.2))
    if len(table) < 2:
        too_little_data(axis, f"too little data: {len(table)} dwell(s); at least 2 are needed")
        print(f"wrote {save(figure, args.out, dpi=130)}")
        return 0
    axis.fill_between(table.dwell_ms, table.angle_deg_min, table.angle_deg_max, alpha=0.2)
    axis.plot(table.dwell_ms, table.angle_deg_mean, "o-", label="all weights (mean, range)")
    for column in [c for c in table if c.startswith("angle_deg_W")]:
        axis.plot(table.dwell_ms, table[column], lw=0.8, ls=":", label=column[10:])
    relax_ms = schedule.phase_steps["relaxation"] * protocol.dt * 1e3
    axis.axvline(relax_ms, color="grey", ls="--", lw=1, label=f"relaxation ({relax_ms:g} ms)")
    axis.axvline(cycle_ms, color="k", ls="--", lw=1, label=f"theta cycle ({cycle_ms:g} ms)")
    axis.set_xscale("log")
    axis.set_xticks(table.dwell_ms, [f"{d:g}" for d in table.dwell_ms])
    axis.set_xlabel("stimulus dwell time (ms)")
    axis.set_ylabel("angle AR update vs backprop (deg)")
    axis.set_title(f"{protocol.name}: plasticity at {protocol.oscillation.plasticity:g}°")
    axis.legend(fontsize=7)
    figure.tight_layout()
    print(f"wrote {save(figure, args.out, dpi=130)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

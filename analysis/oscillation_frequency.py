"""Accuracy against oscillation frequency: how long must the relaxation window be?

Trains the paper network with AR on a Fashion-MNIST subset under an oscillation whose relaxation
window is a fixed part of the cycle (30°–330°, five sixths), at frequencies whose windows last
10 τ, 5 τ, 2 τ and 1 τ (8.3, 16.7, 41.7 and 83.3 Hz with τ = 10 ms), with a square and a sine
gate, beside the standard protocol (``protocols/paper.toml``: 100 steps = 10 τ) and the backprop
baseline from the same start on the same batches. Each point is a run folder of
``arsim.train.train`` (dense mode), kept under ``--runs``; a rerun reuses finished folders.

Draws test accuracy against frequency (top axis: the window in τ) and the mean angle between the
AR update and the backprop gradient, and writes the numbers as CSV next to the figure. Usage::

    python analysis/oscillation_frequency.py [--train-samples 10000] [--epochs 1] [--seed 0]
        [--runs runs/oscillation-frequency] [--out RUNS/oscillation-frequency.png]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from arsim.datasets import load_dataset  # noqa: E402
from arsim.plot import save  # noqa: E402
from arsim.spec import load_model, load_protocol, protocol_from_dict  # noqa: E402
from arsim.spec.schedule import Schedule
from arsim.train import train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

WINDOW = ("30 deg", "330 deg")
"""The relaxation window: five sixths of the cycle."""
WINDOWS_IN_TAU = (10, 5, 2, 1)


def oscillation_protocol(base, window_tau: int, waveform: str):
    """``base`` (the paper protocol) under an oscillation whose window lasts ``window_tau`` τ."""
    period_ms = window_tau * base.tau * 1e3 * 6 / 5
    data = {
        "name": f"osc-{waveform}-{window_tau}tau",
        "tau": f"{base.tau * 1e3!r} ms",
        "dt": f"{base.dt * 1e3!r} ms",
        "oscillation": {
            "frequency": f"{1e3 / period_ms!r} Hz",
            "waveform": waveform,
            "relaxation": list(WINDOW),
            "plasticity": "360 deg",
        },
    }
    protocol = protocol_from_dict(data, f"<{data['name']}>")
    return replace(
        protocol,
        learning_rate=base.learning_rate,
        feedback_learning_rate=base.feedback_learning_rate,
        batch_size=base.batch_size,
        batch_reduction=base.batch_reduction,
    )


def run_point(model, protocol, dataset, folder: Path, args) -> dict:
    """Train one point (or read a finished folder) and return its final epoch row."""
    status_file = folder / "status.json"
    if not (status_file.exists() and json.loads(status_file.read_text())["status"] == "completed"):
        train(
            model,
            protocol,
            dataset,
            folder,
            args.epochs,
            args.seed,
            train_samples=args.train_samples,
            metrics_every=20,
            progress=not args.quiet,
        )
    metrics = pd.read_csv(folder / "metrics.csv")
    return metrics[metrics.kind == "epoch"].iloc[-1].to_dict()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "paper-mlp.toml")
    parser.add_argument("--protocol", type=Path, default=ROOT / "protocols" / "paper.toml")
    parser.add_argument("--train-samples", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", type=Path, default=Path("runs") / "oscillation-frequency")
    parser.add_argument("--out", type=Path, help="figure file (default: in the --runs folder)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    out = args.out or args.runs / "oscillation-frequency.png"
    model, base = load_model(args.model), load_protocol(args.protocol)
    dataset = load_dataset("fashion-mnist", None, train_limit=args.train_samples)
    rows = []
    standard = run_point(model, base, dataset, args.runs / "standard", args)
    for waveform in ("square", "sine"):
        for window_tau in WINDOWS_IN_TAU:
            protocol = oscillation_protocol(base, window_tau, waveform)
            row = run_point(model, protocol, dataset, args.runs / protocol.name, args)
            frequency = protocol.oscillation.frequency
            schedule = Schedule(None, protocol)
            rows.append(
                {
                    "waveform": waveform,
                    "frequency_hz": frequency,
                    "window_tau": window_tau,
                    "relaxation_steps": schedule.phase_steps["relaxation"],
                    "ar_test_acc": row["ar_test_acc"],
                    "bp_test_acc": row["bp_test_acc"],
                    "angle_deg": row["angle_deg"],
                    "delta_to_standard_pp": 100 * (row["ar_test_acc"] - standard["ar_test_acc"]),
                }
            )
    table = pd.DataFrame(rows)
    table.attrs["standard"] = standard
    out.parent.mkdir(parents=True, exist_ok=True)
    csv = out.with_suffix(".csv")
    table.to_csv(csv, index=False)
    print(table.to_string(index=False))
    print(
        f"standard protocol: AR {standard['ar_test_acc']:.4f}, backprop "
        f"{standard['bp_test_acc']:.4f}, angle {standard['angle_deg']:.3g} deg"
    )

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for waveform, marker in (("square", "o"), ("sine", "s")):
        part = table[table.waveform == waveform]
        left.plot(part.frequency_hz, 100 * part.ar_test_acc, marker=marker, label=f"AR, {waveform}")
        right.plot(part.frequency_hz, part.angle_deg, marker=marker, label=f"{waveform} gate")
    left.axhline(100 * standard["ar_test_acc"], color="k", lw=1, label="AR, standard (10 τ)")
    left.axhline(100 * standard["bp_test_acc"], color="grey", ls="--", lw=1, label="backprop")
    right.axhline(standard["angle_deg"], color="k", lw=1, label="standard (10 τ)")
    frequencies = sorted(set(table.frequency_hz))
    window_of = dict(zip(table.frequency_hz, table.window_tau, strict=False))
    for axis in (left, right):
        axis.set_xscale("log")
        axis.set_xticks(frequencies, [f"{f:.3g}" for f in frequencies])
        axis.minorticks_off()
        axis.set_xlabel("oscillation frequency (Hz)")
        top = axis.twiny()
        top.set_xscale("log")
        top.set_xlim(axis.get_xlim())
        top.set_xticks(frequencies, [f"{window_of[f]:g} τ" for f in frequencies])
        top.minorticks_off()
        top.set_xlabel("relaxation window")
        axis.legend(fontsize=8)
    left.set_ylabel(f"test accuracy after {args.epochs} epoch(s) (%)")
    right.set_ylabel("mean angle AR update vs backprop (deg)")
    right.set_yscale("log")
    figure.suptitle(
        f"Fashion-MNIST, {args.train_samples} training samples, window 30°–330° of the cycle"
    )
    figure.tight_layout()
    print(f"wrote {save(figure, out, dpi=130)} and {csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

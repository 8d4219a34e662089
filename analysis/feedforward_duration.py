"""Accuracy and angle against the feedforward phase's length and the relaxation's onset.

With leaky forward dynamics (``τ_f dx̂/dt = −x̂ + f(a)`` from rest) a forward wave needs several
τ_f per layer to settle: how long must the feedforward phase last, and how early may the
relaxation start while the forward pass is still unfolding? Trains the paper network
(``models/paper-mlp.toml``) with AR under ``protocols/paper-leaky.toml`` (τ_f = 2 ms, dt = 1 ms,
relaxation 100 ms = 10 τ) on the same data budget at every point:

* feedforward phase of 1, 2, 3, 5 and 10 τ_f, the relaxation starting at its end;
* feedforward phase of 10 τ_f, the relaxation starting at 0 %, 25 %, 50 %, 75 % and 100 % of it
  (an earlier onset also lengthens the relaxation: it runs from the onset to the phase's end);

beside the instant sweep (``protocols/paper.toml``) and the backprop baseline from the same
start on the same batches. Each point is a run folder of ``arsim.train.train`` (dense mode)
under ``OUT/runs``; a rerun reuses finished folders. Also lists, per length, the residual the
forward wave leaves at the output of a linear chain of the network's depth (the Euler binomial
tail Σ_{j<k} C(n, j) η^j (1 − η)^(n−j), η = dt/τ_f, k = 4 hops). Usage::

    python analysis/feedforward_duration.py [--train-samples 2000] [--epochs 1] [--seed 0]
        [--out runs/feedforward-duration]

Writes ``OUT/feedforward-duration.png`` and the table of points ``OUT/feedforward-duration.csv``.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from math import comb
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from oscillation_frequency import run_point  # noqa: E402

from arsim.datasets import load_dataset  # noqa: E402
from arsim.plot import save  # noqa: E402
from arsim.spec import load_model, load_protocol, protocol_from_dict, read_toml  # noqa: E402
from arsim.spec.schedule import Schedule  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

LENGTHS_IN_TAU_F = (1, 2, 3, 5, 10)
"""Feedforward phases of the length series, in units of τ_f."""
ONSETS_PERCENT = (0, 25, 50, 75, 100)
"""Relaxation onsets of the onset series, in % of its feedforward phase."""
ONSET_LENGTH = 10
"""Feedforward phase of the onset series, in units of τ_f."""


def leaky_protocol(data: dict, source: Path, length: int, onset_percent: int = 100):
    """The leaky protocol ``data`` with a feedforward phase of ``length`` τ_f and an onset.

    Parameters
    ----------
    data : dict
        The TOML tables of a protocol with ``[feedforward] kind = "leaky"``.
    source : Path
        Its file (for error messages).
    length : int
        Feedforward phase in units of its τ_f (a whole number of steps).
    onset_percent : int
        Relaxation onset in % of the feedforward phase; 100 is the phase's end (no onset key,
        so the point is the length series' point of the same length).
    """
    tau_f_ms = load_protocol(source).forward.tau * 1e3
    data = copy.deepcopy(data)
    length_ms = length * tau_f_ms
    data["name"] = f"leaky-ff{length}tauf" + (
        f"-onset{onset_percent}" if onset_percent != 100 else ""
    )
    data["phases"]["feedforward"] = f"{length_ms!r} ms"
    data["feedforward"].pop("relaxation_onset", None)
    if onset_percent != 100:
        data["feedforward"]["relaxation_onset"] = f"{length_ms * onset_percent / 100!r} ms"
    return protocol_from_dict(data, str(source))


def forward_residual(steps: int, eta: float, hops: int) -> float:
    """Residual of the layer ``hops`` above the input of a linear chain after ``steps`` steps.

    The Euler binomial tail ``Σ_{j<hops} C(n, j) η^j (1 − η)^(n − j)`` (from rest, constant
    input).
    """
    return sum(comb(steps, j) * eta**j * (1 - eta) ** (steps - j) for j in range(hops))


def point_row(model, protocol, dataset, args, series: str, **where) -> dict:
    """Train (or reuse) one point and return its row of the table."""
    started = time.perf_counter()
    row = run_point(model, protocol, dataset, args.out / "runs" / protocol.name, args)
    seconds = time.perf_counter() - started
    schedule = Schedule(model, protocol)
    ff_steps = schedule.phase_steps["feedforward"]
    onset = schedule.onset_step(model.layers[-1].name)
    relaxation_steps = ff_steps + schedule.phase_steps["relaxation"] - onset
    residual = float("nan")
    if protocol.forward.leaky:
        residual = forward_residual(
            onset, protocol.dt / protocol.forward.tau, len(model.layers) - 1
        )
    return {
        "series": series,
        **where,
        "protocol": protocol.name,
        "feedforward_steps": ff_steps,
        "onset_steps": onset,
        "relaxation_steps": relaxation_steps,
        "output_residual_at_onset": residual,
        "ar_test_acc": row["ar_test_acc"],
        "bp_test_acc": row["bp_test_acc"],
        "angle_deg": row["angle_deg"],
        "seconds": round(seconds, 1),
    }


def points(model, leaky_file: Path, instant, dataset, args) -> pd.DataFrame:
    """Every point of the two series and the instant sweep, as a table."""
    data = read_toml(leaky_file)
    rows = [point_row(model, instant, dataset, args, "instant", length_tau_f=0, onset_percent=100)]
    for length in LENGTHS_IN_TAU_F:
        protocol = leaky_protocol(data, leaky_file, length)
        rows.append(
            point_row(
                model, protocol, dataset, args, "length", length_tau_f=length, onset_percent=100
            )
        )
    for percent in ONSETS_PERCENT:
        protocol = leaky_protocol(data, leaky_file, ONSET_LENGTH, percent)
        rows.append(
            point_row(
                model,
                protocol,
                dataset,
                args,
                "onset",
                length_tau_f=ONSET_LENGTH,
                onset_percent=percent,
            )
        )
    return pd.DataFrame(rows)


def draw(table: pd.DataFrame, args, path: Path) -> None:
    """Accuracy (top) and angle (bottom) against the length (left) and the onset (right)."""
    instant = table[table.series == "instant"].iloc[0]
    figure, axes = plt.subplots(2, 2, figsize=(11, 7.5), sharey="row")
    for column, (series, x, label) in enumerate(
        (
            ("length", "length_tau_f", "feedforward phase (τ_f = 2 ms), relaxation at its end"),
            ("onset", "onset_percent", f"relaxation onset (% of a {ONSET_LENGTH} τ_f phase)"),
        )
    ):
        part = table[table.series == series].sort_values(x)
        accuracy, angle = axes[0, column], axes[1, column]
        accuracy.plot(part[x], 100 * part.ar_test_acc, marker="o", label="AR, leaky forward")
        accuracy.plot(part[x], 100 * part.bp_test_acc, ls="--", color="grey", label="backprop")
        accuracy.axhline(
            100 * instant.ar_test_acc, color="k", lw=1, label="AR, instant sweep (paper)"
        )
        angle.plot(part[x], part.angle_deg, marker="o", label="AR, leaky forward")
        angle.axhline(instant.angle_deg, color="k", lw=1, label="AR, instant sweep (paper)")
        for axis in (accuracy, angle):
            axis.set_xticks(part[x])
            axis.set_xlabel(label)
            axis.legend(fontsize=8)
    axes[0, 0].set_ylabel(f"test accuracy after {args.epochs} epoch(s) (%)")
    axes[1, 0].set_ylabel("mean angle AR update vs backprop (deg)")
    angles = table.angle_deg.dropna()
    if len(angles) and angles.min() > 0 and angles.max() / angles.min() > 20:
        axes[1, 0].set_yscale("log")
    figure.suptitle(
        f"Paper network, leaky forward dynamics; Fashion-MNIST, {args.train_samples} training "
        f"images, {args.epochs} epoch(s), seed {args.seed}"
    )
    figure.tight_layout()
    save(figure, path, dpi=130)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "paper-mlp.toml")
    parser.add_argument("--protocol", type=Path, default=ROOT / "protocols" / "paper-leaky.toml")
    parser.add_argument("--instant", type=Path, default=ROOT / "protocols" / "paper.toml")
    parser.add_argument("--train-samples", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs") / "feedforward-duration")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    model, instant = load_model(args.model), load_protocol(args.instant)
    dataset = load_dataset("fashion-mnist", None, train_limit=args.train_samples)
    table = points(model, args.protocol, instant, dataset, args)
    args.out.mkdir(parents=True, exist_ok=True)
    csv, png = args.out / "feedforward-duration.csv", args.out / "feedforward-duration.png"
    table.to_csv(csv, index=False)
    draw(table, args, png)
    print(table.to_string(index=False))
    print(f"wrote {png} and {csv} in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

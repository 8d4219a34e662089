"""Spiking feedback in the paper's relaxation: the angle between AR's update and backprop.

The paper network (784-300-300-100-10, ReLU, its initial weights of seed 0) and the paper
protocol (dt 1 ms, τ 10 ms, 100 relaxation steps) on ``--minibatches`` minibatches of 64
Fashion-MNIST training images, each from the same initial weights: the period oracle
(``arsim.period_oracle``, the statement the dense mode equals) relaxes with the top-down
signal sent as spikes (``[spikes]``), and the angle between the weight update and the backprop
gradient is averaged over the minibatches. The grid: encoder (Poisson, integrate-and-fire) ×
``max_rate`` × ``synapse_tau`` × where the relaxation starts (``phases.start``: at x̂, as AR
does, or at 0) × ``scale`` (1 for every layer, the default; or gradient-sized: about the 99th
percentile of each layer's |∂L/∂x̂| at these weights, 0.07, 0.11, 0.3 and 2.5 for h1, h2, h3
and the output). Reference lines: the rate-coded relaxation (no spikes), and the same synaptic
filter without spikes (``encoder = "rate"``, the limit of both encoders).

Usage::

    python analysis/spike_relaxation.py [--minibatches 4] [--rates 10 30 100 300 1000]
        [--taus 2 5 20] [--out runs/spike-relaxation/spike-relaxation.png]

Writes the numbers as CSV next to the figure and prints, per encoder, start and scale, the
smallest rate whose angle is within 5° of the rate-coded relaxation's.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tomllib
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from arsim import (
    oracle,  # noqa: E402
    threads,  # noqa: E402
)
from arsim.datasets import load_dataset  # noqa: E402
from arsim.metrics import angle_degrees  # noqa: E402
from arsim.period_oracle import simulate_periods  # noqa: E402
from arsim.plot import save  # noqa: E402
from arsim.spec import load_model, protocol_from_dict  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GRADIENT_SCALE = {"h1": 0.07, "h2": 0.11, "h3": 0.3, "output": 2.5}
"""About the 99th percentile of |∂L/∂x̂| per sending layer (paper network, seed 0, 64 images)."""


def protocol(start: str, spikes: dict | None):
    """The paper protocol with ``phases.start`` and a ``[spikes]`` table (None: rates)."""
    data = tomllib.loads((ROOT / "protocols" / "paper.toml").read_text())
    data["phases"]["start"] = start
    if spikes is not None:
        data["spikes"] = spikes
    return protocol_from_dict(data, "paper-spiking.toml")


def angle(model, params, batches, proto) -> float:
    """Mean angle (degrees) between each minibatch's update and its backprop gradient."""
    angles = []
    for k, (inputs, targets) in enumerate(batches):
        _, (period,) = simulate_periods(model, proto, params, inputs, targets, seed_key=(k,))
        gradient = oracle.backprop(model, params, inputs, targets).W
        angles.append(angle_degrees([-c for c in period.changes], gradient))
    return float(np.mean(angles))


def measure(minibatches: int, rates, taus_ms) -> pd.DataFrame:
    """One row per configuration of the grid (see the module docstring)."""
    model = load_model(ROOT / "models" / "paper-mlp.toml")
    params = oracle.init_params(model, seed=0)
    dataset = load_dataset("fashion-mnist", train_limit=64 * minibatches)
    images, targets = dataset.train_images, dataset.one_hot(dataset.train_labels)
    batches = [
        (images[k * 64 : (k + 1) * 64], targets[k * 64 : (k + 1) * 64]) for k in range(minibatches)
    ]
    scales = {"1 (default)": {}, "gradient-sized": {"layer_scale": GRADIENT_SCALE}}
    rows = []
    for start in ("feedforward", "zero"):
        plain = angle(model, params, batches, protocol(start, None))
        rows.append({"encoder": "none (rates)", "start": start, "scale": "", "angle_deg": plain})
        for tau, (scale_name, scale) in itertools.product(taus_ms, scales.items()):
            base = {"synapse_tau": f"{tau} ms", **scale}
            limit = angle(model, params, batches, protocol(start, base | {"encoder": "rate"}))
            rows.append({"encoder": "rate (filter only)", "start": start, "scale": scale_name,
                         "synapse_tau_ms": tau, "angle_deg": limit})  # fmt: skip
            for encoder, rate in itertools.product(("poisson", "integrate-and-fire"), rates):
                spikes = base | {"encoder": encoder, "max_rate": f"{rate} Hz"}
                value = angle(model, params, batches, protocol(start, spikes))
                rows.append({"encoder": encoder, "start": start, "scale": scale_name,
                             "synapse_tau_ms": tau, "max_rate_hz": rate,
                             "angle_deg": value})  # fmt: skip
    return pd.DataFrame(rows)


def smallest_rates(table: pd.DataFrame, within: float = 5.0) -> pd.DataFrame:
    """Per encoder, start, scale and τ_s: the smallest rate within ``within``° of the rates."""
    reference = table[table.encoder == "none (rates)"].set_index("start").angle_deg
    spiking = table[table.encoder.isin(["poisson", "integrate-and-fire"])]
    rows = []
    for key, group in spiking.groupby(["encoder", "start", "scale", "synapse_tau_ms"]):
        close = group[group.angle_deg <= reference[key[1]] + within]
        smallest = close.max_rate_hz.min() if len(close) else np.nan
        names = ["encoder", "start", "scale", "synapse_tau_ms"]
        rows.append(dict(zip(names, key, strict=True), smallest_rate_hz=smallest,
                         rate_model_angle_deg=reference[key[1]]))  # fmt: skip
    return pd.DataFrame(rows)


def figure(table: pd.DataFrame):
    """Angle against max_rate: one panel per (start, scale), a line per encoder and τ_s."""
    spiking = table[table.encoder.isin(["poisson", "integrate-and-fire"])]
    panels = list(spiking.groupby(["start", "scale"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4), sharey=True)
    for ax, ((start, scale), part) in zip(np.atleast_1d(axes), panels, strict=True):
        for (encoder, tau), group in part.groupby(["encoder", "synapse_tau_ms"]):
            style = "o-" if encoder == "poisson" else "s--"
            ax.semilogx(group.max_rate_hz, group.angle_deg, style, ms=4,
                        label=f"{encoder}, τ_s {tau:g} ms")  # fmt: skip
        rates = table[(table.encoder == "none (rates)") & (table.start == start)].angle_deg
        ax.axhline(rates.iloc[0], color="black", lw=1, label="rates (no spikes)")
        ax.set_title(f"start {start}, scale {scale}", fontsize=9)
        ax.set_xlabel("max_rate (Hz)")
    np.atleast_1d(axes)[0].set_ylabel("angle to backprop (deg)")
    np.atleast_1d(axes)[-1].legend(fontsize=6)
    fig.tight_layout()
    return fig


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minibatches", type=int, default=4)
    parser.add_argument("--rates", type=float, nargs="+", default=[10, 30, 100, 300, 1000])
    parser.add_argument("--taus", type=float, nargs="+", default=[2, 5, 20])
    parser.add_argument(
        "--out", type=Path, default=Path("runs") / "spike-relaxation" / "spike-relaxation.png"
    )
    args = parser.parse_args(argv)
    threads.apply()  # one BLAS thread (arsim's policy): a busy machine does not collapse it
    table = measure(args.minibatches, args.rates, args.taus)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out.with_suffix(".csv"), index=False)
    smallest = smallest_rates(table)
    smallest.to_csv(args.out.with_name(args.out.stem + "-smallest.csv"), index=False)
    print(smallest.to_string(index=False))
    print(f"wrote {save(figure(table), args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

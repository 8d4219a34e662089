"""Gradient error against relaxation duration, from Brian2 traces.

How long must the relaxation last? Two panels, both simulated by arsim (dense mode) and read
from the recorded traces:

* left: a linear chain with the paper's sizes relaxing from rest; the relative residual of the
  layer k hops below the clamped output, against t/τ, drawn over the analytic curve
  e^{-t/τ} Σ_{j<k} (t/τ)^j / j! (dashed, the dt → 0 limit) and the exact Euler residual
  Σ_{j<k} C(n, j) η^j (1 − η)^(n−j) (dotted), which the simulation follows to rounding;
* right: the paper network (AR, starting at x̂): each hidden layer's relative error to the
  backprop gradient, and the angle between the weight update the network would make if the
  relaxation were cut at t and the backprop gradient.

Usage::

    python analysis/relaxation_duration.py [--model models/paper-mlp.toml]
        [--protocol protocols/paper.toml] [--steps 300] [--samples 64]
        [--out runs/relaxation-duration/relaxation-duration.png]

Also writes the numbers next to the figure as CSV (``.csv`` instead of ``.png``).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from math import comb, exp, factorial
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from arsim import oracle  # noqa: E402
from arsim.metrics import angle_degrees  # noqa: E402
from arsim.modes import set_codegen_target
from arsim.plot import save  # noqa: E402
from arsim.run import random_data, simulate
from arsim.spec import RecordSpec, load_model, load_protocol  # noqa: E402
from arsim.spec.schedule import Schedule

ROOT = Path(__file__).resolve().parents[1]


def relaxed_history(model, protocol, params, inputs, targets):
    """x of every hidden layer after n = 0 … N relaxation steps: {layer: (N+1, batch, n)}."""
    record = RecordSpec(
        variables=("x",), neurons=None, samples=None, phases=("feedforward", "relaxation")
    )
    protocol = replace(protocol, record=record, batch_size=len(inputs))
    result = simulate(model, protocol, inputs, targets, params.copy(), mode="dense")
    if result.diverged:
        raise SystemExit(f"relaxation_duration: {result.diverged}")
    traces = result.traces
    schedule = Schedule(None, protocol)
    n_relax, n_ff = (
        schedule.phase_steps["relaxation"],
        schedule.phase_steps["feedforward"],
    )
    history = {}
    for index, layer in enumerate(model.layers[1:-1], start=1):
        rows = traces[(traces.layer == layer.name) & (traces.variable == "x")]
        step = np.rint(rows.t.to_numpy() / protocol.dt).astype(int) - 1
        m = step - rows["sample"].to_numpy() * schedule.sample_steps - n_ff + 1
        keep = (m >= 0) & (m <= n_relax)
        values = np.zeros((n_relax + 1, len(inputs), layer.size))
        values[m[keep], rows["sample"].to_numpy()[keep], rows.neuron.to_numpy()[keep]] = rows.value[
            keep
        ]
        history[index] = values
    return history


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "paper-mlp.toml")
    parser.add_argument("--protocol", type=Path, default=ROOT / "protocols" / "paper.toml")
    parser.add_argument("--steps", type=int, default=300, help="relaxation steps to follow")
    parser.add_argument("--samples", type=int, default=64, help="random samples (one minibatch)")
    parser.add_argument(
        "--out", type=Path, default=Path("runs") / "relaxation-duration" / "relaxation-duration.png"
    )
    args = parser.parse_args(argv)
    set_codegen_target("numpy")
    model, protocol = load_model(args.model), load_protocol(args.protocol)
    protocol = replace(protocol, relaxation=args.steps * protocol.dt)
    inputs, targets = random_data(model, args.samples, model.seed)
    rows = []

    # Linear chain from rest: the analytic residual.
    linear_layers = tuple(replace(layer, activation="linear") for layer in model.layers)
    chain = replace(model, layers=linear_layers, name=f"{model.name}-linear")
    chain_params = oracle.init_params(chain)
    chain_history = relaxed_history(
        chain, replace(protocol, relaxation_start="zero"), chain_params, inputs, targets
    )
    exact = oracle.backprop(chain, chain_params, inputs, targets).activity
    n_hidden = len(model.layers) - 2
    for layer, values in chain_history.items():
        hops = n_hidden + 1 - layer
        error = np.linalg.norm(values - exact[layer], axis=2) / np.linalg.norm(exact[layer], axis=1)
        for n in range(args.steps + 1):
            schedule = Schedule(None, protocol)
            t = n * protocol.dt / schedule.tau_of(model.layers[layer].name)
            analytic = exp(-t) * sum(t**j / factorial(j) for j in range(hops))
            eta = protocol.dt / schedule.tau_of(model.layers[layer].name)
            euler = sum(comb(n, j) * eta**j * (1 - eta) ** (n - j) for j in range(hops))
            rows.append(
                {
                    "network": "linear chain from rest",
                    "layer": model.layers[layer].name,
                    "hops": hops,
                    "t_over_tau": t,
                    "relative_error": float(error[n].mean()),
                    "analytic": analytic,
                    "euler": euler,
                }
            )

    # The paper network (AR starts at x̂): error per layer and the update's angle.
    params = oracle.init_params(model)
    history = relaxed_history(model, protocol, params, inputs, targets)
    grads = oracle.backprop(model, params, inputs, targets)
    fwd = oracle.forward(model, params, inputs)
    top = grads.activity[-1]  # the clamped output
    for n in range(args.steps + 1):
        activities = [fwd.xhat[0]] + [history[k][n] for k in range(1, n_hidden + 1)] + [top]
        update, _ = oracle.weight_gradients(model, fwd, activities, params)
        angle = angle_degrees(update, grads.W)
        t = n * schedule.eta_x
        for layer in range(1, n_hidden + 1):
            error = np.linalg.norm(history[layer][n] - grads.activity[layer], axis=1)
            error /= np.linalg.norm(grads.activity[layer], axis=1)
            rows.append(
                {
                    "network": model.name,
                    "layer": model.layers[layer].name,
                    "hops": n_hidden + 1 - layer,
                    "t_over_tau": t,
                    "relative_error": float(error.mean()),
                    "analytic": np.nan,
                    "angle_deg": angle,
                }
            )
    table = pd.DataFrame(rows)

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for (layer, hops), group in table[table.network == "linear chain from rest"].groupby(
        ["layer", "hops"]
    ):
        (line,) = left.semilogy(
            group.t_over_tau, group.relative_error, label=f"{layer} ({hops} hops)"
        )
        left.semilogy(group.t_over_tau, group.analytic, "--", color=line.get_color(), lw=1)
        left.semilogy(group.t_over_tau, group.euler, ":", color="k", lw=0.8)
    left.set(
        title=f"linear chain from rest, dt/τ = {schedule.eta_x:g}\n"
        "(dashed: analytic dt→0; dotted: exact Euler)",
        xlabel="t / τ",
        ylabel="relative residual",
        ylim=(1e-12, 2),
    )
    left.legend(fontsize=8)
    paper = table[table.network == model.name]
    for layer, group in paper.groupby("layer"):
        right.semilogy(group.t_over_tau, group.relative_error, label=f"{layer} relative error")
    angle = paper.drop_duplicates("t_over_tau")
    twin = right.twinx()
    twin.semilogy(angle.t_over_tau, angle.angle_deg, "k:", label="update angle (°)")
    twin.set_ylabel("angle of the update to backprop (°)")
    right.axvline(10, color="0.6", lw=0.8)
    right.set(
        title=f"{model.name}: AR from x̂ (dotted: angle, right axis)",
        xlabel="t / τ",
        ylabel="relative error to backprop",
    )
    right.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    save(fig, args.out, dpi=110)
    table.to_csv(args.out.with_suffix(".csv"), index=False)
    at_10 = paper[np.isclose(paper.t_over_tau, 10)]
    for _, row in at_10.iterrows():
        error, angle = row.relative_error, row.angle_deg
        print(f"{model.name} {row.layer}: relative error at 10 τ {error:.3g}, angle {angle:.3g}°")
    print(f"wrote {args.out} and {args.out.with_suffix('.csv')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

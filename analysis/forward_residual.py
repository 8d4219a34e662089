"""The forward wave through a chain: residual of each layer against time, from Brian2 traces.

A linear chain with the paper's sizes (784-300-300-300-10, no biases) runs leaky forward
dynamics (``τ_f dx̂/dt = −x̂ + W x̂_below``) from rest under a constant stimulus, simulated by
arsim's dense mode. The relative residual ``|x̂_k(t) − x̂_k*| / |x̂_k*|`` of the layer ``k``
hops above the input is drawn against ``t/τ_f`` over the analytic curve
``e^{−t/τ_f} Σ_{j<k} (t/τ_f)^j / j!`` (dashed, the dt → 0 limit) and the Euler step's exact
residual ``Σ_{j<k} C(n, j) η^j (1 − η)^{n−j}`` (dotted, ``η = dt/τ_f``), which the simulation
follows to rounding: a layer k hops deep needs about k τ_f more than the one below it.

Usage::

    python analysis/forward_residual.py [--tau-f "5 ms"] [--dt "1 ms"] [--duration "60 ms"]
        [--samples 4] [--out runs/forward-residual]

Writes ``forward-residual.png`` and ``forward-residual.csv`` (t, layer, hops, simulated,
euler, analytic) into ``--out``.
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
from arsim.modes import set_codegen_target  # noqa: E402
from arsim.run import simulate  # noqa: E402
from arsim.spec import RecordSpec, model_from_dict, protocol_from_dict  # noqa: E402
from arsim.spec.schedule import Schedule  # noqa: E402

SIZES = [784, 300, 300, 300, 10]


def linear_chain(sizes: list[int]):
    """A chain of linear layers without biases (the closed form's network)."""
    layers = [{"name": "input", "size": sizes[0]}]
    layers += [
        {"name": f"l{k}", "size": size, "activation": "linear"}
        for k, size in enumerate(sizes[1:], 1)
    ]
    connections = [
        {"source": a["name"], "target": b["name"]} for a, b in zip(layers, layers[1:], strict=False)
    ]
    data = {"name": "linear-chain", "layers": layers, "connections": connections}
    data["defaults"] = {"bias": False}
    data["init"] = {"variance": 1.0 / sizes[0]}
    return model_from_dict(data, "linear-chain")


def forward_protocol(tau_f: str, dt: str, duration: str, batch: int):
    """Leaky forward dynamics for ``duration``, one relaxation step, every x̂ recorded."""
    data = {
        "tau": "10 ms",
        "dt": dt,
        "phases": {"feedforward": duration, "relaxation": dt, "update": dt},
        "feedforward": {"kind": "leaky", "tau": tau_f},
        "learning": {"rate": 0.0, "feedback_rate": 0.0, "batch_size": batch},
    }
    record = RecordSpec(variables=("xhat",), neurons=None, samples=None, phases=("feedforward",))
    return replace(protocol_from_dict(data, "forward-residual"), record=record)


def residual_table(model, protocol, seed: int = 0) -> pd.DataFrame:
    """Simulated, Euler and analytic residual of every layer at every step of the phase."""
    params = oracle.init_params(model, seed=seed)
    rng = np.random.default_rng(seed)
    inputs = rng.uniform(0.0, 1.0, (protocol.batch_size, model.input_size))
    targets = np.zeros((protocol.batch_size, model.output.size))
    result = simulate(model, protocol, inputs, targets, params.copy(), mode="dense")
    settled = oracle.forward(model, params, inputs).xhat
    traces = result.traces.copy()
    period = Schedule(None, protocol).sample_steps  # each sample has its own period
    traces["n"] = np.rint(traces.t / protocol.dt).astype(int) - traces["sample"] * period
    eta = protocol.dt / protocol.forward.tau
    rows = []
    for hops, layer in enumerate(model.layers[1:], 1):
        part = traces[traces.layer == layer.name]
        values = part.pivot_table(index=["n", "sample"], columns="neuron", values="value")
        for n, block in values.groupby(level="n"):
            error = np.linalg.norm(block.to_numpy() - settled[hops])
            s = n * eta  # t / τ_f after n steps
            rows.append(
                {
                    "t": n * protocol.dt,
                    "t_over_tau_f": s,
                    "layer": layer.name,
                    "hops": hops,
                    "simulated": error / np.linalg.norm(settled[hops]),
                    "euler": sum(comb(n, j) * eta**j * (1 - eta) ** (n - j) for j in range(hops)),
                    "analytic": exp(-s) * sum(s**j / factorial(j) for j in range(hops)),
                }
            )
    return pd.DataFrame(rows)


def draw(table: pd.DataFrame, path: Path, eta: float) -> None:
    """Residual against t/τ_f per layer: simulated (dots), Euler (dotted), analytic (dashed)."""
    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    for hops, rows in table.groupby("hops"):
        color = f"C{hops - 1}"
        axes.plot(
            rows.t_over_tau_f,
            rows.simulated,
            "o",
            ms=3,
            color=color,
            label=f"{hops} hop{'s' * (hops > 1)}",
        )
        axes.plot(rows.t_over_tau_f, rows.euler, ":", color=color)
        axes.plot(rows.t_over_tau_f, rows.analytic, "--", color=color, lw=0.8)
    axes.set_yscale("log")
    axes.set_ylim(max(table.simulated[table.simulated > 0].min() * 0.3, 1e-16), 2)
    axes.set_xlabel("t / τ_f")
    axes.set_ylabel("|x̂_k − x̂_k*| / |x̂_k*|")
    axes.set_title(
        f"Forward wave through a linear chain (η_f = {eta:g}): Brian2 (dots), "
        "Euler (dotted), dt → 0 (dashed)",
        fontsize=8,
    )
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=130)
    plt.close(figure)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tau-f", default="5 ms", help="forward time constant (default 5 ms)")
    parser.add_argument("--dt", default="1 ms", help="step (default 1 ms)")
    parser.add_argument("--duration", default="60 ms", help="forward phase (default 60 ms)")
    parser.add_argument("--samples", type=int, default=4, help="stimuli (default 4)")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="layer sizes")
    parser.add_argument("--out", type=Path, default=Path("runs/forward-residual"))
    args = parser.parse_args(argv)
    set_codegen_target("numpy")
    model = linear_chain([int(size) for size in args.sizes.split(",")])
    protocol = forward_protocol(args.tau_f, args.dt, args.duration, args.samples)
    table = residual_table(model, protocol)
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "forward-residual.csv", index=False)
    draw(table, args.out / "forward-residual.png", protocol.dt / protocol.forward.tau)
    worst = float((table.simulated - table.euler).abs().max())
    print(f"forward_residual: wrote {args.out}; largest |simulated − Euler| = {worst:.1e}")


if __name__ == "__main__":
    main()

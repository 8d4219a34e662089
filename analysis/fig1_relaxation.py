"""Figure 1 of the paper: the relaxation converges to the backprop gradients.

Left: relative error ``|x_l − ∂L/∂x̂_l| / |∂L/∂x̂_l|`` of every hidden layer against the
relaxation step (η_x = dt/τ = 0.1). Right: the error of all hidden layers together against the
step for several η_x = dt/τ. Computed with the NumPy oracle (``oracle.relax(...,
keep_history=True)``) on a minibatch of real Fashion-MNIST images; no training needed (or the
weights of a run with ``--weights``). Usage::

    python analysis/fig1_relaxation.py [--model models/paper-mlp.toml] [--batch 64]
        [--steps 200] [--weights RUN_DIR/weights/final.npz]
        [--out FIG.png]

Default output: ``RUN_DIR/figures/fig1-relaxation.png`` for ``--weights
RUN_DIR/weights/final.npz``, else ``runs/fig1-relaxation/fig1-relaxation.png``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from arsim import load_model, oracle  # noqa: E402
from arsim.datasets import load_dataset  # noqa: E402
from arsim.plot import save  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ETAS = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
FLOOR = 1e-16


def errors(model, params, x, t, steps, eta):
    """Per-step relative error of each hidden layer, and of all of them together."""
    relaxed = oracle.relax(model, params, x, t, steps, eta, keep_history=True)
    exact = oracle.backprop(model, params, x, t).activity
    hidden = range(1, len(model.layers) - 1)
    per_layer = np.array(
        [
            [np.linalg.norm(state[k] - exact[k]) / np.linalg.norm(exact[k]) for k in hidden]
            for state in relaxed.history
        ]
    )
    total = np.array(
        [
            np.sqrt(sum(np.sum((state[k] - exact[k]) ** 2) for k in hidden))
            / np.sqrt(sum(np.sum(exact[k] ** 2) for k in hidden))
            for state in relaxed.history
        ]
    )
    return per_layer, total


def default_out(weights: Path | None) -> Path:
    """The figure's default path: in the run folder whose weights are read, else in runs/."""
    if weights is not None and weights.parent.name == "weights":
        return weights.parent.parent / "figures" / "fig1-relaxation.png"
    return Path("runs") / "fig1-relaxation" / "fig1-relaxation.png"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "paper-mlp.toml")
    parser.add_argument("--batch", type=int, default=64, help="test images used (default 64)")
    parser.add_argument("--steps", type=int, default=200, help="relaxation steps (default 200)")
    parser.add_argument("--weights", type=Path, help="npz of weights (default: initial draw)")
    parser.add_argument("--out", type=Path, help="figure file (default: see the usage)")
    args = parser.parse_args(argv)
    out = args.out or default_out(args.weights)
    model = load_model(args.model)
    data = load_dataset("fashion-mnist", test_limit=args.batch, train_limit=0)
    x, t = data.test_images, data.one_hot(data.test_labels)
    params = oracle.init_params(model)
    if args.weights:
        with np.load(args.weights) as arrays:
            params.W = [arrays[f"W{k}"] for k in range(len(params.W))]
    names = [layer.name for layer in model.layers[1:-1]]

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    per_layer, _ = errors(model, params, x, t, args.steps, 0.1)
    for k, name in enumerate(names):
        left.semilogy(np.maximum(per_layer[:, k], FLOOR), label=f"{name} (layer {k + 1})")
        print(
            f"eta_x=0.1 {name}: step 100 {per_layer[100, k]:.3g}, step 200 "
            f"{per_layer[min(200, args.steps), k]:.3g}"
        )
    left.axvline(100, color="grey", ls=":", lw=1)
    left.set(
        xlabel="relaxation step", ylabel="relative error to backprop", title="per layer, dt/τ = 0.1"
    )
    left.legend()
    for eta in ETAS:
        _, total = errors(model, params, x, t, args.steps, eta)
        right.semilogy(np.maximum(total, FLOOR), label=f"dt/τ = {eta:g}")
        print(f"eta_x={eta:g}: all hidden layers, step 100 {total[100]:.3g}")
    right.axvline(100, color="grey", ls=":", lw=1)
    right.set(
        xlabel="relaxation step",
        ylabel="relative error (all hidden layers)",
        title="effect of dt/τ",
        ylim=(FLOOR / 2, 10),
    )
    right.legend(fontsize=8)
    source = "trained weights" if args.weights else "initial weights"
    fig.suptitle(
        f"AR relaxation vs backprop: {model.name}, {len(x)} Fashion-MNIST test images, {source}",
        fontsize=10,
    )
    fig.tight_layout()
    print(f"wrote {save(fig, out, dpi=110)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

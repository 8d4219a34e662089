"""How well a spike code carries a constant signal: error of the received signal against rate.

For each encoder (Poisson, integrate-and-fire), synaptic time constant τ_s and population N,
``arsim.components.spikes.transmit`` sends 2,000 constant values spread over (−scale, scale)
(scale 1) for 10 τ_s at dt = 0.1 ms; the error is the RMS of ŝ − v over the values and the last
5 τ_s. The dashed lines are the closed forms: Poisson, the square root of Campbell's variance
averaged over the values, √(E|v| / (2 max_rate τ_s N)); integrate-and-fire, the bound 1 /
(max_rate τ_s N) (the RMS of its sawtooth lies below it). A third panel shows ŝ for v = 0.3
against time at 300 Hz and τ_s 20 ms.

Usage::

    python analysis/spike_code.py [--rates 10 30 100 300 1000] [--taus 2 5 20]
        [--out runs/spike-code/spike-code.png]

Writes the numbers as CSV next to the figure.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from arsim import threads  # noqa: E402
from arsim.components.spikes import transmit  # noqa: E402
from arsim.plot import save  # noqa: E402
from arsim.spec.spikes import SpikeCode  # noqa: E402

DT = 1e-4  # s


def errors(rates, taus_ms, populations, seed: int = 0) -> pd.DataFrame:
    """RMS error of ŝ − v per encoder, max_rate (Hz), τ_s (ms) and population."""
    values = np.linspace(-0.95, 0.95, 2000)
    rows = []
    for encoder in ("poisson", "integrate-and-fire"):
        for tau_ms in taus_ms:
            for population in populations:
                for rate in rates:
                    code = SpikeCode(encoder, rate, 1.0, tau_ms * 1e-3, population)
                    steps = int(round(10 * code.synapse_tau / DT))
                    rng = np.random.default_rng([seed, int(rate), int(tau_ms * 10), population])
                    received = transmit(code, values, DT, steps, rng=rng)[steps // 2 :]
                    if encoder == "poisson":
                        predicted = np.sqrt(np.mean([code.variance(v) for v in values]))
                    else:
                        predicted = code.error_bound()
                    rows.append(
                        {
                            "encoder": encoder,
                            "max_rate_hz": rate,
                            "synapse_tau_ms": tau_ms,
                            "population": population,
                            "rms_error": float(np.sqrt(np.mean((received - values) ** 2))),
                            "predicted": float(predicted),
                        }
                    )
    return pd.DataFrame(rows)


def figure(table: pd.DataFrame):
    """Error against max_rate (one panel per encoder) and a trace of ŝ."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    for ax, encoder in zip(axes[:2], ("poisson", "integrate-and-fire"), strict=True):
        part = table[table.encoder == encoder]
        for (tau, population), group in part.groupby(["synapse_tau_ms", "population"]):
            line = ax.loglog(
                group.max_rate_hz, group.rms_error, "o-", label=f"τ_s {tau:g} ms, N {population}"
            )
            ax.loglog(group.max_rate_hz, group.predicted, "--", color=line[0].get_color(), lw=1)
        ax.set_title(f"{encoder}: RMS of ŝ − v (dashed: closed form)")
        ax.set_xlabel("max_rate (Hz)")
        ax.set_ylabel("RMS error (scale 1)")
        ax.legend(fontsize=7)
    ax = axes[2]
    steps = 2000
    time_ms = np.arange(1, steps + 1) * DT * 1e3
    for encoder in ("poisson", "integrate-and-fire"):
        code = SpikeCode(encoder, 300.0, 1.0, 0.020)
        trace = transmit(code, np.array([0.3]), DT, steps, rng=np.random.default_rng(0))
        ax.plot(time_ms, trace[:, 0], label=encoder)
    ax.axhline(0.3, color="black", lw=1, ls=":", label="v = 0.3")
    ax.set_title("received ŝ, 300 Hz, τ_s 20 ms")
    ax.set_xlabel("time (ms)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[10, 30, 100, 300, 1000])
    parser.add_argument("--taus", type=float, nargs="+", default=[2, 5, 20])
    parser.add_argument("--populations", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--out", type=Path, default=Path("runs") / "spike-code" / "spike-code.png")
    args = parser.parse_args(argv)
    threads.apply()  # one BLAS thread (arsim's policy): a busy machine does not collapse it
    table = errors(args.rates, args.taus, args.populations)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out.with_suffix(".csv"), index=False)
    print(f"wrote {save(figure(table), args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Learning curves of exact AR and the unfrozen-feedforward variants in one figure.

Reads run folders (or sweep folders: every run below them), names each run's variant and
setting as :mod:`unfrozen_variants` does, and draws AR's test accuracy and the angle between
AR's update and the backprop gradient against the training samples seen, one line per variant
(seed 0 unless ``--seed``), with backprop's accuracy from the exact AR run dashed. Usage::

    python analysis/unfrozen_curves.py RUN_OR_SWEEP_FOLDER [...] [--seed 0]
        [--variants "exact AR" "f' at current" ...] --out FIGURE.png

Writes the figure and the curves as CSV beside it (``.csv`` instead of ``.png``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from unfrozen_variants import ORDER, setting_name, variant_name  # noqa: E402


def curves(folders: list[Path], seed: int) -> pd.DataFrame:
    """Metrics rows of every finished run of ``seed`` below ``folders``, with its variant and
    setting (columns ``variant``, ``setting``, ``samples``, ``ar_test_acc``, ``bp_test_acc``,
    ``angle_deg``)."""
    frames = []
    for folder in folders:
        for metrics_file in sorted(Path(folder).rglob("metrics.csv")):
            run = metrics_file.parent
            if ".partial-" in run.name or not (run / "config.json").is_file():
                continue
            config = json.loads((run / "config.json").read_text())
            if config.get("seed") != seed:
                continue
            metrics = pd.read_csv(metrics_file)
            rows = metrics[metrics["kind"].isin(["batch", "epoch"])]
            rows = rows.drop_duplicates("samples", keep="last")
            rows = rows.assign(variant=variant_name(config), setting=setting_name(config))
            frames.append(rows[["setting", "variant", "samples", *COLUMNS]])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


COLUMNS = ("ar_test_acc", "bp_test_acc", "angle_deg")


def draw(table: pd.DataFrame, variants: list[str] | None = None):
    """Accuracy (left) and angle (right) against samples, one line per variant."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    known = [v for v in ORDER if v in set(table["variant"])]
    order = variants or known + sorted(set(table["variant"]) - set(known))
    for index, variant in enumerate(order):
        part = table[table["variant"] == variant].sort_values("samples")
        if part.empty:
            continue
        style = dict(color=f"C{index % 10}", label=variant, lw=1.2)
        left.plot(part["samples"], 100 * part["ar_test_acc"], **style)
        right.plot(part["samples"], part["angle_deg"], **style)
        if variant == "exact AR":
            left.plot(part["samples"], 100 * part["bp_test_acc"], "k--", lw=1, label="backprop")
    settings = sorted(set(table["setting"]))
    left.set(xlabel="training samples", ylabel="test accuracy (%)")
    right.set(xlabel="training samples", ylabel="angle to backprop (deg)", ylim=(0, None))
    left.legend(fontsize=7)
    fig.suptitle("; ".join(settings), fontsize=9)
    fig.tight_layout()
    return fig


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", type=Path, nargs="+", help="run or sweep folders")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", nargs="*", default=None, help="only these, in this order")
    parser.add_argument("--out", type=Path, required=True, help="figure file (.png)")
    args = parser.parse_args(argv)
    table = curves(args.folders, args.seed)
    if table.empty:
        print(f"unfrozen_curves: no finished run of seed {args.seed} in the folders")
        return 2
    if args.variants:
        table = table[table["variant"].isin(args.variants)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    draw(table, args.variants).savefig(args.out, dpi=120)
    table.to_csv(args.out.with_suffix(".csv"), index=False)
    print(f"wrote {args.out} and {args.out.with_suffix('.csv')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Table of the unfrozen-feedforward variants: accuracy and angle against exact AR and backprop.

Reads the run folders of one or more sweep folders (``arsim sweep sweeps/unfrozen-variants.toml``
and ``sweeps/unfrozen-variants-continuous.toml``) or plain run folders, names each run's variant
from its ``config.json`` (the connections' ``derivative_at`` and ``update_uses``, the protocol's
``[plasticity] continuous``) and writes one table: per variant, AR's test accuracy mean ± std
over the seeds with its min–max, backprop's, AR − backprop, the mean angle between AR's update
and the backprop gradient, and the difference to exact AR. It then states whether the follow-up
paper's conclusion, "relaxing the frozen feedforward pass does not damage performance", holds:
every variant's mean AR accuracy at most ``--tolerance`` percentage points below exact AR's and
no run diverged or failed. Usage::

    python analysis/unfrozen_variants.py SWEEP_OR_RUN_FOLDER [...] [--tolerance 1.0]
        [--out FIRST_FOLDER/unfrozen-variants-table.md]

Writes the markdown table and a CSV beside it (``.csv`` instead of ``.md``). A variant and seed
found more than once counts once: a finished run over a point that failed or never ran.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from arsim.spec import model_from_dict, protocol_from_dict

ORDER = (
    "exact AR",
    "f' at current",
    "f' at upper",
    "update with current x",
    "continuous plasticity",
    "f' at current + update with current x + continuous plasticity",
)
"""Variants in the table's order (others follow, sorted)."""
STATISTICS = ("ar", "bp", "diff", "angle")


def collect_runs(folders: list[Path]) -> list[dict]:
    """One row (:func:`read_run`) per run in ``folders``.

    A folder holding ``status.json`` is a run; a sweep folder (``sweep.json``) gives one row
    per point, also for points that failed without a finished run folder (status ``failed``,
    variant from the point's resolved tables, the message of its outcome file); any other
    folder gives the run folders below it (temporary ``.<name>.partial-<pid>`` folders
    skipped).
    """
    rows = []
    for folder in folders:
        if (folder / "status.json").is_file():
            rows.append(read_run(folder))
        elif (folder / "sweep.json").is_file():
            for point in sorted((folder / "points").glob("*.json")):
                if not point.name.endswith(".outcome.json"):
                    rows.append(read_point(folder / "points", json.loads(point.read_text())))
        else:
            for status in sorted(folder.rglob("status.json")):
                if ".partial-" not in status.parent.name:
                    rows.append(read_run(status.parent))
    return rows


def latest_results(runs: pd.DataFrame) -> pd.DataFrame:
    """One run per variant and seed: a finished run (completed or diverged) over a point
    that failed or never ran, so that a rerun in another folder replaces the lost one."""
    finished = runs["status"].isin(["completed", "diverged"])
    order = runs.assign(_finished=finished).sort_values("_finished", kind="stable")
    kept = order.drop_duplicates(["variant", "seed"], keep="last").drop(columns="_finished")
    return kept.sort_index()


def read_point(points: Path, payload: dict) -> dict:
    """The row of a sweep point (``points/<id>.json``): its run, or a failed or not-run row.

    A point without a finished run is ``failed`` when its outcome file says it ended, else
    ``not run`` (interrupted or still to run).
    """
    run = points / payload["id"]
    if (run / "status.json").is_file():
        return read_run(run)
    outcome_file = points / f"{payload['id']}.outcome.json"
    ended = outcome_file.is_file()
    outcome = json.loads(outcome_file.read_text()) if ended else {}
    model = model_from_dict(payload["model"], payload.get("model_source", "model"))
    protocol = protocol_from_dict(payload["protocol"], payload.get("protocol_source", "protocol"))
    config = {"model": model.to_dict(), "protocol": protocol.to_dict()}
    return {
        "variant": variant_name(config),
        "seed": payload.get("seed"),
        "status": "failed" if ended else "not run",
        "message": outcome.get("message") or "no finished run in the point's folder",
        "folder": str(run),
        "ar_test_acc": np.nan,
        "bp_test_acc": np.nan,
        "angle_deg": np.nan,
    }


def variant_name(config: dict) -> str:
    """The variant of a run from its ``config.json``: 'exact AR' or its departures, joined.

    Parameters
    ----------
    config : dict
        The run's configuration (``model.connections[*].derivative_at``, ``update_uses`` and
        ``protocol.plasticity.continuous``; missing keys mean exact AR's choice).
    """
    connections = config.get("model", {}).get("connections", [])
    parts = []
    for key, label in (("derivative_at", "f' at {}"), ("update_uses", "update with {} x")):
        values = sorted({c.get(key, "stored") for c in connections} or {"stored"})
        value = values[0] if len(values) == 1 else "mixed"
        if value != "stored":
            parts.append(label.format(value))
    protocol = config.get("protocol", {})
    if protocol.get("plasticity", {}).get("continuous", False):
        parts.append("continuous plasticity")
    if protocol.get("forward", {}).get("kind", "instant") != "instant":
        parts.append(f"{protocol['forward']['kind']} forward")
    return " + ".join(parts) or "exact AR"


def read_run(folder: Path) -> dict:
    """Variant, seed, status and final test accuracies and angle of one run folder.

    Accuracies and the angle come from the last ``epoch`` row of ``metrics.csv`` (NaN when the
    run did not complete).
    """
    status = json.loads((folder / "status.json").read_text())
    config_file = folder / "config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    row = {
        "variant": variant_name(config),
        "seed": config.get("seed"),
        "status": status.get("status"),
        "message": status.get("message"),
        "folder": str(folder),
        "ar_test_acc": np.nan,
        "bp_test_acc": np.nan,
        "angle_deg": np.nan,
    }
    if row["status"] == "completed" and (folder / "metrics.csv").is_file():
        metrics = pd.read_csv(folder / "metrics.csv")
        epochs = metrics[metrics["kind"] == "epoch"]
        last = (epochs if not epochs.empty else metrics).iloc[-1]
        for column in ("ar_test_acc", "bp_test_acc", "angle_deg"):
            row[column] = float(last[column])
    return row


def _spread(values: pd.Series, prefix: str) -> dict:
    """Mean, std (ddof 1; 0 for one value), min and max of ``values`` as ``prefix_*``."""
    values = values.dropna()
    std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return {
        f"{prefix}_mean": float(values.mean()) if len(values) else np.nan,
        f"{prefix}_std": std,
        f"{prefix}_min": float(values.min()) if len(values) else np.nan,
        f"{prefix}_max": float(values.max()) if len(values) else np.nan,
    }


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per variant: counts, and mean/std/min/max of accuracy (in %), AR − BP, angle.

    ``delta_to_exact_pp`` is the variant's mean AR accuracy minus exact AR's, in percentage
    points (NaN without exact AR runs).
    """
    runs = runs.assign(
        ar=100 * runs["ar_test_acc"],
        bp=100 * runs["bp_test_acc"],
        diff=100 * (runs["ar_test_acc"] - runs["bp_test_acc"]),
        angle=runs["angle_deg"],
    )
    known = [v for v in ORDER if v in set(runs["variant"])]
    variants = known + sorted(set(runs["variant"]) - set(known))
    rows = []
    for variant in variants:
        part = runs[runs["variant"] == variant]
        row = {
            "variant": variant,
            "runs": len(part),
            "completed": int((part["status"] == "completed").sum()),
            "diverged": int((part["status"] == "diverged").sum()),
            "failed": int((part["status"] == "failed").sum()),
            "not_run": int((part["status"] == "not run").sum()),
            "seeds": " ".join(str(s) for s in sorted(part["seed"].dropna().astype(int))),
        }
        for name in STATISTICS:
            row |= _spread(part[name], name)
        rows.append(row)
    table = pd.DataFrame(rows)
    exact = table.loc[table["variant"] == "exact AR", "ar_mean"]
    table["delta_to_exact_pp"] = table["ar_mean"] - (exact.iloc[0] if len(exact) else np.nan)
    return table


def verdict(table: pd.DataFrame, tolerance: float) -> tuple[bool | None, str]:
    """Whether relaxing the frozen feedforward pass does not damage performance.

    It holds when no run diverged or failed and every variant's mean AR test accuracy is at
    most ``tolerance`` percentage points below exact AR's. Returns None (cannot be judged)
    without exact AR or without another variant.
    """
    if "exact AR" not in set(table["variant"]) or len(table) < 2:
        return None, "cannot be judged: the runs need exact AR and at least one variant"
    others = table[table["variant"] != "exact AR"]
    lost = int(table["diverged"].sum() + table["failed"].sum())
    within = others["delta_to_exact_pp"].fillna(-np.inf) >= -tolerance
    holds = lost == 0 and bool(within.all())
    measured = others.dropna(subset=["delta_to_exact_pp"])
    worst = "no variant has a completed run"
    if not measured.empty:
        row = measured.loc[measured["delta_to_exact_pp"].idxmin()]
        worst = f"the largest drop is {row['variant']} at {row['delta_to_exact_pp']:+.2f} pp"
    text = (
        f"'Relaxing the frozen feedforward pass does not damage performance' "
        f"{'HOLDS' if holds else 'DOES NOT HOLD'} here (criterion: every variant's mean AR test "
        f"accuracy at most {tolerance:g} pp below exact AR's, no run diverged or failed): "
        f"{worst}; {lost} run(s) diverged or failed."
    )
    return holds, text


def _cell(row: pd.Series, name: str, digits: int = 2) -> str:
    """``mean ± std [min, max]`` of statistic ``name`` in ``row``."""
    if np.isnan(row[f"{name}_mean"]):
        return "–"
    return (
        f"{row[f'{name}_mean']:.{digits}f} ± {row[f'{name}_std']:.{digits}f} "
        f"[{row[f'{name}_min']:.{digits}f}, {row[f'{name}_max']:.{digits}f}]"
    )


def markdown(table: pd.DataFrame, runs: pd.DataFrame, text: str) -> str:
    """The table as markdown (mean ± std [min, max] over seeds), the failures, the verdict."""
    header = (
        "| variant | runs (seeds) | AR test acc. (%) | backprop test acc. (%) | AR − BP (pp) "
        "| Δ to exact AR (pp) | angle to backprop (°) |"
    )
    lines = [header, "|" + "---|" * 7]
    for _, row in table.iterrows():
        count = f"{row['completed']}/{row['runs']} ({row['seeds']})"
        for status in ("diverged", "failed", "not_run"):
            if row[status]:
                count += f", {row[status]} {status.replace('_', ' ')}"
        delta = "–" if np.isnan(row["delta_to_exact_pp"]) else f"{row['delta_to_exact_pp']:+.2f}"
        lines.append(
            f"| {row['variant']} | {count} | {_cell(row, 'ar')} | {_cell(row, 'bp')} "
            f"| {_cell(row, 'diff')} | {delta} | {_cell(row, 'angle', 1)} |"
        )
    note = "Each cell: mean ± std over seeds [min, max]; test accuracy after the last epoch."
    lost = runs[runs["status"] != "completed"]
    failures = [
        f"- {row['variant']}, seed {row['seed']}: {row['status']}: {row['message']}"
        for _, row in lost.iterrows()
    ]
    if failures:
        failures = ["Runs without a result:", "", *failures, ""]
    return "\n".join([*lines, "", note, "", *failures, text, ""])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", type=Path, nargs="+", help="sweep or run folders")
    parser.add_argument("--tolerance", type=float, default=1.0, help="pp below exact AR")
    parser.add_argument("--out", type=Path, default=None, help="markdown file (and .csv)")
    args = parser.parse_args(argv)
    rows = collect_runs(args.folders)
    if not rows:
        print(f"unfrozen_variants: no runs in {', '.join(map(str, args.folders))}")
        return 2
    runs = latest_results(pd.DataFrame(rows))
    table = summarise(runs)
    _, text = verdict(table, args.tolerance)
    out = args.out or args.folders[0] / "unfrozen-variants-table.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown(table, runs, text))
    table.to_csv(out.with_suffix(".csv"), index=False)
    runs.to_csv(out.with_name(out.stem + "-runs.csv"), index=False)
    print(out.read_text())
    print(f"wrote {out}, {out.with_suffix('.csv')} and {out.with_name(out.stem + '-runs.csv')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

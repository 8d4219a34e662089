"""Table of the unfrozen-feedforward variants: accuracy and angle against exact AR and backprop.

Reads the run folders of one or more sweep folders (``sweeps/unfrozen-authors*.toml``,
``sweeps/unfrozen-variants*.toml``) or plain run folders, names each run's setting (hidden
activation, data set and its size, the relaxation's order and input) and variant (the
connections' ``derivative``, ``derivative_at``, ``update_uses`` and ``update_derivative_at``,
the learning rate against the paper's, ``[plasticity] continuous``) from its ``config.json``,
and writes one table per setting: per variant, the follow-up paper's flags it stands for, AR's
test accuracy mean ± std over the seeds with its min–max, backprop's (the baseline trained
from the same weights on the same minibatches), AR − backprop, the difference to exact AR and
the mean angle between AR's update and the backprop gradient. The verdict follows, per setting
(does "relaxing the frozen feedforward pass does not damage performance" hold for every
variant: mean AR accuracy at most ``--tolerance`` percentage points below exact AR's, no run
diverged or failed) and per variant across the settings. Usage::

    python analysis/unfrozen_variants.py SWEEP_OR_RUN_FOLDER [...] [--tolerance 1.0]
        [--out FIRST_FOLDER/unfrozen-variants-table.md] [--docs docs/timing-hypotheses.md]
        [--runs EARLIER-runs.csv [...]]

``--runs`` adds the rows of earlier tables' ``-runs.csv`` files (one row per run: setting,
variant, seed, status, accuracies, angle), so that runs made on another machine, whose folders
are gone, count beside new ones; a run found in a folder replaces the same setting, variant
and seed read from such a file.

Writes the markdown table and a CSV beside it (``.csv`` instead of ``.md``; the runs in
``-runs.csv``); with ``--docs`` the verdict also replaces the text between the markers
``<!-- unfrozen-verdict -->`` and ``<!-- /unfrozen-verdict -->`` of that page. A setting,
variant and seed found more than once counts once: a finished run over a point that failed or
never ran.
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
    "no f' in the relaxation",
    "f' at current",
    "f' at upper",
    "update with current x",
    "update f' at current",
    "update f' at upper",
    "f' at current + update f' at current",
    "learning rate / K",
    "continuous plasticity",
    "f' at current + update with current x + learning rate / K",
    "f' at current + update with current x + continuous plasticity",
)
"""Variants in the table's order (others follow, sorted)."""
STATISTICS = ("ar", "bp", "diff", "angle")
PAPER_RATE = 0.0005
"""The paper's learning rate; a run at ``PAPER_RATE / K`` (K relaxation steps) is the follow-up
paper's ``dynamical_weight_update``."""
AUTHORS_FLAGS = {
    "no f' in the relaxation": "use_backward_nonlinearity = False",
    "f' at current": "use_fderiv_x_update",
    "f' at upper": "use_fderiv_x_update + xnext_fderiv_x",
    "update with current x": "use_current_x_weights",
    "update f' at current": "use_fderiv_weight_update",
    "update f' at upper": "use_fderiv_weight_update + xnext_fderiv_weights",
    "learning rate / K": "dynamical_weight_update",
    "continuous plasticity": "none (arsim's online rule)",
}
"""The follow-up paper's flag (code BerenMillidge/Dynamical-Activation-Relaxation) of each
departure from exact AR."""
DATA_NAMES = {"fashion-mnist": "Fashion-MNIST", "mnist": "MNIST"}


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


RUN_COLUMNS = (
    "setting",
    "variant",
    "seed",
    "status",
    "message",
    "folder",
    "ar_test_acc",
    "bp_test_acc",
    "angle_deg",
)
"""The columns of a ``-runs.csv`` file, one row per run."""


def read_runs_csv(path: Path) -> list[dict]:
    """The rows of an earlier table's ``-runs.csv`` (:data:`RUN_COLUMNS`).

    Raises
    ------
    ValueError
        With a one-line message naming the file and the missing columns.
    """
    frame = pd.read_csv(path)
    missing = [name for name in RUN_COLUMNS if name not in frame.columns]
    if missing:
        raise ValueError(
            f"unfrozen_variants: {path}: not a runs table, expected the columns "
            f"{', '.join(RUN_COLUMNS)}; missing {', '.join(missing)}"
        )
    frame = frame.loc[:, list(RUN_COLUMNS)].astype({"seed": "Int64"})
    frame["message"] = frame["message"].fillna("")
    return frame.to_dict("records")


def latest_results(runs: pd.DataFrame) -> pd.DataFrame:
    """One run per setting, variant and seed: a finished run (completed or diverged) over a point
    that failed or never ran, so that a rerun in another folder replaces the lost one."""
    finished = runs["status"].isin(["completed", "diverged"])
    order = runs.assign(_finished=finished).sort_values("_finished", kind="stable")
    keys = ["setting", "variant", "seed"]
    kept = order.drop_duplicates(keys, keep="last").drop(columns="_finished")
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
    run_options = payload.get("run", {})
    if run_options.get("data"):
        config["data"] = {
            "name": run_options["data"],
            "train_samples": run_options.get("train-samples"),
        }
        config["epochs"] = run_options.get("epochs")
    return {
        "setting": setting_name(config),
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
    if connections and not any(c.get("derivative", True) for c in connections):
        parts.append("no f' in the relaxation")
    labels = (
        ("derivative_at", "f' at {}"),
        ("update_uses", "update with {} x"),
        ("update_derivative_at", "update f' at {}"),
    )
    for key, label in labels:
        values = sorted({c.get(key, "stored") for c in connections} or {"stored"})
        value = values[0] if len(values) == 1 else "mixed"
        if value != "stored":
            parts.append(label.format(value))
    protocol = config.get("protocol", {})
    rate = protocol.get("learning_rate", PAPER_RATE)
    if not np.isclose(rate, PAPER_RATE, rtol=1e-9, atol=0):
        steps = round(protocol.get("relaxation", 0) / protocol.get("dt", 1))
        divided = steps > 0 and np.isclose(rate * steps, PAPER_RATE, rtol=1e-9, atol=0)
        parts.append("learning rate / K" if divided else f"learning rate {rate:g}")
    if protocol.get("plasticity", {}).get("continuous", False):
        parts.append("continuous plasticity")
    if protocol.get("forward", {}).get("kind", "instant") != "instant":
        parts.append(f"{protocol['forward']['kind']} forward")
    return " + ".join(parts) or "exact AR"


def authors_flags(variant: str) -> str:
    """The follow-up paper's flags a variant stands for ('–' for exact AR)."""
    if variant == "exact AR":
        return "–"
    return " + ".join(AUTHORS_FLAGS.get(part, part) for part in variant.split(" + "))


def setting_name(config: dict) -> str:
    """The run's setting: hidden activation, data set and size, the relaxation's order and
    input (parts the configuration lacks are left out; '' when it has none)."""
    layers = config.get("model", {}).get("layers", [])
    hidden = sorted({layer.get("activation") for layer in layers[1:-1]} - {None})
    parts = ["/".join(hidden)] if hidden else []
    data = config.get("data", {})
    if data.get("name"):
        size = f" {data['train_samples']:,} images" if data.get("train_samples") else ""
        epochs = config.get("epochs")
        parts.append(
            DATA_NAMES.get(data["name"], data["name"])
            + size
            + (f" × {epochs} epoch{'s' if epochs != 1 else ''}" if epochs else "")
        )
    protocol = config.get("protocol")
    if protocol is not None:  # runs from before the options relaxed in parallel, input clamped
        order = protocol.get("relaxation_order", "parallel")
        relaxes = protocol.get("relaxation_input") == "relaxes"
        parts.append(f"{order} relaxation, input {'relaxes' if relaxes else 'clamped'}")
    return ", ".join(parts)


def read_run(folder: Path) -> dict:
    """Variant, seed, status and final test accuracies and angle of one run folder.

    Accuracies and the angle come from the last ``epoch`` row of ``metrics.csv`` (NaN when the
    run did not complete).
    """
    status = json.loads((folder / "status.json").read_text())
    config_file = folder / "config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    row = {
        "setting": setting_name(config),
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
    """One row per setting and variant (:func:`summarise_setting`), settings in sorted order."""
    if "setting" not in runs:
        runs = runs.assign(setting="")
    parts = [
        summarise_setting(part).assign(setting=setting)
        for setting, part in runs.groupby("setting", sort=True)
    ]
    table = pd.concat(parts, ignore_index=True)
    return table[["setting", *[c for c in table.columns if c != "setting"]]]


def summarise_setting(runs: pd.DataFrame) -> pd.DataFrame:
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
            "authors_flags": authors_flags(variant),
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
    measured = others.dropna(subset=["delta_to_exact_pp"])
    unmeasured = len(others) - len(measured)
    if lost == 0 and unmeasured and bool((measured["delta_to_exact_pp"] >= -tolerance).all()):
        return None, (
            f"'Relaxing the frozen feedforward pass does not damage performance' holds for the "
            f"{len(measured)} variant(s) measured here (criterion: mean AR test accuracy at most "
            f"{tolerance:g} pp below exact AR's); {unmeasured} variant(s) have no run yet."
        )
    holds = lost == 0 and bool(within.all())
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


def variant_verdicts(table: pd.DataFrame, tolerance: float) -> list[str]:
    """One sentence per variant other than exact AR: in which settings it keeps performance
    (mean AR test accuracy at most ``tolerance`` pp below exact AR's, no run lost), by how
    much, and in which it does not."""
    lines = []
    variants = [v for v in dict.fromkeys(table["variant"]) if v != "exact AR"]
    for variant in variants:
        rows = table[(table["variant"] == variant) & table["delta_to_exact_pp"].notna()]
        if rows.empty:
            continue
        keeps, loses = [], []
        for _, row in rows.iterrows():
            lost = row["diverged"] + row["failed"]
            seeds = f"{row['completed']} seed{'s' if row['completed'] != 1 else ''}"
            where = row["setting"] or "this setting"
            note = f"{where}: {row['delta_to_exact_pp']:+.2f} pp ({seeds}"
            note += f", {lost} lost)" if lost else ")"
            ok = lost == 0 and row["delta_to_exact_pp"] >= -tolerance
            (keeps if ok else loses).append(note)
        flags = authors_flags(variant)
        text = f"- **{variant}** ({flags}): "
        text += f"keeps performance in {'; '.join(keeps)}" if keeps else "keeps it in no setting"
        text += f"; loses it in {'; '.join(loses)}." if loses else "."
        lines.append(text)
    return lines


def _cell(row: pd.Series, name: str, digits: int = 2) -> str:
    """``mean ± std [min, max]`` of statistic ``name`` in ``row``."""
    if np.isnan(row[f"{name}_mean"]):
        return "–"
    return (
        f"{row[f'{name}_mean']:.{digits}f} ± {row[f'{name}_std']:.{digits}f} "
        f"[{row[f'{name}_min']:.{digits}f}, {row[f'{name}_max']:.{digits}f}]"
    )


def markdown(table: pd.DataFrame, runs: pd.DataFrame, text: str) -> str:
    """The tables as markdown (mean ± std [min, max] over seeds), the failures, the verdicts.

    ``text`` is the verdict of a table of one setting; with several settings each has its own
    (:func:`verdict`) and ``text`` is ignored.
    """
    if "setting" not in table or table["setting"].nunique() <= 1:
        return _setting_markdown(table, runs, text)
    sections = []
    for setting, part in table.groupby("setting", sort=True):
        _, setting_text = verdict(part, TOLERANCE[0])
        setting_runs = runs[runs["setting"] == setting]
        sections += [f"### {setting}", "", _setting_markdown(part, setting_runs, setting_text)]
    return "\n".join(sections)


TOLERANCE = [1.0]
"""The verdicts' tolerance in pp (set by :func:`main`)."""


def _setting_markdown(table: pd.DataFrame, runs: pd.DataFrame, text: str) -> str:
    """One setting's table, its failures and its verdict."""
    header = (
        "| variant | authors' flags | runs (seeds) | AR test acc. (%) | backprop test acc. (%) "
        "| AR − BP (pp) | Δ to exact AR (pp) | angle to backprop (°) |"
    )
    lines = [header, "|" + "---|" * 8]
    for _, row in table.iterrows():
        count = f"{row['completed']}/{row['runs']} ({row['seeds']})"
        for status in ("diverged", "failed", "not_run"):
            if row[status]:
                count += f", {row[status]} {status.replace('_', ' ')}"
        delta = "–" if np.isnan(row["delta_to_exact_pp"]) else f"{row['delta_to_exact_pp']:+.2f}"
        lines.append(
            f"| {row['variant']} | {row['authors_flags']} | {count} | {_cell(row, 'ar')} "
            f"| {_cell(row, 'bp')} "
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


BLOCK = ("<!-- unfrozen-verdict -->", "<!-- /unfrozen-verdict -->")
"""Markers of the verdict block in a documentation page."""


def replace_block(page: Path, text: str) -> None:
    """Replace what lies between the :data:`BLOCK` markers of ``page`` by ``text``."""
    content = page.read_text()
    start, end = (content.find(marker) for marker in BLOCK)
    if start < 0 or end < start:
        raise SystemExit(f"{page}: expected the markers {BLOCK[0]} and {BLOCK[1]}")
    head, tail = content[: start + len(BLOCK[0])], content[end:]
    page.write_text(f"{head}\n{text}\n{tail}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", type=Path, nargs="*", help="sweep or run folders")
    parser.add_argument(
        "--runs",
        type=Path,
        nargs="+",
        default=[],
        metavar="CSV",
        help="earlier tables' -runs.csv files whose runs count too (a folder's run wins)",
    )
    parser.add_argument("--tolerance", type=float, default=1.0, help="pp below exact AR")
    parser.add_argument("--out", type=Path, default=None, help="markdown file (and .csv)")
    parser.add_argument(
        "--docs", type=Path, default=None, help="page whose verdict block to replace"
    )
    args = parser.parse_args(argv)
    TOLERANCE[0] = args.tolerance
    if not args.folders and not args.runs:
        parser.error("give at least one sweep or run folder, or --runs CSV")
    for path in args.runs:
        if not path.is_file():
            print(f"unfrozen_variants: {path}: no such runs table (--runs expects a -runs.csv)")
            return 2
    try:
        rows = [row for path in args.runs for row in read_runs_csv(path)]
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    rows += collect_runs(args.folders)
    if not rows:
        print(f"unfrozen_variants: no runs in {', '.join(map(str, args.folders))}")
        return 2
    runs = latest_results(pd.DataFrame(rows))
    table = summarise(runs)
    _, text = verdict(table, args.tolerance)
    verdicts = variant_verdicts(table, args.tolerance)
    verdict_block = "\n".join(
        [
            f"Verdict per variant (keeps performance: mean AR test accuracy at most "
            f"{args.tolerance:g} pp below exact AR's in the same setting, no run lost; "
            "Δ to exact AR, seeds):",
            "",
            *verdicts,
        ]
    )
    out = args.out or (args.folders or [args.runs[0].parent])[0] / "unfrozen-variants-table.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown(table, runs, text) + "\n" + verdict_block + "\n")
    if args.docs is not None:
        replace_block(args.docs, verdict_block)
    table.to_csv(out.with_suffix(".csv"), index=False)
    runs.to_csv(out.with_name(out.stem + "-runs.csv"), index=False)
    print(out.read_text())
    print(f"wrote {out}, {out.with_suffix('.csv')} and {out.with_name(out.stem + '-runs.csv')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Compare two run folders file by file: are they bit-identical?

Usage::

    python analysis/compare_runs.py RUN_A RUN_B [--ignore config.json ...]

Arrays in ``.npz`` files must be equal element by element with the same dtype (NaN equal to
NaN), Parquet tables equal row by row and column by column, JSON files equal as data but for
their ``command`` entry (the output folder differs), every other file equal byte for byte.
Prints one line per file and exits 1 when any file differs or exists on one side only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd


def same_npz(a: Path, b: Path) -> str | None:
    """None when both archives hold the same arrays exactly, else what differs."""
    with np.load(a) as left, np.load(b) as right:
        if sorted(left.files) != sorted(right.files):
            return f"arrays {sorted(left.files)} != {sorted(right.files)}"
        for name in left.files:
            x, y = left[name], right[name]
            if x.dtype != y.dtype or x.shape != y.shape:
                return f"{name}: {x.dtype}{x.shape} != {y.dtype}{y.shape}"
            if not np.array_equal(x, y, equal_nan=x.dtype.kind == "f"):
                return f"{name}: values differ (max |diff| {np.nanmax(np.abs(x - y)):.3g})"
    return None


def same_parquet(a: Path, b: Path) -> str | None:
    """None when both Parquet files hold the same table exactly."""
    left, right = pd.read_parquet(a), pd.read_parquet(b)
    if list(left.columns) != list(right.columns) or len(left) != len(right):
        return f"columns or rows differ ({left.shape} != {right.shape})"
    return None if left.equals(right) else "values differ"


def same_json(a: Path, b: Path) -> str | None:
    """None when both JSON files hold the same data, the command line that made them aside."""
    left, right = (json.loads(path.read_text()) for path in (a, b))
    for data in (left, right):
        if isinstance(data, dict):
            data.pop("command", None)
    return None if left == right else "contents differ"


def compare(a: Path, b: Path, ignore: set[str]) -> list[str]:
    """Differences between run folders ``a`` and ``b``, one text per differing file."""
    files = lambda root: {p.relative_to(root) for p in root.rglob("*") if p.is_file()}  # noqa: E731
    left, right = files(a), files(b)
    problems = [f"{name}: only in {a}" for name in sorted(left - right) if str(name) not in ignore]
    problems += [f"{name}: only in {b}" for name in sorted(right - left) if str(name) not in ignore]
    for name in sorted(left & right):
        if str(name) in ignore:
            continue
        if name.suffix == ".npz":
            problem = same_npz(a / name, b / name)
        elif name.suffix == ".parquet":
            problem = same_parquet(a / name, b / name)
        elif name.suffix == ".json":
            problem = same_json(a / name, b / name)
        else:
            same = (a / name).read_bytes() == (b / name).read_bytes()
            problem = None if same else "bytes differ"
        print(f"{name}: {'identical' if problem is None else problem}")
        if problem is not None:
            problems.append(f"{name}: {problem}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--ignore", nargs="*", default=[], help="relative paths to skip")
    args = parser.parse_args(argv)
    problems = compare(args.a, args.b, set(args.ignore))
    for problem in problems:
        print("DIFFERS", problem, file=sys.stderr)
    print("bit-identical" if not problems else f"{len(problems)} file(s) differ")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

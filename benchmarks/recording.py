"""Recording at scale: peak memory, wall time and the bytes a slice of the traces reads.

For 64, 1,024 and 4,096 samples of the paper network (``models/paper-mlp.toml``, the protocol
``protocols/paper.toml`` changed to record x, x̂ and f' of every neuron of every layer and
sample, stored as float32), runs ``arsim run … --target numpy`` under ``/usr/bin/time -v``
with and without recording (peak memory: "Maximum resident set size"; wall time), then loads
one layer, variable and sample of the 4,096-sample recording with :func:`arsim.traces.load`
and counts the bytes read from the trace files (``rchar`` of ``/proc/self/io``: every byte
passed through a read system call, cached or not) against the bytes on disk. Usage::

    python benchmarks/recording.py [--samples 64 1024 4096] [--out benchmarks/recording.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECORD_ALL = """
[record]
variables = ["x", "xhat", "fp"]
layers = "all"
neurons = "all"
samples = "all"
phases = ["feedforward", "relaxation", "update"]
dtype = "float32"
"""


def protocol_file(folder: Path, record: bool) -> Path:
    """``protocols/paper.toml`` recording everything (or nothing)."""
    text = (ROOT / "protocols" / "paper.toml").read_text()
    text = text[: text.index("[record]")]
    text += RECORD_ALL if record else '\n[record]\nsamples = []\nvariables = ["x"]\n'
    path = folder / ("paper-record-all.toml" if record else "paper-record-none.toml")
    path.write_text(text)
    return path


def timed_run(protocol: Path, samples: int, out: Path) -> dict:
    """Peak memory (GiB), wall time (s) and 1-minute load average of one ``arsim run``."""
    command = [
        "/usr/bin/time", "-v", sys.executable, "-m", "arsim", "run",
        str(ROOT / "models" / "paper-mlp.toml"), str(protocol), "--samples", str(samples),
        "--target", "numpy", "--out", str(out), "--quiet",
    ]  # fmt: skip
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)[1])
    return {
        "peak_gib": peak_kb / 2**20,
        "wall_s": wall,
        "load_1min": [load_before, os.getloadavg()[0]],  # the machine's, before and after
        "command": " ".join(command[2:]),
    }


def bytes_read_by_slice(run: Path) -> dict:
    """Bytes read loading one layer, variable and sample, against the trace files' size."""
    code = (
        "import sys, json\n"
        "from arsim.traces import load\n"
        "def rchar():\n"
        "    return int(open('/proc/self/io').read().split('rchar: ')[1].split()[0])\n"
        "load(sys.argv[1], layers=['input'], variables=['xhat'], samples=[0])  # warm imports\n"
        "before = rchar()\n"
        "table = load(sys.argv[1], layers=['h1'], variables=['x'], samples=[2048])\n"
        "print(json.dumps({'bytes_read': rchar() - before, 'rows': len(table)}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(run)], capture_output=True, text=True, check=True
    )
    found = json.loads(done.stdout.strip().splitlines()[-1])
    on_disk = sum(p.stat().st_size for p in (run / "traces").rglob("*") if p.is_file())
    found |= {"bytes_on_disk": on_disk, "fraction": found["bytes_read"] / on_disk}
    found["query"] = "load(run, layers=['h1'], variables=['x'], samples=[2048])"
    return found


def main(argv=None) -> int:
    """Run the measurements and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, nargs="+", default=[64, 1024, 4096])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "recording.json")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="arsim-recording-"))
    work.mkdir(parents=True, exist_ok=True)
    results = {"runs": []}
    for samples in args.samples:
        for record in (False, True):
            out = work / f"run-{samples}-{'all' if record else 'none'}"
            row = timed_run(protocol_file(work, record), samples, out)
            recorded = "x, xhat, fp of every neuron, float32" if record else ""
            row |= {"samples": samples, "record": recorded}
            if record:
                row["trace_bytes"] = sum(
                    p.stat().st_size for p in (out / "traces").rglob("*") if p.is_file()
                )
            results["runs"].append(row)
            print(json.dumps(row), flush=True)
        if samples == max(args.samples) and samples > 2048:
            results["slice"] = bytes_read_by_slice(work / f"run-{samples}-all")
            print(json.dumps(results["slice"]), flush=True)
        for record in ("none", "all"):
            subprocess.run(["rm", "-rf", str(work / f"run-{samples}-{record}")], check=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

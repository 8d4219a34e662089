"""``arsim sweep``: grid expansion, results table, bad sweep files, failures, reruns, Dask
(over TLS with certificates made here; a worker with another authority's certificate is kept
out)."""

from __future__ import annotations

import csv
import datetime
import ipaddress
import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pandas as pd
import psutil
import pytest
from conftest import ROOT

from arsim import cli
from arsim.spec import SpecError
from arsim.sweep import (
    TlsFiles,
    load_sweep,
    plain_scheduler_risk,
    point_payload,
    run_point,
    run_sweep,
    summary_metrics,
)
from arsim.sweep.points import point_job

TINY_MODEL = """name = "tiny"
[init]
variance = 0.25
[[layers]]
name = "input"
size = 4
[[layers]]
name = "h1"
size = 3
activation = "{activation}"
[[layers]]
name = "output"
size = 2
"""
TINY_PROTOCOL = """name = "tiny"
tau = "10 ms"
dt = "1 ms"
[phases]
relaxation = "10 ms"
[learning]
batch_size = 4
[record]
variables = ["x"]
samples = [0]
"""


def toml_value(value):
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    return repr(value)


def write_sweep(folder, grid, seeds=(0,), run=None, activation="tanh", name="sweep.toml"):
    """A tiny 4-3-2 model, a 10-step protocol and a sweep file over them, in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tiny-model.toml").write_text(TINY_MODEL.format(activation=activation))
    (folder / "tiny-protocol.toml").write_text(TINY_PROTOCOL)
    lines = ['model = "tiny-model.toml"', 'protocol = "tiny-protocol.toml"']
    lines.append(f"seeds = {toml_value(list(seeds))}")
    lines += ["[grid]"] + [f'"{key}" = {toml_value(values)}' for key, values in grid.items()]
    lines += ["[run]"] + [f'"{k}" = {toml_value(v)}' for k, v in (run or {"samples": 8}).items()]
    path = folder / name
    path.write_text("\n".join(lines) + "\n")
    return path


def make_certificates(folder: Path, name: str) -> TlsFiles:
    """A certificate authority ``name`` and a certificate for 127.0.0.1 that it signed, as
    PEM files in ``folder`` (elliptic-curve keys, valid for a day)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def certificate(subject, issuer, public_key, signing_key, extension):
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(extension, critical=True)
            .sign(signing_key, hashes.SHA256())
        )

    authority_key, key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    authority = certificate(
        f"{name} CA", f"{name} CA", authority_key.public_key(), authority_key,
        x509.BasicConstraints(ca=True, path_length=None),
    )  # fmt: skip
    node = certificate(
        f"{name} node", f"{name} CA", key.public_key(), authority_key,
        x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
    )  # fmt: skip
    files = TlsFiles(
        folder / f"{name}-ca.pem", folder / f"{name}-cert.pem", folder / f"{name}-key.pem"
    )
    files.ca_file.write_bytes(authority.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(node.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    """The cluster's certificate authority and certificate (scheduler, workers and clients
    show the same one)."""
    return make_certificates(tmp_path_factory.mktemp("tls"), "cluster")


@pytest.fixture(scope="module")
def cluster(tls_files):
    """Two worker processes and a scheduler on 127.0.0.1, over TLS only."""
    from distributed import LocalCluster, Security

    ca, cert, key = map(str, (tls_files.ca_file, tls_files.cert, tls_files.key))
    security = Security(
        require_encryption=True,
        tls_ca_file=ca,
        **{f"tls_{role}_{kind}": path for role in ("scheduler", "worker", "client")
           for kind, path in (("cert", cert), ("key", key))},
    )  # fmt: skip
    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        protocol="tls",
        host="127.0.0.1",
        security=security,
        dashboard_address="127.0.0.1:0",
        silence_logs=logging.ERROR,
    ) as local:
        assert local.scheduler_address.startswith("tls://127.0.0.1:")
        yield local


@pytest.fixture(scope="module")
def client(cluster):
    from distributed import Client

    with Client(cluster) as connected:
        yield connected


def test_grid_is_the_product_of_the_lists_times_the_seeds(tmp_path):
    grid = {
        "protocol.phases.relaxation": ["5 ms", "10 ms", "20 ms"],
        "protocol.learning.rate": [0.001, 0.002],
        "model.memory": [{"kind": "ideal"}, {"kind": "trace", "tau": "50 ms"}],
    }
    sweep = load_sweep(write_sweep(tmp_path, grid, seeds=[0, 1]))
    assert len(sweep.points) == 3 * 2 * 2 * 2 == len({point.id for point in sweep.points})
    combinations = {
        (
            p.protocol["phases"]["relaxation"],
            p.protocol["learning"]["rate"],
            p.model["memory"]["kind"],
            p.seed,
        )
        for p in sweep.points
    }
    assert len(combinations) == 24
    assert {c[0] for c in combinations} == {"5 ms", "10 ms", "20 ms"}
    assert {c[1] for c in combinations} == {0.001, 0.002} and {c[3] for c in combinations} == {0, 1}
    for point in sweep.points:
        assert point.overrides["protocol.learning.rate"] == point.protocol["learning"]["rate"]
        assert point.protocol["learning"]["batch_size"] == 4  # the rest of the file is kept
        slug, digest = point.id.rsplit("-", 1)
        assert slug.endswith(f"seed{point.seed}") and len(digest) == 10
    # ids are stable: the same file gives the same ids
    assert [p.id for p in load_sweep(sweep.source).points] == [p.id for p in sweep.points]


@pytest.mark.parametrize("path", sorted((ROOT / "sweeps").glob("*.toml")), ids=lambda p: p.name)
def test_shipped_sweep_files_load(path):
    from arsim.datasets import DatasetError, find_dataset_folder

    if "data =" in path.read_text():
        try:
            find_dataset_folder("fashion-mnist")
        except DatasetError:
            pytest.skip("Fashion-MNIST is not installed")
    sweep = load_sweep(path)
    declared = tomllib.loads(path.read_text())
    expected = math.prod(len(values) for values in declared["grid"].values())
    expected *= len(declared.get("seeds", [None]))
    assert len(sweep.points) == len({point.id for point in sweep.points}) == expected >= 2
    if path.name == "relaxation-memory.toml":
        assert len(sweep.points) == 24 and not sweep.training


def test_overrides_reach_the_runs_and_rows_hold_their_metrics(tmp_path, client):
    """Two points (relaxation 5 ms and 20 ms, h1 of 5 neurons, seed 3): the run folders were
    made with the overridden values, and each row's numbers are its metrics.csv's last row."""
    grid = {"protocol.phases.relaxation": ["5 ms", "20 ms"], "model.layers[1].size": [5]}
    out = tmp_path / "out"
    table = run_sweep(write_sweep(tmp_path, grid, seeds=[3]), out, client=client)
    assert len(table) == 2 and list(table["status"]) == ["completed", "completed"]
    assert list(table["protocol.phases.relaxation"]) == ["5 ms", "20 ms"]
    assert list(table["model.layers[1].size"]) == [5, 5] and list(table["seed"]) == [3, 3]
    from_disk = pd.read_csv(out / "results.csv")
    assert list(from_disk["point"]) == list(table["point"])
    for index, row in table.iterrows():
        folder = Path(row["folder"])
        assert folder.parent == out / "points" and folder.name == row["point"]
        config = json.loads((folder / "config.json").read_text())
        expected = {"5 ms": 0.005, "20 ms": 0.02}[row["protocol.phases.relaxation"]]
        assert config["protocol"]["relaxation"] == pytest.approx(expected)
        assert config["derived"]["phase_steps"]["relaxation"] == round(expected / 1e-3)
        assert config["model"]["layers"][1]["size"] == 5 and config["seed"] == 3
        # the summary numbers, read independently from the point's metrics.csv
        with (folder / "metrics.csv").open(newline="") as handle:
            last = list(csv.DictReader(handle))[-1]
        assert set(last) >= {"loss", "angle_deg", "angle_deg_W0", "angle_deg_W1"}
        for column in ("loss", "angle_deg", "update_rel_error", "angle_deg_W0", "angle_deg_W1"):
            assert row[column] == float(last[column])
            assert from_disk.loc[index, column] == pytest.approx(float(last[column]), rel=1e-15)
        assert row["wall_seconds"] > 0 and row["error"] is None
    # a longer relaxation follows backprop more closely
    assert table["angle_deg"].iloc[1] < table["angle_deg"].iloc[0]
    # the BLAS threads of each point are recorded
    assert set(table["blas_threads"]) == {1}
    assert json.loads((out / "sweep.json").read_text())["executor"]["blas_threads_per_point"] == 1


def test_training_rows_summarise_the_final_epoch(tmp_path):
    (tmp_path / "metrics.csv").write_text(
        "kind,epoch,batch,samples,ar_loss,angle_deg,ar_test_acc,bp_test_acc\n"
        "batch,1,10,640,0.9,3.0,0.5,0.5\n"
        "epoch,1,20,1280,0.8,2.0,0.6,0.61\n"
        "batch,2,30,1920,0.7,1.5,0.7,0.7\n"
        "epoch,2,40,2560,0.6,1.0,0.75,0.76\n"
        "batch,3,50,3200,0.5,0.5,0.8,0.8\n"  # a killed third epoch: not a final row
    )
    summary = summary_metrics(tmp_path, training=True)
    assert summary == {"ar_loss": 0.6, "angle_deg": 1.0, "ar_test_acc": 0.75, "bp_test_acc": 0.76}
    assert summary_metrics(tmp_path, training=False)["angle_deg"] == 0.5
    assert summary_metrics(tmp_path, training=False)["mean_angle_deg"] == pytest.approx(1.6)
    (tmp_path / "metrics.csv").write_text("\n")  # diverged in the first minibatch
    assert summary_metrics(tmp_path, training=False) == {}


BAD_SWEEPS = {
    "missing-model": ('protocol = "tiny-protocol.toml"\n', "model", "missing"),
    "unknown-top-level-key": (
        'model = "tiny-model.toml"\nprotocol = "tiny-protocol.toml"\ncolour = 1\n',
        "colour",
        "unknown key",
    ),
    "model-file-not-found": (
        'model = "nope.toml"\nprotocol = "tiny-protocol.toml"\n',
        "model",
        "not found",
    ),
    "grid-key-outside-model-and-protocol": (
        '[grid]\n"network.tau" = ["1 ms"]\n',
        "grid.network.tau",
        "model.' or 'protocol.",
    ),
    "empty-list": ('[grid]\n"protocol.tau" = []\n', "grid.protocol.tau", "non-empty list"),
    "not-a-list": ('[grid]\n"protocol.tau" = "5 ms"\n', "grid.protocol.tau", "list"),
    "key-not-in-the-table": (
        '[grid]\n"protocol.phases.colour" = [1, 2]\n',
        "grid.protocol.phases.colour",
        "no key 'phases.colour'",
    ),
    "index-out-of-range": (
        '[grid]\n"model.layers[7].size" = [3]\n',
        "grid.model.layers[7].size",
        "index below 3",
    ),
    "empty-seeds": ("seeds = []\n", "seeds", "non-empty list"),
    "training-option-without-data": ("[run]\nepochs = 2\n", "run.epochs", "run.data"),
    "compare-every-zero": (
        '[run]\ndata = "fashion-mnist"\ncompare-every = 0\n',
        "run.compare-every",
        "positive integer",
    ),
}


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _run_cli(args, folder, monkeypatch, capsys):
    monkeypatch.chdir(folder)  # the default output folder would appear here
    status = cli.main(["sweep", *map(str, args), "--quiet"])
    return status, capsys.readouterr()


@pytest.mark.parametrize("case", BAD_SWEEPS)
def test_bad_sweep_file_gives_one_line_exit_2_and_writes_nothing(
    tmp_path, case, monkeypatch, capsys
):
    text, key, expected = BAD_SWEEPS[case]
    write_sweep(tmp_path, {})
    sweep = tmp_path / "bad.toml"
    if not text.startswith(("model", "protocol")):
        text = 'model = "tiny-model.toml"\nprotocol = "tiny-protocol.toml"\n' + text
    sweep.write_text(text)
    before = _files(tmp_path)
    status, output = _run_cli([sweep], tmp_path, monkeypatch, capsys)
    lines = output.err.strip().splitlines()
    assert status == 2 and len(lines) == 1, output.err
    assert lines[0].startswith(f"arsim: error: {sweep}: {key}: ") and expected in lines[0]
    assert _files(tmp_path) == before and output.out == ""


def test_bad_value_gives_the_specs_own_error_naming_the_point(tmp_path, monkeypatch, capsys):
    sweep = write_sweep(tmp_path, {"protocol.dt": ["1 ms", "25 ms"]})
    before = _files(tmp_path)
    status, output = _run_cli([sweep, "--out", tmp_path / "out"], tmp_path, monkeypatch, capsys)
    line = output.err.strip()
    assert status == 2 and len(line.splitlines()) == 1
    # the spec's message (protocol file, key dt, forward Euler) and the point it came from
    assert line.startswith(f"arsim: error: {tmp_path / 'tiny-protocol.toml'}: dt: forward Euler")
    assert "protocol.dt = '25 ms'" in line and str(sweep) in line
    assert _files(tmp_path) == before
    with pytest.raises(SpecError):
        load_sweep(sweep)


def test_output_folder_that_is_not_a_sweep_is_refused(tmp_path, monkeypatch, capsys):
    sweep = write_sweep(tmp_path, {"protocol.phases.relaxation": ["5 ms"]})
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("precious")
    before = _files(tmp_path)
    status, output = _run_cli([sweep, "--out", tmp_path / "out"], tmp_path, monkeypatch, capsys)
    assert status == 2 and "not a sweep folder" in output.err and _files(tmp_path) == before


def test_failed_and_diverged_points_do_not_stop_the_others(tmp_path):
    """On the command line's own local cluster: exit 1 and a table that says which."""
    # linear layers with weights of std 1e150 overflow in the first sample
    grid = {"model.init.variance": [0.25, 0.5, 1e300]}
    sweep = write_sweep(tmp_path, grid, activation="linear")
    points = load_sweep(sweep).points
    # a sweep folder from an earlier run, with a file in the way of one point's run folder
    blocked = tmp_path / "out" / "points" / points[1].id
    blocked.parent.mkdir(parents=True)
    (tmp_path / "out" / "sweep.json").write_text("{}")
    blocked.write_text("in the way")  # the point cannot make its run folder: it fails
    done = subprocess.run(
        [sys.executable, "-m", "arsim.cli", "sweep", sweep, "--out", tmp_path / "out"]
        + ["--workers", "1", "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 1, done.stderr
    table = pd.read_csv(tmp_path / "out" / "results.csv")
    assert list(table["status"]) == ["completed", "failed", "diverged"]
    assert "output folder exists" in table["error"][1] and "diverged" in table["error"][2]
    assert "non-finite activity" in table["error"][2] and pd.isna(table["error"][0])
    assert math.isfinite(table["loss"][0]) and pd.isna(table["loss"][1])
    assert "1 completed, 1 diverged, 1 failed" in done.stdout
    assert points[1].id in done.stderr and points[2].id in done.stderr
    # the failed point's message is the last line of its process's output
    log = (tmp_path / "out" / "points" / f"{points[1].id}.log").read_text().strip()
    assert log.splitlines()[-1] == table["error"][1]


def test_a_point_over_its_timeout_fails(tmp_path):
    sweep = load_sweep(write_sweep(tmp_path, {}, run={"samples": 8, "timeout": 0.2}))
    row = run_point(point_payload(sweep, sweep.points[0], tmp_path / "out", 1))
    assert row["status"] == "failed" and row["error"] == "timed out after 0.2 s"
    assert row["ran"] and not (tmp_path / "out" / "points" / sweep.points[0].id).exists()


def test_rerun_skips_finished_points(tmp_path, client):
    sweep = write_sweep(tmp_path, {"protocol.phases.relaxation": ["5 ms"]})
    out = tmp_path / "out"
    first = run_sweep(sweep, out, client=client)
    assert first.attrs["points_run"] == 1 and first.attrs["points_reused"] == 0
    kept = Path(first["folder"][0])
    files = ["status.json", "metrics.csv", "config.json"]
    stamps = [(kept / name).stat().st_mtime_ns for name in files]
    # one more grid value: only the new point runs, the finished one is read from its folder
    write_sweep(tmp_path, {"protocol.phases.relaxation": ["5 ms", "10 ms"]})
    second = run_sweep(sweep, out, client=client)
    assert second.attrs["points_run"] == 1 and second.attrs["points_reused"] == 1
    assert list(second["status"]) == ["completed"] * 2 and second["point"][0] == first["point"][0]
    assert stamps == [(kept / name).stat().st_mtime_ns for name in files]
    pd.testing.assert_series_equal(first.iloc[0], second.iloc[0], check_names=False)
    third = run_sweep(sweep, out, client=client)
    assert third.attrs["points_run"] == 0 and third.attrs["points_reused"] == 2
    pd.testing.assert_frame_equal(second, third)
    assert stamps == [(kept / name).stat().st_mtime_ns for name in files]


def test_8_points_on_a_cluster_survive_a_killed_worker(tmp_path, cluster, client, tls_files):
    """3 parameters (2 x 2 x 1 values) x 2 seeds through a TLS scheduler. A worker is SIGKILLed
    mid-sweep while it runs a point: the table still has 8 completed points, the point it ran
    was run again elsewhere, its orphaned process ended, the points finished before were kept.
    (Each point is a process of its own, a few seconds of CPU: 8 leave the 4 points finished
    before the kill, the 2 running and 2 more waiting.)"""
    grid = {
        "protocol.phases.relaxation": ["5 ms", "20 ms"],
        "protocol.learning.rate": [0.0005],
        "model.memory": [{"kind": "ideal"}, {"kind": "trace", "tau": "50 ms"}],
    }
    sweep = write_sweep(tmp_path, grid, seeds=[0, 1])
    out = tmp_path / "out"
    state = {}

    def stamps():
        finished = {}
        for outcome in (out / "points").glob("*.outcome.json"):  # written once a point ended
            point = outcome.parent / outcome.name.removesuffix(".outcome.json")
            log = point.with_name(point.name + ".log")
            status = (point / "status.json").stat().st_mtime_ns
            finished[point.name] = (status, outcome.read_text(), log.stat().st_mtime_ns)
        return finished

    def kill_a_worker(row):
        if state or len(list((out / "points").glob("*.outcome.json"))) < 4:
            return
        for pid in client.run(os.getpid).values():
            for child in psutil.Process(pid).children():
                point = Path(child.cmdline()[-1]).name.removesuffix(".json")
                if "_point" in child.cmdline() and not (out / "points" / point).exists():
                    state.update(finished=stamps(), worker=pid, child=child.pid, point=point)
                    os.kill(pid, signal.SIGKILL)  # while its point's process runs
                    return

    table = run_sweep(
        sweep, out, scheduler=cluster.scheduler_address, tls=tls_files, on_point=kill_a_worker
    )
    assert state, "no worker was killed"
    assert len(table) == 8 and list(table["status"]) == ["completed"] * 8
    assert len(pd.read_csv(out / "results.csv")) == 8 and table["point"].is_unique
    # the killed worker's point ran again elsewhere; its orphaned process ended
    outcome = json.loads((out / "points" / f"{state['point']}.outcome.json").read_text())
    assert outcome["worker_pid"] != state["worker"] and outcome["exit_status"] == 0
    assert not psutil.pid_exists(state["child"]) or (
        psutil.Process(state["child"]).status() == psutil.STATUS_ZOMBIE
    )
    # points finished before the kill were not run again
    after = stamps()
    assert len(state["finished"]) >= 4
    for point, stamp in state["finished"].items():
        assert after[point] == stamp
    assert not list((out / "points").glob(".*partial*"))


def test_compare_every_reaches_the_training_and_its_digest_only_off_the_default(tmp_path):
    """``[run] compare-every`` is the training's option; the default leaves point ids as they
    were before the option existed."""

    def sweep(name: str, extra: str):
        path = tmp_path / f"{name}.toml"
        path.write_text(
            f'model = "{ROOT / "models" / "paper-mlp.toml"}"\n'
            f'protocol = "{ROOT / "protocols" / "paper.toml"}"\n'
            f'[run]\ndata = "fashion-mnist"\ntrain-samples = 64\n{extra}'
        )
        return load_sweep(path)

    plain, default = sweep("plain", ""), sweep("default", "compare-every = 10\n")
    sparse = sweep("sparse", "compare-every = 3\n")
    assert plain.points[0].id == default.points[0].id != sparse.points[0].id
    for declared, expected in ((sparse, 3), (plain, 10)):
        payload = point_payload(declared, declared.points[0], tmp_path / "out", None)
        assert point_job(payload).compare_every == expected


def test_sweep_over_tls_from_the_command_line(tmp_path, cluster, monkeypatch, capsys):
    """``--scheduler tls://…`` with the CA, certificate and key runs the points on the TLS
    cluster; without the files, or with them for a plain address, it is one line, exit 2."""
    files = make_certificates(tmp_path, "cluster-copy")  # stand-ins for the option checks
    sweep = write_sweep(tmp_path, {"protocol.phases.relaxation": ["5 ms"]})
    address = cluster.scheduler_address
    options = {
        "--scheduler": address,
        "--tls-ca-file": cluster.security.tls_ca_file,
        "--tls-cert": cluster.security.tls_client_cert,
        "--tls-key": cluster.security.tls_client_key,
    }
    status, output = _run_cli(
        [sweep, "--out", tmp_path / "out", *sum(map(list, options.items()), [])],
        tmp_path, monkeypatch, capsys,
    )  # fmt: skip
    assert status == 0 and output.err == "", output.err
    assert "1 completed" in output.out
    executor = json.loads((tmp_path / "out" / "sweep.json").read_text())["executor"]
    assert executor["tls"] and executor["scheduler"] == address and executor["workers"] == 2
    assert pd.read_csv(tmp_path / "out" / "results.csv")["status"].tolist() == ["completed"]
    bad = {
        "no-files": ([], "needs --tls-ca-file, --tls-cert and --tls-key"),
        "no-ca": (["--tls-cert", files.cert], "needs both --tls-ca-file and --tls-cert"),
        "missing-file": (
            ["--tls-ca-file", tmp_path / "nope.pem", "--tls-cert", files.cert],
            f"--tls-ca-file {tmp_path / 'nope.pem'}: not found",
        ),
        "plain-address": (
            ["--tls-ca-file", files.ca_file, "--tls-cert", files.cert],
            "is not a tls:// address",
        ),
    }
    for case, (extra, expected) in bad.items():
        target = address.replace("tls://", "tcp://") if case == "plain-address" else address
        before = _files(tmp_path)
        status, output = _run_cli(
            [sweep, "--out", tmp_path / case, "--scheduler", target, *extra],
            tmp_path, monkeypatch, capsys,
        )  # fmt: skip
        lines = output.err.strip().splitlines()
        assert status == 2 and len(lines) == 1 and expected in lines[0], (case, output.err)
        assert lines[0].startswith("arsim: error: ") and _files(tmp_path) == before


def test_a_worker_without_the_clusters_certificate_cannot_join(tmp_path, cluster, client):
    """A ``dask worker`` that trusts the cluster's authority but shows a certificate of its own
    authority is refused by the TLS scheduler (it gives up after its death timeout and the
    cluster keeps its two workers); the same command with the cluster's certificate joins."""
    stranger = make_certificates(tmp_path, "stranger")
    ca = cluster.security.tls_ca_file

    def worker(cert, key, *extra):
        command = [sys.executable, "-m", "distributed.cli.dask_worker", cluster.scheduler_address]
        command += ["--tls-ca-file", ca, "--tls-cert", cert, "--tls-key", key]
        command += ["--nthreads", "1", "--no-nanny", "--no-dashboard", *extra]
        return subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path
        )

    refused = worker(stranger.cert, stranger.key, "--death-timeout", "8")
    log, _ = refused.communicate(timeout=300)
    assert refused.returncode != 0 and "Timed out starting worker" in log, log
    assert len(client.scheduler_info(n_workers=-1)["workers"]) == 2
    # the control: the cluster's own certificate is let in
    security = cluster.security
    joined = worker(security.tls_worker_cert, security.tls_worker_key)
    try:
        deadline = time.monotonic() + 300
        while len(client.scheduler_info(n_workers=-1)["workers"]) < 3:
            assert joined.poll() is None, joined.communicate()[0]
            assert time.monotonic() < deadline, "the worker with the certificate never joined"
            time.sleep(0.2)
    finally:
        joined.terminate()
        joined.communicate(timeout=120)
    while len(client.scheduler_info(n_workers=-1)["workers"]) > 2:  # gone before other tests
        time.sleep(0.1)


def test_plain_tcp_to_another_machine_is_warned_about(tmp_path, monkeypatch, capsys):
    """A plain address off this machine gets one warning line naming the risk (no connection
    is made here: the client is replaced by one that cannot connect); loopback and TLS none."""
    for address in (
        "tcp://127.0.0.1:8786",
        "localhost:8786",
        "tcp://[::1]:8786",
        "tls://10.1.2.3:1",
    ):
        assert plain_scheduler_risk(address) is None, address
    for address in ("tcp://192.0.2.7:8786", "192.0.2.7:8786"):
        risk = plain_scheduler_risk(address)
        assert risk is not None and "pickled" in risk and "run code" in risk and "tls://" in risk
    import distributed

    def unreachable(address, **options):
        raise OSError(f"no route to {address}")

    monkeypatch.setattr(distributed, "Client", unreachable)
    sweep = write_sweep(tmp_path, {"protocol.phases.relaxation": ["5 ms"]})
    status, output = _run_cli(
        [sweep, "--out", tmp_path / "out", "--scheduler", "tcp://192.0.2.7:8786"],
        tmp_path, monkeypatch, capsys,
    )  # fmt: skip
    warning, error = output.err.strip().splitlines()
    assert warning == "arsim: warning: " + plain_scheduler_risk("tcp://192.0.2.7:8786")
    assert status == 2 and error.startswith("arsim: error: --scheduler tcp://192.0.2.7:8786")

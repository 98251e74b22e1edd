"""A team's tracking server on PostgreSQL (`make server`) against SQLite, side by side in one run: the cost of one
epoch's log call (the runner's real `EpochLogger.on_epoch_end`: ~20 metrics and the heartbeat tag) on the PostgreSQL
server, on a SQLite-backed `mlflow server` and on a local SQLite file; and `xentlab-compare` over a sweep of 1,000
children (100 with --quick) through each server. The smoke size (the test suite) measures the local file alone:
starting PostgreSQL and two servers costs more CPU than the fast suite may spend."""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.compare_scale import _start_server, _stop_server, _timed_compare, synthetic_sweep

SIZES = {"smoke": dict(epochs=5, runs=0), "quick": dict(epochs=30, runs=100), "full": dict(epochs=100, runs=1000)}
EPOCH_METRICS = [f"{prefix}{name}" for prefix in ("", "val_") for name in (
    "loss", "accuracy", "auc", "nll", "ece", "brier", "balanced_accuracy", "macro_f1", "worst_class_recall")]


def log_call_ms(uri: str, epochs: int, folder: Path) -> dict:
    """Milliseconds of each `EpochLogger.on_epoch_end` call, `epochs` of them into one run of the store at `uri`."""
    from mlflow.tracking import MlflowClient

    from xentlab.tracking.outbox import Outbox
    from xentlab.tracking.runs import EpochLogger
    from xentlab.tracking.store import setup_experiment

    client = MlflowClient(uri)
    run_id = client.create_run(setup_experiment(uri, "bench_logging")).info.run_id
    logger = EpochLogger(samples_per_epoch=1000, outbox=Outbox(uri, run_id, folder))
    times = []
    for epoch in range(epochs):
        logs = {name: 0.5 + 0.001 * epoch for name in EPOCH_METRICS}
        logger._epoch_start = time.perf_counter() - 0.1
        start = time.perf_counter()
        logger.on_epoch_end(epoch, logs)
        times.append((time.perf_counter() - start) * 1000)
    client.set_terminated(run_id, "FINISHED")
    steps = [m.step for m in client.get_metric_history(run_id, "val_loss")]
    assert steps == list(range(epochs)), f"{uri}: {len(steps)} of {epochs} epochs stored"
    return {"calls": epochs, "median_ms": statistics.median(times), "mean_ms": statistics.fmean(times),
            "p90_ms": sorted(times)[int(0.9 * (len(times) - 1))], "metrics_per_call": len(EPOCH_METRICS) + 2}


def tree_cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds of these processes and their children (a server's workers, PostgreSQL's
    backends), so far."""
    import psutil

    total = 0.0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            for proc in [root, *root.children(recursive=True)]:
                times = proc.cpu_times()
                total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def report_case(uri: str, runs: int, folder: Path, name: str, server_pids: list[int]) -> dict:
    """A sweep of `runs` children (5 seeds a variant) written through the server at `uri`, then the
    `xentlab-compare` command over it: wall and CPU seconds of the command, CPU seconds of the server (and its
    database) while it answered."""
    import numpy as np

    rng = np.random.default_rng(0)
    specs = [{"variant": f"loss=v{i // 5:03d}", "seed": i % 5,
              "metrics": {"val_loss": 0.6 + rng.normal(0, 0.02), "val_nll": 0.5 + rng.normal(0, 0.02),
                          "val_accuracy": 0.9 + rng.normal(0, 0.01), "test_nll": 0.5 + rng.normal(0, 0.02),
                          "test_accuracy": 0.9 + rng.normal(0, 0.01)}} for i in range(runs)]
    start = time.perf_counter()
    synthetic_sweep(uri, specs)  # experiment xentlab: where xentlab-compare looks
    build_s = time.perf_counter() - start
    server_before = tree_cpu_s(server_pids)
    wall, cpu = _timed_compare(uri, folder / f"report_{name}")
    return {"child_runs": runs, "build_s": build_s, "compare_s": wall, "compare_cpu_s": cpu,
            "server_cpu_s": tree_cpu_s(server_pids) - server_before}


def _postgres_server(folder: Path):
    """`make server`'s start (xentlab.cli.server) in a folder PostgreSQL's user can reach; (layout, uri)."""
    import socket

    from xentlab.cli.server import Layout, start

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    layout = Layout(folder / "server")
    start(layout, "127.0.0.1", port, workers=2)
    return layout, f"http://127.0.0.1:{port}"


def bench_team_server(size: str, folder: Path) -> dict:
    epochs, runs = SIZES[size]["epochs"], SIZES[size]["runs"]
    results: dict = {"epochs_logged": epochs, "child_runs": runs, "target_report_s": 20.0,
                     "logging": {"sqlite_file": log_call_ms(f"sqlite:///{folder / 'logging.db'}", epochs, folder)}}
    if size == "smoke":
        return results
    from xentlab.cli.server import stop

    reachable = Path(tempfile.mkdtemp(prefix="xentlab-bench-server-"))
    reachable.chmod(0o755)
    (folder / "sqlite_server").mkdir()
    layout = None
    proc, sqlite_uri = _start_server(folder / "sqlite_server" / "mlflow.db", folder / "sqlite_server" / "artifacts",
                                     workers=2)
    try:
        layout, pg_uri = _postgres_server(reachable)
        for name, uri in (("postgres_server", pg_uri), ("sqlite_server", sqlite_uri)):
            results["logging"][name] = log_call_ms(uri, epochs, folder)
        postmaster = int((layout.pgdata / "postmaster.pid").read_text().split()[0])
        pg_pids = [int(layout.pid_file.read_text().split()[0]), postmaster]
        results["report"] = {
            "postgres_server": report_case(pg_uri, runs, folder, "postgres_server", pg_pids),
            "sqlite_server": report_case(sqlite_uri, runs, folder, "sqlite_server", [proc.pid])}
    finally:
        _stop_server(proc)
        if layout is not None:
            stop(layout)
        shutil.rmtree(reachable, ignore_errors=True)
    return results


def summary(r: dict) -> list[str]:
    names = {"postgres_server": "`make server` (PostgreSQL)", "sqlite_server": "mlflow server over SQLite",
             "sqlite_file": "local SQLite file"}
    lines = [f"## Team server: one epoch's log call ({r['epochs_logged']} epochs, "
             f"{r['logging']['sqlite_file']['metrics_per_call']} metrics + heartbeat each)", "",
             "| store | median ms | mean ms | p90 ms |", "|---|---|---|---|"]
    for name, c in r["logging"].items():
        lines.append(f"| {names[name]} | {c['median_ms']:.1f} | {c['mean_ms']:.1f} | {c['p90_ms']:.1f} |")
    if "report" in r:
        lines += ["", f"`xentlab-compare` over {r['child_runs']} children through the server (target "
                      f"{r['target_report_s']:.0f} s):", "",
                  "| server | command s | its CPU s | server CPU s | sweep written in s |", "|---|---|---|---|---|"]
        for name, c in r["report"].items():
            lines.append(f"| {names[name]} | {c['compare_s']:.1f} | {c['compare_cpu_s']:.1f} | "
                         f"{c['server_cpu_s']:.1f} | {c['build_s']:.1f} |")
    return [*lines, ""]

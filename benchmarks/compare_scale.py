"""`xentlab-compare` at scale: sweeps of 1,000 child runs (100 with --quick) written straight into a store, then
reported from SQLite and through a local `mlflow server`. `synthetic_sweep` also serves the report's tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

SIZES = {"smoke": dict(runs=10), "quick": dict(runs=100), "full": dict(runs=1000)}


def synthetic_sweep(uri: str, runs: list[dict], *, experiment: str = "xentlab", epochs: int = 5,
                    baseline: str | None = None, reliability: dict[str, dict] | None = None) -> str:
    """A sweep written straight into the store at `uri`, laid out as SweepRun and train.py lay it out; returns
    the parent run id.

    Args:
        runs: one dict per child run: `variant` (its overrides, e.g. "loss=focal"), `seed`, `metrics` (final
            values), optional `params`, `name` (default `<variant>,trainer.seed=<seed>`, as older sweeps named
            runs) and `tags` (e.g. xentlab.variant, as sweeps tag them now). Each gets `epochs` steps of
            val_loss/val_nll/samples_per_s history ending at its final value.
        baseline: the preset's baseline, stored as the parent's tag.
        reliability: {variant: reliability.json content} logged as each of its runs' artifact.
    """
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    from xentlab.tracking.store import BASELINE_TAG, ROLE_TAG, SWEEP_TAG, setup_experiment

    experiment_id = setup_experiment(uri, experiment)
    client = MlflowClient(uri)
    sweep_id = f"synthetic{time.time_ns() % 10**9}"
    tags = {SWEEP_TAG: sweep_id, ROLE_TAG: "sweep"} | ({BASELINE_TAG: baseline} if baseline else {})
    parent = client.create_run(experiment_id, run_name=f"sweep/{sweep_id}", tags=tags).info.run_id
    start = int(time.time() * 1000)
    for i, spec in enumerate(runs):
        name = spec.get("name", f"{spec['variant']},trainer.seed={spec['seed']}")
        run = client.create_run(experiment_id, run_name=name, start_time=start + i,
                                tags={"mlflow.parentRunId": parent, SWEEP_TAG: sweep_id, **spec.get("tags", {})})
        params = {"trainer.seed": str(spec["seed"]), "loss.name": "crossentropy", **spec.get("params", {})}
        final = spec["metrics"]
        per_epoch = ("val_loss", "val_nll", "samples_per_s")  # as train.py logs them: the last epoch is final
        metrics = [Metric(k, float(v), start + i, 0) for k, v in final.items() if k not in per_epoch]
        for epoch in range(epochs):  # decaying towards the final value
            scale = 1.0 + 0.5 * (epochs - 1 - epoch) / max(epochs, 1)
            for key in ("val_loss", "val_nll"):
                if key in final:
                    metrics.append(Metric(key, float(final[key]) * scale, start + i, epoch))
            metrics.append(Metric("samples_per_s", float(final.get("samples_per_s", 1000.0 + epoch)), start + i,
                                  epoch))
        client.log_batch(run.info.run_id, metrics=metrics, params=[Param(k, v) for k, v in params.items()],
                         tags=[RunTag("xentlab.synthetic", "true")])
        if reliability and spec["variant"] in reliability:
            client.log_dict(run.info.run_id, reliability[spec["variant"]], "evaluation/reliability.json")
        client.set_terminated(run.info.run_id, "FINISHED", end_time=start + i + 1000)
    client.set_terminated(parent, "FINISHED")
    return parent


def _start_server(db: Path, artifacts: Path, workers: int = 1) -> tuple[subprocess.Popen, str]:
    """A local `mlflow server` over `db` with `workers` processes, once it answers /health (the caller stops it)."""
    import socket
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--backend-store-uri",
         f"sqlite:///{db}", "--artifacts-destination", str(artifacts), "--workers", str(workers)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env={**os.environ, "MLFLOW_TRACKING_URI": ""},
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.5)
    _stop_server(proc)
    raise RuntimeError("mlflow server did not start within 120 s")


def _stop_server(proc: subprocess.Popen) -> None:
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)


def _timed_compare(uri: str, out: Path) -> tuple[float, float]:
    """Wall and CPU seconds (user + system) of the `xentlab-compare` command, interpreter start and imports
    included; the CPU figure barely moves when other work shares the machine."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "xentlab.cli.compare", "--tracking-uri", uri, "--out", str(out)],
                            capture_output=True, text=True, timeout=1800, env={**os.environ, "MLFLOW_TRACKING_URI": ""})
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-2000:])
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


RELIABILITY_BINS = 15


def _reliability_file() -> dict:
    """A reliability.json as the evaluation figures write it (15 bins)."""
    import numpy as np

    return {"num_bins": RELIABILITY_BINS, "edges": np.linspace(0, 1, RELIABILITY_BINS + 1).tolist(),
            "count": [10] * RELIABILITY_BINS, "accuracy": np.linspace(0.05, 0.95, RELIABILITY_BINS).tolist(),
            "confidence": np.linspace(0.05, 0.97, RELIABILITY_BINS).tolist(), "ece": 0.02}


def report_scale_case(folder: Path, name: str, n_runs: int, seeds: int, *, reliability_files: bool,
                      epochs: int = 5, command: bool = True, server: bool = True) -> dict:
    """One sweep shape of `bench_compare_scale`: `n_runs` children (`n_runs / seeds` variants), reported from
    SQLite and through a local `mlflow server` over the same database, as a command and again in this process.
    command=False (the smoke size) times the report in this process instead of the command: a process start costs
    seconds of CPU, and the figures of a smoke run mean nothing; its stores are real all the same. server=False
    leaves the server out (the smoke size starts one, for one of the shapes)."""
    import numpy as np

    rng = np.random.default_rng(0)
    runs = [{"variant": f"loss=v{i // seeds:03d}", "seed": i % seeds,
             "metrics": {"val_loss": 0.6 + rng.normal(0, 0.02), "val_nll": 0.5 + rng.normal(0, 0.02),
                         "val_accuracy": 0.9 + rng.normal(0, 0.01), "test_nll": 0.5 + rng.normal(0, 0.02),
                         "test_accuracy": 0.9 + rng.normal(0, 0.01)}} for i in range(n_runs)]
    variants = sorted({r["variant"] for r in runs})
    files = {v: _reliability_file() for v in variants} if reliability_files else None
    db = folder / f"compare_scale_{name}.db"
    start = time.perf_counter()
    parent = synthetic_sweep(f"sqlite:///{db}", runs, epochs=epochs, reliability=files)
    build_s = time.perf_counter() - start
    from xentlab.report.compare import write_report

    def in_process(uri: str, out: Path) -> float:  # the report alone: imports done, the store warm
        start = time.perf_counter()
        write_report(uri, parent_run_id=parent, out_dir=out)
        return time.perf_counter() - start

    def in_process_with_cpu(uri: str, out: Path) -> tuple[float, float]:
        start_cpu = time.process_time()
        return in_process(uri, out), time.process_time() - start_cpu

    timed = _timed_compare if command else in_process_with_cpu
    sqlite_s, sqlite_cpu_s = timed(f"sqlite:///{db}", folder / f"report_sqlite_{name}")
    sqlite_report_s = in_process(f"sqlite:///{db}", folder / f"report_sqlite_again_{name}")
    server_s = server_cpu_s = server_report_s = None
    if server:
        proc, url = _start_server(db, folder / f"server_artifacts_{name}")
        try:
            server_s, server_cpu_s = timed(url, folder / f"report_server_{name}")
            server_report_s = in_process(url, folder / f"report_server_again_{name}")
        finally:
            _stop_server(proc)
    return {"child_runs": n_runs, "variants": len(variants), "seeds": seeds, "reliability_files": reliability_files,
            "build_store_s": build_s, "sqlite_s": sqlite_s, "sqlite_cpu_s": sqlite_cpu_s, "server_s": server_s,
            "server_cpu_s": server_cpu_s, "sqlite_report_s": sqlite_report_s, "server_report_s": server_report_s,
            "load_average": os.getloadavg()[0]}


def bench_compare_scale(size: str, folder: Path) -> dict:
    """`xentlab-compare` on sweeps of 1,000 child runs (100 with --quick), 5 epochs of history each, in two shapes:
    many variants (200 x 5 seeds, no reliability file) and many seeds (10 x 100, each run with the
    `evaluation/reliability.json` runs logged before the `xentlab.reliability` tag existed)."""
    n_runs, command = SIZES[size]["runs"], size != "smoke"
    cases = {"many_variants": report_scale_case(folder, "many_variants", n_runs, 5, reliability_files=False,
                                                command=command, server=command),
             "many_seeds": report_scale_case(folder, "many_seeds", n_runs, n_runs // 10, reliability_files=True,
                                             command=command)}
    return {"child_runs": n_runs, "epochs_of_history": 5, "cases": cases,
            "sqlite_s": max(c["sqlite_s"] for c in cases.values()),
            "server_s": max(c["server_s"] for c in cases.values() if c["server_s"] is not None),
            "target_sqlite_s": 10.0, "target_server_s": 20.0,
            "measures": "sqlite_s, server_s: wall seconds of `xentlab-compare --tracking-uri URI` (process start, "
                        "imports and a cold server included; the slower shape); *_cpu_s: its user + system CPU "
                        "seconds; *_report_s: write_report again in this process"}


def summary(r: dict) -> list[str]:
    """The report row: per sweep shape and store, the command's wall and CPU seconds against the targets."""
    lines = [f"## xentlab-compare on {r['child_runs']} child runs ({r['epochs_of_history']} epochs of history each; "
             f"targets: SQLite {r['target_sqlite_s']:.0f} s, server {r['target_server_s']:.0f} s)", "",
             "| shape | store | `xentlab-compare` s | CPU s | report alone s |", "|---|---|---|---|---|"]
    for name, c in r["cases"].items():
        shape = (f"{name}: {c['variants']} variants x {c['seeds']} seeds"
                 + (", reliability files" if c["reliability_files"] else ""))
        lines.append(f"| {shape} | SQLite | {c['sqlite_s']:.1f} | {c['sqlite_cpu_s']:.1f} | "
                     f"{c['sqlite_report_s']:.1f} |")
        if c["server_s"] is not None:
            lines.append(f"| {shape} | local mlflow server | {c['server_s']:.1f} | {c['server_cpu_s']:.1f} | "
                         f"{c['server_report_s']:.1f} |")
    return lines + ["", "Wall seconds include process start and imports; CPU seconds (user + system) barely move "
                        "when other work shares the machine.", ""]

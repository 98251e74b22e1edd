"""Sweeps through the real CLI: parent/child runs, the comparison report, parallel jobs, a real MLflow server."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from conftest import free_port, run_cli, runs_of, start_mlflow_server, stop_mlflow_server

SMALL = ["trainer.epochs=2", "trainer.batch_size=32", "data.limit=64", "model=mlp", "tracking.log_plots=false"]


def _children(uri: str, parent_id: str):
    client = MlflowClient(uri)
    exp = client.get_run(parent_id).info.experiment_id
    return client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{parent_id}'")


def _parent(uri: str):
    parents = [r for r in runs_of(uri) if r.data.tags.get("xentlab.role") == "sweep"]
    assert len(parents) == 1, [r.info.run_name for r in runs_of(uri)]
    return parents[0]


def test_sweep_makes_one_parent_and_a_child_per_job_and_a_true_report(tmp_path, store):
    result = run_cli(
        ["-m", *SMALL, f"tracking.uri={store}", "loss=crossentropy,focal", "trainer.seed=0,1"], cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    parent = _parent(store)
    assert parent.info.status == "FINISHED"
    sweep_id = parent.data.tags["xentlab.sweep_id"]
    children = _children(store, parent.info.run_id)
    assert len(children) == 4 and all(c.info.status == "FINISHED" for c in children)
    assert all(c.data.tags["xentlab.sweep_id"] == sweep_id for c in children)
    assert {c.info.run_name for c in children} == {
        f"loss={loss},trainer.seed={seed}" for loss in ("crossentropy", "focal") for seed in (0, 1)
    }
    # The report aggregates seeds: recompute mean and std of test_accuracy per loss from the child runs.
    csv_path = MlflowClient(store).download_artifacts(parent.info.run_id, "report/report.csv", str(tmp_path))
    import csv

    rows = {r["variant"]: r for r in csv.DictReader(open(csv_path))}
    assert set(rows) == {"loss=crossentropy", "loss=focal"}
    for loss in ("crossentropy", "focal"):
        values = [c.data.metrics["test_accuracy"] for c in children if c.info.run_name.startswith(f"loss={loss},")]
        assert float(rows[f"loss={loss}"]["test_accuracy"]) == pytest.approx(np.mean(values), abs=1e-9)
        assert float(rows[f"loss={loss}"]["test_accuracy_std"]) == pytest.approx(np.std(values, ddof=1), abs=1e-9)
        assert rows[f"loss={loss}"]["n"] == "2"
    artifacts = {a.path for a in MlflowClient(store).list_artifacts(parent.info.run_id, "report")}
    assert {"report/report.md", "report/report.csv", "report/val_nll_by_variant.png",
            "report/val_loss_curves.png"} <= artifacts
    assert "| variant |" in result.stdout  # the table is printed at the end of the sweep

    # On demand: xentlab-compare on the same store finds the latest sweep and prints the same rows.
    compare = subprocess.run(
        [sys.executable, "-m", "xentlab.compare", "--tracking-uri", store, "--out", str(tmp_path / "r")],
        capture_output=True, text=True, timeout=120,
    )
    assert compare.returncode == 0, compare.stderr[-2000:]
    assert sweep_id in compare.stdout and "loss=focal" in compare.stdout


def test_jobs_in_one_process_do_not_leak_memory_or_layer_names(tmp_path, store):
    """Ten jobs in one process: RSS after the tenth within 20% of after the second."""
    import resource  # noqa: F401  (Linux: /proc/self/status gives the current RSS)

    from conftest import compose
    from xentlab.train import run

    def rss_mb() -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    readings = []
    for seed in range(10):
        run(compose([*SMALL, "trainer.epochs=1", f"trainer.seed={seed}", f"tracking.uri={store}",
                     "tracking.log_model=false"]))
        readings.append(rss_mb())
    assert readings[9] <= 1.2 * readings[1], readings
    names = {r.data.params["model.name"] for r in runs_of(store)}
    assert names == {"mlp"} and len(runs_of(store)) == 10


def test_four_parallel_jobs_on_a_fresh_sqlite_store_all_complete(tmp_path, store):
    result = run_cli(
        ["-m", "+sweep=joblib", *SMALL, "trainer.epochs=1", f"tracking.uri={store}", "hydra.launcher.n_jobs=4"],
        cwd=tmp_path, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    parent = _parent(store)
    children = _children(store, parent.info.run_id)
    assert len(children) == 4
    for child in children:
        assert child.info.status == "FINISHED"
        assert {"loss", "val_loss", "test_loss", "test_auc"} <= set(child.data.metrics)


@pytest.mark.slow
def test_eight_parallel_jobs_on_a_fresh_sqlite_store_all_complete(tmp_path, store):
    result = run_cli(
        ["-m", "+sweep=joblib", *SMALL, "trainer.epochs=1", f"tracking.uri={store}", "hydra.launcher.n_jobs=8",
         "trainer.seed=0,1"], cwd=tmp_path, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    children = _children(store, _parent(store).info.run_id)
    assert len(children) == 8 and all(c.info.status == "FINISHED" for c in children)
    assert all(len(MlflowClient(store).get_metric_history(c.info.run_id, "val_loss")) == 1 for c in children)


def test_optuna_preset_returns_the_metric_and_records_trials(tmp_path, store):
    result = run_cli(
        ["+sweep=optuna", "hydra.sweeper.n_trials=2", *SMALL, "trainer.epochs=1", f"tracking.uri={store}"],
        cwd=tmp_path, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    best = re.search(r"Best value: ([0-9.e+-]+)", result.stdout + result.stderr)
    assert best, (result.stdout + result.stderr)[-3000:]
    parent = _parent(store)
    children = _children(store, parent.info.run_id)
    assert len(children) == 2
    # The sweeper minimised the final val_nll each job returned: one scale whatever the label smoothing.
    assert float(best.group(1)) == pytest.approx(min(c.data.metrics["val_nll"] for c in children), rel=1e-5)


@pytest.fixture
def mlflow_server(tmp_path):
    """A real `mlflow server` on 127.0.0.1 with its own SQLite store, stopped after the test."""
    port = free_port()
    proc = start_mlflow_server(port, tmp_path / "server.db", tmp_path / "server-artifacts")
    yield f"http://127.0.0.1:{port}"
    stop_mlflow_server(proc)


@pytest.mark.slow
def test_sweep_against_a_real_tracking_server(tmp_path, mlflow_server):
    result = run_cli(["-m", *SMALL, "trainer.epochs=1", f"tracking.uri={mlflow_server}",
                      "labels=sparse,one_hot"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    parent = _parent(mlflow_server)
    children = _children(mlflow_server, parent.info.run_id)
    assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children)
    assert not (tmp_path / "outputs" / "mlflow.db").exists()


def test_unreachable_tracking_server_fails_fast(tmp_path):
    port = free_port()  # nothing listens there
    start = time.time()
    result = run_cli(["trainer.epochs=1", f"tracking.uri=http://127.0.0.1:{port}"], cwd=tmp_path, timeout=120)
    assert result.returncode != 0
    assert "did not answer" in result.stderr
    assert time.time() - start < 60  # MLflow alone retries for minutes; interpreter start included

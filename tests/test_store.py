"""The tracking store: artifacts stay inside it, unusable stores fail in seconds, a fresh store survives a race,
credentials in a server URI work and are never printed."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import TINY, compose, free_port, run_cli, runs_of, start_mlflow_server, stop_mlflow_server
from xentlab.tracking.store import default_artifact_location, resolve_tracking_uri


@pytest.mark.parametrize("name", ["../../../x", "/abs/dir", "a/../../b", "..", "team/vision", "ok-name_1.2"])
def test_artifact_folders_stay_under_the_store_whatever_the_experiment_name(name, tmp_path):
    root = (tmp_path / "mlartifacts").resolve()
    location = Path(default_artifact_location(f"sqlite:///{tmp_path / 'mlflow.db'}", name)[len("file://"):])
    assert location.resolve().parent == root
    if name == "ok-name_1.2":
        assert location.name == name  # plain names keep their folder name


def test_a_run_in_an_escaping_experiment_writes_under_the_store(tmp_path, monkeypatch):
    from xentlab.cli.train import run

    monkeypatch.chdir(tmp_path)
    store = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    run(compose([*TINY, f"tracking.uri={store}", "model=mlp", "data=breast_cancer",
                 "tracking.experiment=../../../escaped"]))
    (logged,) = runs_of(store, "../../../escaped")
    artifacts = Path(logged.info.artifact_uri[len("file://"):]).resolve()
    assert artifacts.is_relative_to((tmp_path / "store" / "mlartifacts").resolve())
    assert any(artifacts.rglob("config.yaml"))
    assert not (tmp_path.parent.parent / "escaped").exists()


def test_an_unwritable_store_fails_in_seconds_naming_the_path(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the store's folder should be")
    started = time.monotonic()
    result = run_cli([*TINY, f"tracking.uri=sqlite:///{blocker / 'mlflow.db'}"], cwd=tmp_path)
    assert time.monotonic() - started < 60  # MLflow alone retried for 105 s
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"the tracking store {blocker / 'mlflow.db'} cannot be created or written" in result.stderr
    assert len(result.stderr.strip().splitlines()) < 10


@pytest.mark.slow
def test_jobs_starting_together_on_a_fresh_store_all_finish(tmp_path):
    store = f"sqlite:///{tmp_path / 'fresh.db'}"
    cmd = [sys.executable, "-c", "from xentlab.cli.train import main; main()", *TINY, f"tracking.uri={store}",
           "model=mlp", "data=breast_cancer"]
    procs = [subprocess.Popen([*cmd, f"trainer.seed={seed}"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for seed in range(3)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [e[-1500:] for e in errors]
    assert sorted(r.info.status for r in runs_of(store)) == ["FINISHED"] * 3


@pytest.mark.slow
def test_runs_starting_together_each_link_the_same_dataset_on_a_sqlite_store(tmp_path):
    # Parallel sweep jobs log one dataset at the same moment: MLflow looks it up, then inserts it, and all but one
    # insert met SQLite's UNIQUE constraint (the run FAILED) before log_input tried again.
    import threading

    import mlflow
    import numpy as np
    from mlflow.tracking import MlflowClient

    from xentlab.tracking.store import log_input

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("race")
    run_ids = [client.create_run(experiment_id).info.run_id for _ in range(4)]
    dataset = mlflow.data.from_numpy(np.zeros((5, 2)), name="digits", source="digits")
    barrier, errors = threading.Barrier(len(run_ids)), []

    def job(run_id: str) -> None:
        mlflow.set_tracking_uri(uri)
        with mlflow.start_run(run_id=run_id):
            barrier.wait()
            try:
                log_input(dataset, "training")
            except Exception as err:  # noqa: BLE001 - collected and asserted below
                errors.append(str(err)[:200])

    threads = [threading.Thread(target=job, args=(run_id,)) for run_id in run_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert all(len(client.get_run(run_id).inputs.dataset_inputs) == 1 for run_id in run_ids)


def test_credentials_in_a_server_uri_reach_the_server_and_are_never_shown(tmp_path):
    port = free_port()
    server = start_mlflow_server(port, tmp_path / "server.db", tmp_path / "artifacts")
    try:
        uri = f"http://alice:S3CRETPW@127.0.0.1:{port}"
        result = run_cli([*TINY, f"tracking.uri={uri}", "model=mlp", "data=breast_cancer",
                          "tracking.system_metrics=false"], cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "S3CRETPW" not in result.stdout + result.stderr
        (run,) = runs_of(f"http://127.0.0.1:{port}")
        assert run.info.status == "FINISHED" and run.data.params["tracking.uri"] == uri.replace("S3CRETPW", "***")
        # A failing job with that URI prints no password either.
        failing = run_cli([*TINY, f"tracking.uri={uri}", "trainer.epochs=0"], cwd=tmp_path)
        assert failing.returncode == 2 and "S3CRETPW" not in failing.stdout + failing.stderr
    finally:
        stop_mlflow_server(server, signal.SIGKILL)  # SIGTERM's graceful stop waits ~4 s; nothing here needs it


def test_relative_and_null_uris_resolve_to_absolute_stores(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(None, tmp_path) == f"sqlite:///{tmp_path.resolve() / 'outputs' / 'mlflow.db'}"
    assert resolve_tracking_uri("sqlite:///rel.db", tmp_path) == f"sqlite:///{tmp_path.resolve() / 'rel.db'}"

"""The outbox: records kept while the tracking server is gone, sent later by the real `xentlab-sync` CLI.

Fast tests use a port nothing listens on as the lost server and a real SQLite store as the one that comes back;
the slow tests kill and restart a real `mlflow server` under a training run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from conftest import free_port, runs_of, start_mlflow_server, stop_mlflow_server
from xentlab.tracking.outbox import Outbox


def sync(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", "from xentlab.cli.sync import main; main()", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture
def lost_server(monkeypatch) -> str:
    """A tracking URI nobody answers, with MLflow's retries off so each failed call returns at once."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    return f"http://127.0.0.1:{free_port()}"


@pytest.mark.slow
def test_records_kept_during_an_outage_arrive_once_with_xentlab_sync(tmp_path, store, lost_server):
    import keras

    client = MlflowClient(store)
    run_id = client.create_run(client.create_experiment("outage", (tmp_path / "artifacts").as_uri())).info.run_id
    job = tmp_path / "job"
    outbox = Outbox(lost_server, run_id, job)

    for epoch in range(3):
        outbox.log_metrics({"loss": 1.0 / (epoch + 1), "val_loss": 2.0 / (epoch + 1)}, step=epoch)
    outbox.set_tag("xentlab.heartbeat", "1", keep=False)  # dropped: worthless later
    outbox.set_tag("note", "kept")
    outbox.log_text("hello", "generated.txt")
    folder = tmp_path / "plots"
    folder.mkdir()
    (folder / "per_class.json").write_text("{}")
    outbox.log_artifacts(folder, "evaluation")
    folder.joinpath("per_class.json").unlink()  # a temporary folder is gone by the time the server is back
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    outbox.log_keras_model(model)
    outbox.end("FINISHED")

    assert outbox.pending == 8
    assert client.get_run(run_id).info.status == "RUNNING"
    assert client.get_metric_history(run_id, "loss") == []

    down = sync([str(job)], cwd=tmp_path)  # the job's own server is still gone
    assert down.returncode == 1 and "8 records still pending" in down.stderr
    moved = sync([str(tmp_path), "--tracking-uri", store], cwd=tmp_path)  # a parent folder finds the job
    assert moved.returncode == 0, moved.stderr
    assert f"sent 8 records to run {run_id} (FINISHED)" in moved.stdout

    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["note"] == "kept"
    assert "xentlab.heartbeat" not in run.data.tags
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "val_loss")] == [
        (0, 2.0), (1, 1.0), (2, pytest.approx(2 / 3))]
    assert {a.path for a in client.list_artifacts(run_id)} >= {"generated.txt", "evaluation", "model"}
    mlflow.set_tracking_uri(store)
    loaded = mlflow.keras.load_model(f"runs:/{run_id}/model")
    x = np.ones((1, 3), "float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)

    again = sync([str(job), "--tracking-uri", store], cwd=tmp_path)
    assert again.returncode == 0 and "nothing pending" in again.stdout
    assert len(client.get_metric_history(run_id, "loss")) == 3  # nothing twice


def test_a_status_kept_from_before_a_resume_does_not_override_the_later_end(tmp_path, store, lost_server):
    client = MlflowClient(store)
    run_id = client.create_run(client.create_experiment("resumed", (tmp_path / "artifacts").as_uri())).info.run_id
    job = tmp_path / "job"
    Outbox(lost_server, run_id, job).end("KILLED")  # SIGTERM during an outage
    time.sleep(0.01)
    client.set_terminated(run_id, "FINISHED")  # the resumed job finished the run later
    assert sync([str(job), "--tracking-uri", store], cwd=tmp_path).returncode == 0
    assert client.get_run(run_id).info.status == "FINISHED"


def test_credentials_in_the_uri_are_kept_for_sync_but_masked_when_printed(tmp_path, store, lost_server, capsys):
    uri = lost_server.replace("http://", "http://alice:s3cret@")
    Outbox(uri, "0" * 32, tmp_path).log_metrics({"loss": 1.0})
    printed = capsys.readouterr().err
    assert "does not answer" in printed and "s3cret" not in printed and "alice:***@" in printed
    assert json.loads((tmp_path / "outbox" / "run.json").read_text())["uri"] == uri  # xentlab-sync reaches it


def test_errors_the_store_reports_are_raised_not_kept(tmp_path, store):
    outbox = Outbox(store, "0" * 32, tmp_path)  # no such run
    with pytest.raises(mlflow.exceptions.MlflowException):
        outbox.log_metrics({"loss": 1.0})
    assert outbox.pending == 0 and not (tmp_path / "outbox").exists()


def test_sync_of_a_missing_folder_says_what_to_pass(tmp_path):
    result = sync([str(tmp_path / "nope")], cwd=tmp_path)
    assert result.returncode == 2 and "pass a job folder" in result.stderr


# ---------------------------------------------------------------------------------------------- a real server
def _train_in_background(uri: str, cwd: Path, epochs: int) -> subprocess.Popen:
    """The seed CNN on digits at batch 16 (about 0.4 s per epoch here), one log line per epoch."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    args = ["trainer.batch_size=16", f"trainer.epochs={epochs}", "trainer.verbose=line",
            "tracking.system_metrics=false", f"tracking.uri={uri}"]
    return subprocess.Popen([sys.executable, "-c", "from xentlab.cli.train import main; main()", *args], cwd=cwd,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_epoch_start(job: subprocess.Popen, epoch: int) -> str:
    """Reads the job's output until Keras announces `epoch` (1-based): the epochs before it are logged."""
    seen = []
    for line in job.stdout:
        seen.append(line)
        if line.startswith(f"Epoch {epoch}/"):
            return "".join(seen)
    raise AssertionError("training ended before epoch {epoch}: " + "".join(seen)[-2000:])


def _the_run(db: Path) -> str:
    (run,) = runs_of(f"sqlite:///{db}")
    return run.info.run_id


def _assert_complete(uri: str, run_id: str, epochs: int) -> None:
    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED", run.data.tags
    for name in ("loss", "val_loss", "val_auc"):
        assert [m.step for m in client.get_metric_history(run_id, name)] == list(range(epochs)), name
    assert {"test_loss", "test_accuracy", "test_auc"} <= set(run.data.metrics)
    assert {a.path for a in client.list_artifacts(run_id)} >= {"evaluation", "config.yaml"}
    import xentlab.core.losses  # noqa: F401  (the classes the saved model names)
    import xentlab.core.metric_set  # noqa: F401  (registers every metric class a saved model refers to)

    mlflow.set_tracking_uri(uri)
    assert mlflow.keras.load_model(f"runs:/{run_id}/model").output_shape == (None, 10)


def _lose_the_server_mid_run(tmp_path: Path, epochs: int) -> tuple[subprocess.Popen, str, int, Path]:
    """Starts a real server and a job training against it, then SIGKILLs the server (and its workers) once
    epochs 1 and 2 are logged. Returns the job, what it printed so far, the port and the server's store."""
    db, port = tmp_path / "server.db", free_port()
    server = start_mlflow_server(port, db, tmp_path / "server-artifacts")
    job = _train_in_background(f"http://127.0.0.1:{port}", tmp_path, epochs)
    try:
        head = _wait_for_epoch_start(job, 3)
    except BaseException:
        job.kill()
        raise
    finally:
        stop_mlflow_server(server, signal.SIGKILL)
    return job, head, port, db


@pytest.mark.slow
def test_server_killed_and_restarted_mid_run_gets_every_metric(tmp_path):
    epochs = 60
    job, head, port, db = _lose_the_server_mid_run(tmp_path, epochs)
    server = None
    try:
        time.sleep(3)  # training goes on without a server
        server = start_mlflow_server(port, db, tmp_path / "server-artifacts")
        out, err = job.communicate(timeout=600)
        assert job.returncode == 0, err[-3000:]
        assert "does not answer: training goes on" in err
        assert "kept tracking records" in head + out and "did not come back" not in err
        _assert_complete(f"http://127.0.0.1:{port}", _the_run(db), epochs)
    finally:
        job.kill()
        if server is not None:
            stop_mlflow_server(server)


@pytest.mark.slow
def test_server_gone_until_the_job_ends_then_xentlab_sync_sends_everything(tmp_path):
    epochs = 8
    job, _, port, db = _lose_the_server_mid_run(tmp_path, epochs)
    started = time.time()
    try:
        out, err = job.communicate(timeout=600)
    finally:
        job.kill()
    offline_s = time.time() - started
    assert job.returncode == 0, err[-3000:]
    assert "xentlab-sync" in err and "did not come back" in err
    assert offline_s < 90  # each epoch waits at most one short probe for the server
    jobs = [p.parent for p in (tmp_path / "outputs").glob("runs/**/outbox")]
    assert len(jobs) == 1
    run_id = json.loads((jobs[0] / "outbox" / "run.json").read_text())["run_id"]
    assert MlflowClient(f"sqlite:///{db}").get_run(run_id).info.status == "RUNNING"  # until the records arrive

    server = start_mlflow_server(port, db, tmp_path / "server-artifacts")
    try:
        result = sync([str(jobs[0])], cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        _assert_complete(f"http://127.0.0.1:{port}", run_id, epochs)
    finally:
        stop_mlflow_server(server)


def test_xentlab_sync_to_a_server_with_credentials_prints_no_password(tmp_path, monkeypatch):
    """MLflow prints "View run ... at <server URI>" when a run on a server ends; sync must not let it."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    port, db = free_port(), tmp_path / "server.db"
    client = MlflowClient(f"sqlite:///{db}")
    run_id = client.create_run(client.create_experiment("e", (tmp_path / "artifacts").as_uri())).info.run_id
    uri = f"http://alice:s3cretPW@127.0.0.1:{port}"
    outbox = Outbox(uri, run_id, tmp_path / "job")  # the server is down: both records are kept
    outbox.log_metrics({"loss": 0.5}, step=0)
    outbox.end("FINISHED")
    server = start_mlflow_server(port, db, tmp_path / "artifacts")
    try:
        result = sync([str(tmp_path / "job")], cwd=tmp_path)
    finally:
        stop_mlflow_server(server, signal.SIGKILL)
    assert result.returncode == 0, result.stderr
    assert f"sent 2 records to run {run_id} (FINISHED)" in result.stdout
    assert "s3cretPW" not in result.stdout + result.stderr
    assert client.get_run(run_id).info.status == "FINISHED"

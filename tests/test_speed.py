"""Cheaper epochs without losing anything: MLflow's asynchronous logging through the outbox (real SQLite stores, a
real lock held by another process), validation every n epochs, and each parallel job's share of the cores."""

from __future__ import annotations

import math
import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient

from conftest import TINY, compose, config_of, runs_of
from test_busy_store import _new_run, locked
from xentlab.errors import ExpectedError
from xentlab.runtime.schedule import align_history, validation_epochs
from xentlab.tracking.outbox import Outbox
from xentlab.tracking.store import STORE_WAIT_ENV


# ---------------------------------------------------------------------------------------------- the schedule
def test_validation_runs_every_nth_epoch_and_after_the_last():
    assert validation_epochs(7, 3) == [3, 6, 7]
    assert validation_epochs(6, 3) == [3, 6]
    assert validation_epochs(4, 1) == [1, 2, 3, 4]
    assert validation_epochs(2, 5) == [2]  # fewer epochs than the interval: the last one still validates


def test_a_history_of_sparse_validation_lines_up_with_the_epochs():
    history = {"loss": [4.0, 3.0, 2.0, 1.0], "val_loss": [3.5, 1.5]}
    aligned = align_history(history, [1, 2, 3, 4], validation_epochs(4, 3))  # validated after epochs 3 and 4
    assert aligned["loss"] == [4.0, 3.0, 2.0, 1.0]
    assert [math.isnan(v) for v in aligned["val_loss"]] == [True, True, False, False]
    assert aligned["val_loss"][2:] == [3.5, 1.5]
    resumed = align_history({"loss": [2.0, 1.0], "val_loss": [3.5, 1.5]}, [3, 4], validation_epochs(4, 3))
    assert resumed["val_loss"] == [3.5, 1.5]  # a resumed fit from epoch 3 validated both of its epochs


@pytest.mark.parametrize("key", ["validate_every", "checkpoint_every"])
def test_an_interval_below_one_epoch_is_refused_before_training(key):
    from xentlab.config.checks import check_config

    with pytest.raises(ExpectedError, match=rf"trainer.{key}.*>= 1.*trainer.{key}=1"):
        check_config(config_of([f"trainer.{key}=0"]))


# ---------------------------------------------------------------------------------------------- async logging
def test_asynchronous_records_all_arrive_before_the_run_ends(tmp_path, store):
    run_id = _new_run(store)
    outbox = Outbox(store, run_id, tmp_path / "job")
    for step in range(5):
        outbox.log_metrics({"loss": 1.0 / (step + 1), "val_loss": 2.0 / (step + 1)}, step=step, synchronous=False)
        outbox.set_tag("xentlab.heartbeat", str(step), keep=False, synchronous=False)
    outbox.settle()
    outbox.set_tag("xentlab.heartbeat", "last", keep=False, synchronous=False)  # none in flight: it is queued
    outbox.end("FINISHED")  # settles what is queued, then the status: in that order
    client = MlflowClient(store)
    assert sorted(m.step for m in client.get_metric_history(run_id, "val_loss")) == [0, 1, 2, 3, 4]
    run = client.get_run(run_id)
    # A heartbeat is queued only when the one before it is written, so the tag never goes back.
    assert run.info.status == "FINISHED" and run.data.tags["xentlab.heartbeat"] == "last"
    assert outbox.pending == 0 and not (tmp_path / "job" / "outbox").exists()  # nothing needed keeping


def test_an_asynchronous_record_during_a_lock_is_kept_at_once_and_arrives_later(tmp_path, store, monkeypatch):
    monkeypatch.setenv(STORE_WAIT_ENV, "0.5")
    run_id = _new_run(store)
    outbox = Outbox(store, run_id, tmp_path / "job")
    outbox.log_metrics({"loss": 1.0}, step=0, synchronous=False)
    outbox.settle()
    with locked(tmp_path / "mlflow.db"):
        started = time.monotonic()
        outbox.log_metrics({"loss": 0.5}, step=1, synchronous=False)  # training does not wait for the lock
        outbox.set_tag("xentlab.heartbeat", "1", keep=False, synchronous=False)  # a heartbeat is dropped
        assert time.monotonic() - started < 3.0 and outbox.pending == 1
    outbox.log_metrics({"loss": 0.25}, step=2, synchronous=False)  # the kept record goes first
    outbox.settle()
    assert outbox.pending == 0
    history = MlflowClient(store).get_metric_history(run_id, "loss")
    assert sorted((m.step, m.value) for m in history) == [(0, 1.0), (1, 0.5), (2, 0.25)]


def test_an_error_the_store_answers_to_an_asynchronous_record_fails_at_the_settle(tmp_path, store):
    import mlflow

    run_id = _new_run(store)
    outbox = Outbox(store, run_id, tmp_path / "job")
    MlflowClient(store).delete_run(run_id)  # the store now refuses every write to the run
    outbox.log_metrics({"loss": 1.0}, step=0, synchronous=False)  # queued: the error comes back later
    with pytest.raises(mlflow.exceptions.MlflowException, match="must be in the 'active' state"):
        outbox.settle()
    assert outbox.pending == 0  # an error is not an outage: nothing kept to send again


def test_validation_every_n_epochs_logs_val_metrics_at_those_epochs_and_the_last(tmp_path, store):
    from xentlab.cli.train import run

    run(compose([*TINY, "model=mlp", "trainer.epochs=5", "trainer.validate_every=2", "trainer.checkpoint_every=2",
                 "tracking.system_metrics=false", f"tracking.uri={store}"]))
    (logged,) = runs_of(store)
    client = MlflowClient(store)

    def steps(name):
        return sorted(m.step for m in client.get_metric_history(logged.info.run_id, name))

    assert logged.info.status == "FINISHED" and logged.data.params["trainer.validate_every"] == "2"
    assert steps("loss") == steps("epoch_time_s") == [0, 1, 2, 3, 4]
    assert steps("val_loss") == steps("val_accuracy") == [1, 3, 4]  # epochs 2, 4 and the last, 5
    assert "test_accuracy" in logged.data.metrics


# ---------------------------------------------------------------------------------------------- parallel jobs
def test_each_parallel_job_gets_its_share_of_the_cores():
    """In a fresh process, as a joblib worker is: TensorFlow takes cores // jobs threads (at least 1)."""
    code = ("import joblib, tensorflow as tf\n"
            "from xentlab.runtime.launchers import jobs_at_once, split_tf_threads\n"
            "assert jobs_at_once(-1) == joblib.cpu_count() and jobs_at_once(3) == 3\n"
            "share = split_tf_threads(jobs_at_once(-1))\n"
            "tf.constant(1.0) + 1.0  # the runtime starts with the share\n"
            "assert split_tf_threads(1) == joblib.cpu_count()  # too late to change: the first share stands\n"
            "print(share, tf.config.threading.get_intra_op_parallelism_threads(),"
            " tf.config.threading.get_inter_op_parallelism_threads())\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["1", "1", "1"]  # one job per core: one thread each

"""Cheaper epochs without losing anything: MLflow's asynchronous logging through the outbox (real SQLite stores, a
real lock held by another process), validation every n epochs, each parallel job's share of the cores, and the
workers of a parallel sweep warmed while it sets up."""

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


def test_the_warm_up_imports_only_modules_that_exist():
    """A renamed module in the warm-up's list would make every worker's warm-up fail (quietly: the launcher then
    starts cold workers); each name must resolve."""
    import importlib.util

    from xentlab.cli.workers import JOB_MODULES

    assert [name for name in JOB_MODULES if importlib.util.find_spec(name) is None] == []


def _worker_state() -> tuple[int, bool, bool, int]:
    """What a job finds in its worker: the pid, TensorFlow imported, objects frozen, TensorFlow's intra-op threads."""
    import gc
    import os

    loaded = "tensorflow" in sys.modules
    threads = sys.modules["tensorflow"].config.threading.get_intra_op_parallelism_threads() if loaded else -1
    return os.getpid(), loaded, gc.get_freeze_count() > 0, threads


@pytest.mark.slow
def test_the_jobs_of_a_parallel_preset_run_in_the_workers_warmed_while_the_sweep_sets_up():
    """The long_tail preset's warm_workers callback starts the joblib launcher's workers; the launcher's own
    Parallel call (its settings processed as the launcher does) then runs every job in them, each with TensorFlow
    imported and its share of the cores; after the last job stop_workers ends them."""
    import os

    import joblib
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra_plugins.hydra_joblib_launcher._core import process_joblib_cfg
    from omegaconf import OmegaConf

    from xentlab.cli.configs import CONFIG_MODULE
    from xentlab.cli.workers import start_workers, stop_workers
    from xentlab.config.schema import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        cfg = hydra_compose("train", overrides=["+sweep=long_tail"], return_hydra_config=True)
    callback = cfg.hydra.callbacks.warm_workers
    assert callback._target_ == "xentlab.cli.workers.WarmWorkers" and callback.launcher == cfg.hydra.launcher
    launcher_settings = {k: v for k, v in OmegaConf.to_container(cfg.hydra.launcher, resolve=True).items()
                         if k != "_target_"}
    launcher_settings["backend"] = "loky"  # as the launcher's launch() sets them
    process_joblib_cfg(launcher_settings)
    try:
        warm_up = start_workers(cfg.hydra.launcher)
        warm_up.join(timeout=300)
        jobs = joblib.Parallel(**launcher_settings)(joblib.delayed(_worker_state)() for _ in range(6))
        assert warm_up.pids and {pid for pid, *_ in jobs} <= set(warm_up.pids)  # the same pool, not a new one
        # n_jobs=-1: one job per core, one TensorFlow thread each.
        assert all(loaded and frozen and threads == 1 for _, loaded, frozen, threads in jobs), jobs
    finally:
        stop_workers()
    for pid in set(warm_up.pids):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)

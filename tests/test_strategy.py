"""Real tf.distribute strategies on this CPU machine: MirroredStrategy over logical CPUs, multi-worker on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import TINY, run_cli, runs_of

DET = ["trainer.epochs=2", "trainer.batch_size=32", "data.limit=128", "model=mlp", "model.dropout=0.0",
       "trainer.deterministic=true",
       "tracking.log_model=false", "tracking.log_plots=false", "optimizer=sgd"]


@pytest.mark.slow
def test_mirrored_over_two_logical_cpus_matches_one_device(tmp_path):
    losses = {}
    for strategy in ("cpu", "multi_cpu"):
        store = f"sqlite:///{tmp_path / strategy}.db"
        result = run_cli([*DET, f"strategy={strategy}", f"tracking.uri={store}"], cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        (run,) = runs_of(store)
        losses[strategy] = run.data.metrics
        assert run.data.params["hardware.replicas"] == ("2" if strategy == "multi_cpu" else "1")
    for name in ("loss", "val_loss", "test_loss"):
        assert losses["multi_cpu"][name] == pytest.approx(losses["cpu"][name], rel=1e-3), name


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _start_workers(args: list[str], cwd, workers: int = 2) -> list[subprocess.Popen]:
    """`xentlab-train ARGS` as `workers` processes of one MultiWorkerMirroredStrategy cluster on 127.0.0.1."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(workers)]}
    procs = []
    for index in range(workers):
        env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
               "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
        env.pop("MLFLOW_TRACKING_URI", None)
        cmd = [sys.executable, "-c", "from xentlab.cli.train import main; main()", "strategy=multi_worker", *args]
        procs.append(subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    return procs


# 101 training examples in batches of 32: the last batch (5) splits 3/2 over the workers; val and test end on
# partial batches too.
MW = [*DET, "data=breast_cancer", "data.limit=101"]


@pytest.mark.slow
def test_multi_worker_on_localhost_matches_one_device(tmp_path):
    """Two workers on 127.0.0.1 running the real CLI: one MLflow run (the chief's), FINISHED, with the loss and
    metrics of one process training on the same global batches (dropout off: its RNG streams differ per replica)."""
    # What the chief does alone after training (plots, the model, temperature scaling) must not start collectives.
    outputs_on = ["tracking.log_plots=true", "tracking.log_model=true", "calibration=temperature"]
    worker_store = f"sqlite:///{tmp_path / 'workers.db'}"
    procs = _start_workers([*MW, *outputs_on, f"tracking.uri={worker_store}"], tmp_path)
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    assert "Collective all_reduce" not in outputs[0]  # tf.distribute's per-step INFO lines are quieted
    (run,) = runs_of(worker_store)
    assert run.info.status == "FINISHED"
    assert run.data.params["hardware.strategy"] == "multi_worker" and run.data.params["hardware.replicas"] == "2"
    assert not list(tmp_path.glob("outputs/checkpoints/*"))  # the chief's removed when it finished; no other

    one_store = f"sqlite:///{tmp_path / 'one.db'}"
    result = run_cli([*MW, *outputs_on, "strategy=cpu", f"tracking.uri={one_store}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (one,) = runs_of(one_store)
    assert "test_nll_calibrated" in run.data.metrics
    assert sorted(_model_metrics(run)) == sorted(_model_metrics(one))
    for name, value in _model_metrics(one).items():
        assert run.data.metrics[name] == pytest.approx(value, abs=1e-4), name


def _model_metrics(run) -> dict[str, float]:
    """The run's metrics without timings and system metrics (which depend on the machine, not the model)."""
    return {k: v for k, v in run.data.metrics.items()
            if k not in ("epoch_time_s", "samples_per_s") and not k.startswith("system/")}


@pytest.mark.slow
@pytest.mark.parametrize(("victim", "sig", "status", "reason"), [
    (1, signal.SIGKILL, "FAILED", "unhealthy"),  # a peer dies: the chief's next collective fails, names it
    (0, signal.SIGTERM, "KILLED", "SIGTERM"),  # the chief is stopped: KILLED, and the peer does not hang
])
def test_multi_worker_run_never_stays_running_when_a_worker_stops(victim, sig, status, reason, tmp_path, store):
    procs = _start_workers([*MW, "trainer.epochs=500", f"tracking.uri={store}"], tmp_path)
    try:
        deadline = time.time() + 300
        while not _checkpointed_an_epoch(tmp_path):
            assert time.time() < deadline and all(p.poll() is None for p in procs), "no epoch logged"
            time.sleep(1)
        procs[victim].send_signal(sig)
        stopped = time.time()
        for p in procs:
            p.communicate(timeout=120)
        assert time.time() - stopped < 120
        assert all(p.returncode != 0 for p in procs)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    (run,) = runs_of(store)
    assert run.info.status == status
    assert reason in run.data.tags["xentlab.error"]


@pytest.mark.slow
def test_multi_worker_resumes_where_the_chief_stopped(tmp_path, store):
    """The chief is stopped after an epoch and the job relaunched: the chief resumes its run from its checkpoint
    and hands weights and epoch to the other worker; the per-epoch losses are those of an uninterrupted run."""
    args = [*MW, "trainer.epochs=30", f"tracking.uri={store}"]
    procs = _start_workers(args, tmp_path)
    try:
        deadline = time.time() + 300
        while not _checkpointed_an_epoch(tmp_path):
            assert time.time() < deadline and all(p.poll() is None for p in procs), "no epoch logged"
            time.sleep(0.2)
        procs[0].send_signal(signal.SIGTERM)
        for p in procs:
            p.communicate(timeout=120)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    (stopped,) = runs_of(store)
    assert stopped.info.status == "KILLED"
    procs = _start_workers(args, tmp_path)
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    assert "resuming run" in outputs[0]
    (run,) = runs_of(store)
    assert run.info.run_id == stopped.info.run_id and run.info.status == "FINISHED"

    one_store = f"sqlite:///{tmp_path / 'one.db'}"
    result = run_cli([*MW, "trainer.epochs=30", "strategy=cpu", f"tracking.uri={one_store}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (one,) = runs_of(one_store)
    from mlflow.tracking import MlflowClient

    def per_epoch(uri, run_id):
        return [m.value for m in sorted(MlflowClient(uri).get_metric_history(run_id, "val_loss"), key=lambda m: m.step)]

    resumed, straight = per_epoch(store, run.info.run_id), per_epoch(one_store, one.info.run_id)
    assert len(resumed) == len(straight) == 30
    np.testing.assert_allclose(resumed, straight, atol=1e-4)


def _checkpointed_an_epoch(launch_dir) -> bool:
    """The chief has logged and checkpointed an epoch (read from its checkpoint folder: opening the store here
    while the chief creates its tables would race with it)."""
    return any(launch_dir.glob("outputs/checkpoints/*/epoch-*"))


@pytest.mark.slow
def test_multi_worker_refuses_a_global_batch_that_does_not_split(tmp_path, store):
    procs = _start_workers([*MW, "trainer.batch_size=33", f"tracking.uri={store}"], tmp_path)
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode != 0 for p in procs)
    assert all("trainer.batch_size=33 is not divisible by the 2 replicas" in out for out in outputs)
    (run,) = runs_of(store)
    assert run.info.status == "FAILED" and "not divisible" in run.data.tags["xentlab.error"]


@pytest.mark.parametrize(("raw", "message"), [
    (None, "needs the TF_CONFIG environment variable"),
    ("{cluster: 1}", "TF_CONFIG is not valid JSON"),
    ('{"task": {"type": "worker", "index": 0}}', "TF_CONFIG has no 'cluster' entry"),
    ('{"cluster": {"worker": ["host1"]}, "task": {"type": "worker", "index": 0}}', "'host:port' strings"),
    ('{"cluster": {"worker": ["h:1", "h:2"]}, "task": {"type": "worker", "index": 2}}', "TF_CONFIG task must name"),
    ('{"cluster": {"worker": ["h:1", "h:2"]}}', "TF_CONFIG task must name"),
])
def test_malformed_tf_config_says_what_is_wrong(raw, message):
    from xentlab.runtime.strategy import HardwareError, parse_tf_config

    with pytest.raises(HardwareError, match=message) as raised:
        parse_tf_config(raw)
    assert '"task": {"type": "worker", "index": 0}' in str(raised.value)  # the example to copy


def test_is_chief_reads_tf_config(monkeypatch):
    from xentlab.runtime.strategy import HardwareError, is_chief

    two = {"worker": ["h:1", "h:2"]}
    cases = [({"cluster": two, "task": {"type": "worker", "index": 0}}, True),
             ({"cluster": two, "task": {"type": "worker", "index": 1}}, False),
             ({"cluster": {"chief": ["h:0"], **two}, "task": {"type": "worker", "index": 0}}, False),
             ({"cluster": {"chief": ["h:0"], **two}, "task": {"type": "chief", "index": 0}}, True)]
    for config, chief in cases:
        monkeypatch.setenv("TF_CONFIG", json.dumps(config))
        assert is_chief() is chief, config
    monkeypatch.setenv("TF_CONFIG", "not json")
    with pytest.raises(HardwareError, match="not valid JSON"):
        is_chief()


def test_malformed_tf_config_stops_the_cli_before_any_run(tmp_path, store, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["127.0.0.1:1"]}}')
    result = run_cli([*TINY, "strategy=multi_worker", f"tracking.uri={store}"], cwd=tmp_path, timeout=120)
    assert result.returncode != 0
    assert "TF_CONFIG task must name this process" in result.stderr + result.stdout
    assert runs_of(store) == []

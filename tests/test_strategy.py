"""Real tf.distribute strategies on this CPU machine: MirroredStrategy over logical CPUs, multi-worker on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import TINY, config_of, free_ports, run_cli, runs_of

DET = ["trainer.epochs=2", "trainer.batch_size=32", "data.limit=128", "model=mlp", "model.dropout=0.0",
       "trainer.deterministic=true",
       "tracking.log_model=false", "tracking.log_plots=false", "optimizer=sgd"]


# ------------------------------------------------------------------------------------------ the hardware policy
PRESET_OF = {  # what strategy=auto sees on a host -> the preset it must train as
    "tpu": dict(gpus=0, tpu=True), "multi_gpu": dict(gpus=4, tpu=False), "gpu": dict(gpus=1, tpu=False),
    "cpu": dict(gpus=0, tpu=False),
}


@pytest.mark.parametrize("preset", sorted(PRESET_OF))
def test_auto_on_each_hardware_trains_as_the_named_preset(preset):
    from xentlab.runtime.strategy import HARDWARE_POLICY, VisibleHardware, pick_kind, resolve_policy

    auto, named = config_of(["strategy=auto"])["strategy"], config_of([f"strategy={preset}"])["strategy"]
    kind = pick_kind(auto["name"], VisibleHardware(**PRESET_OF[preset]))
    assert kind == preset
    assert resolve_policy(kind, auto) == resolve_policy(preset, named) == HARDWARE_POLICY[preset]


def test_the_presets_name_the_hardware_and_the_table_owns_the_policy():
    from xentlab.runtime.strategy import HARDWARE_POLICY, POLICY_KEYS, STRATEGIES, resolve_policy

    assert set(HARDWARE_POLICY) == set(STRATEGIES) - {"auto"}
    for preset in HARDWARE_POLICY:
        strategy = config_of([f"strategy={preset}"])["strategy"]
        assert {k: strategy[k] for k in POLICY_KEYS} == {"precision": "auto", "jit_compile": None,
                                                          "steps_per_execution": None, "drop_remainder": None}
    tpu = HARDWARE_POLICY["tpu"]
    assert (tpu.precision, tpu.jit_compile, tpu.steps_per_execution, tpu.drop_remainder) == (
        "mixed_bfloat16", True, 32, True)
    # A value set on the command line wins over the table, for a named preset and for auto alike.
    for name in ("tpu", "auto"):
        strategy = config_of([f"strategy={name}", "strategy.steps_per_execution=8", "strategy.precision=float32"])
        policy = resolve_policy("tpu", strategy["strategy"])
        assert (policy.steps_per_execution, policy.precision, policy.drop_remainder) == (8, "float32", True)


def test_a_policy_value_no_hardware_can_use_is_refused():
    from xentlab.errors import ConfigError
    from xentlab.runtime.strategy import resolve_policy

    with pytest.raises(ConfigError, match="strategy.steps_per_execution must be >= 1, got 0"):
        resolve_policy("cpu", {"steps_per_execution": 0})


def test_auto_picks_the_cpu_here():
    from xentlab.runtime.strategy import build_strategy, resolve_policy, visible_hardware

    assert visible_hardware().gpus == 0
    hardware = build_strategy("auto")
    assert (hardware.kind, hardware.replicas) == ("cpu", 1)
    assert resolve_policy(hardware.kind, config_of([])["strategy"]).precision == "float32"


@pytest.mark.parametrize(("strategy", "message"), [
    ("gpu", "strategy=gpu needs 1 GPU(s), found 0; devices found"),
    ("multi_gpu", "strategy=multi_gpu needs 2 GPU(s), found 0; devices found"),
    ("tpu", "strategy=tpu found no TPU on this host"),
    ("multi_worker", "strategy=multi_worker needs the TF_CONFIG environment variable"),
])
def test_missing_hardware_gives_the_documented_error_without_waiting(strategy, message, monkeypatch):
    from xentlab.runtime.strategy import HardwareError, build_strategy

    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(HardwareError) as raised:
        build_strategy(**config_of([f"strategy={strategy}"])["strategy"])  # no TPU or cluster waited for
    assert message in str(raised.value)
    if strategy != "multi_worker":
        assert "strategy=cpu" in str(raised.value)


def test_two_logical_cpus_train_a_short_run(tmp_path, store):
    """strategy=multi_cpu must split the CPU before TensorFlow starts: the CLI, in a process of its own."""
    result = run_cli([*TINY, "model=mlp", "data=breast_cancer", "strategy=multi_cpu", f"tracking.uri={store}"],
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = runs_of(store)
    assert run.info.status == "FINISHED"
    assert run.data.params["hardware.replicas"] == "2" and run.data.params["hardware.precision"] == "float32"


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


def _start_workers(args: list[str], cwd, workers: int = 2) -> list[subprocess.Popen]:
    """`xentlab-train ARGS` as `workers` processes of one MultiWorkerMirroredStrategy cluster on 127.0.0.1."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(workers)]}
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


def test_two_workers_train_a_short_run(tmp_path, store):
    """strategy=multi_worker in `make test`: two workers on 127.0.0.1, one short epoch, the chief's run FINISHED
    (the slow tests compare its numbers with one device and stop workers mid-training)."""
    procs = _start_workers([*TINY, "model=mlp", "data=breast_cancer", f"tracking.uri={store}"], tmp_path)
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    (run,) = runs_of(store)
    assert run.info.status == "FINISHED" and run.data.params["hardware.replicas"] == "2"
    assert run.data.params["hardware.strategy"] == "multi_worker" and "test_loss" in run.data.metrics
    assert {"val_balanced_accuracy", "test_macro_f1"} <= set(run.data.metrics)  # one metric, several values


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

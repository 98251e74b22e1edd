"""Real tf.distribute strategies on this CPU machine: MirroredStrategy over logical CPUs, multi-worker on 127.0.0.1."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from conftest import run_cli, runs_of

DET = ["trainer.epochs=2", "trainer.batch_size=32", "data.limit=128", "model=mlp", "model.dropout=0.0",
       "trainer.deterministic=true",
       "tracking.log_model=false", "tracking.log_plots=false", "optimizer=sgd"]


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


@pytest.mark.slow
def test_multi_worker_on_localhost_fails_clearly_before_any_run(tmp_path, store):
    """Keras 3's fit cannot train under MultiWorkerMirroredStrategy (keras-team/keras#20585): both workers must
    stop with that explanation, and no MLflow run may be created or left RUNNING."""
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for index in range(2):
        env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
               "TF_CPP_MIN_LOG_LEVEL": "2"}
        cmd = [sys.executable, "-c", "from xentlab.train import main; main()", "strategy=multi_worker",
               "trainer.epochs=1", "trainer.batch_size=32", "data.limit=128", "model=mlp",
               "tracking.log_model=false", "tracking.log_plots=false", f"tracking.uri={store}"]
        procs.append(subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode != 0 for p in procs)
    assert all("keras-team/keras#20585" in out for out in outputs)
    assert all(r.info.status == "FAILED" for r in runs_of(store))  # the chief's run, closed with the message

"""Sweeps on a Ray cluster of several nodes for real: `make ray-cluster NODES=2` starts a head and a worker raylet
on this machine, `make server` the PostgreSQL-backed tracking server, both as the README gives them; the jobs run on
both nodes (tag xentlab.node), and a worker node killed mid-sweep costs no job: the same command again finishes the
sweep. Runs in the Ray venv (`make test-ray`; `make test-all` runs it too)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from conftest import REPO, free_port, run_cli
from test_server import JOB, sweep_runs, team_server

pytest.importorskip("hydra_plugins.hydra_ray_launcher.ray_launcher", reason="the optional `ray` extra: make test-ray")
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

GRID = ["loss=crossentropy,focal", "labels=sparse,one_hot", "loss.from_logits=false"]  # 4 jobs


def ray_make(target: str, port: int, *extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "MFLAGS"))}
    result = subprocess.run(["make", "-s", "-C", str(REPO), target, f"RAY_PORT={port}", *extra],
                            capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return result


@pytest.fixture(scope="module")
def cluster():
    """`make ray-cluster NODES=2` on a free port: the head's address; `make ray-cluster-stop` after."""
    port = free_port()
    try:
        started = ray_make("ray-cluster", port, "NODES=2")
        assert f"head 127.0.0.1:{port} + 1 worker node(s)" in started.stdout
        yield port
    finally:
        ray_make("ray-cluster-stop", port)
        shutil.rmtree(f"/tmp/xentlab-ray-{port}", ignore_errors=True)  # the nodes' logs and the jobs' folders


@pytest.fixture(scope="module")
def server():
    with team_server() as started:
        yield started[0]


def ray_sweep(uri: str, port: int, cwd, extra=(), **popen):
    args = ["-m", "+sweep=ray", *JOB, *GRID, *extra, f"hydra.launcher.ray.init.address=127.0.0.1:{port}",
            "hydra.launcher.ray.remote.num_cpus=1", f"tracking.uri={uri}"]
    return run_cli(args, cwd=cwd, timeout=1200, **popen)


def only_sweep(uri: str, jobs: int):
    """The one sweep of the store: its parent and its children (the current run of each job)."""
    parents, children = sweep_runs(uri)
    assert len(parents) == 1, sorted(parents)
    parent = next(iter(parents.values()))
    current = [c for c in children.get(parent.info.run_id, []) if "xentlab.superseded_by" not in c.data.tags]
    assert len({c.data.tags["xentlab.job_key"] for c in current}) == len(current) == jobs
    return parent, current


def test_a_sweep_runs_its_jobs_on_both_nodes_and_logs_to_the_team_server(cluster, server, tmp_path):
    result = ray_sweep(server, cluster, tmp_path)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    parent, children = only_sweep(server, 4)
    assert parent.info.status == "FINISHED" and all(c.info.status == "FINISHED" for c in children)
    nodes = {c.data.tags["xentlab.node"] for c in children}
    assert len(nodes) == 2 and all("/ray-node-" in n for n in nodes), nodes  # the head's and the worker's raylet


def test_a_worker_node_killed_mid_sweep_and_the_same_command_finishes_it(cluster, tmp_path):
    with team_server() as (uri, _, _):
        longer = ["trainer.epochs=8", "data.limit=512"]  # a few seconds a job: time to kill one mid-training
        log = (tmp_path / "first.log").open("w")
        first = subprocess.Popen(
            [sys.executable, "-c", "from xentlab.cli.train import main; main()", "-m", "+sweep=ray", *JOB, *GRID,
             *longer, f"hydra.launcher.ray.init.address=127.0.0.1:{cluster}", "hydra.launcher.ray.remote.num_cpus=1",
             f"tracking.uri={uri}"], cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1", "MLFLOW_TRACKING_URI": ""})
        deadline = time.time() + 600
        while time.time() < deadline:  # two jobs training at once: one on each node
            _, children = sweep_runs(uri)
            running = [c for runs in children.values() for c in runs if c.info.status == "RUNNING"]
            if len({c.data.tags.get("xentlab.node") for c in running}) == 2:
                break
            assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            time.sleep(1)
        else:
            pytest.fail("the two nodes never trained at once")
        killed = subprocess.run([sys.executable, "-m", "xentlab.cli.ray_cluster", "kill-node", "--node", "1",
                                 "--port", str(cluster)], capture_output=True, text=True, timeout=120)
        assert killed.returncode == 0 and "process(es) killed" in killed.stdout, killed.stderr
        # Ray reschedules the lost job on the head (exit 0), or the sweep reports it failed (exit 1): never a hang.
        assert first.wait(timeout=900) in (0, 1), (tmp_path / "first.log").read_text()[-3000:]
        rerun = ray_sweep(uri, cluster, tmp_path, longer)
        assert rerun.returncode == 0, (rerun.stdout + rerun.stderr)[-3000:]
        assert "4 jobs: " in rerun.stdout and " 0 failed" in rerun.stdout, rerun.stdout[-2000:]
        parent, children = only_sweep(uri, 4)
        assert parent.info.status == "FINISHED" and all(c.info.status == "FINISHED" for c in children)

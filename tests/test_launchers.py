"""Sweeps through process-based launchers for real: submitit's local executor (the SLURM path, each job pickled and
run in its own subprocess) and Ray (a local Ray runtime started for the test)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import free_port, run_cli, runs_of
from test_sweep import _children, _parent

# Tiny jobs: 64 examples, one epoch, nothing heavy logged. The presets' grids are narrowed to one value per key on
# the command line (it wins over hydra.sweeper.params), so only the key given with a comma list varies.
TINY_JOB = ["model=mlp", "data=breast_cancer", "trainer.epochs=1", "data.limit=64", "trainer.batch_size=32",
            "tracking.log_model=false", "tracking.log_plots=false", "tracking.system_metrics=false",
            "labels=sparse", "loss.from_logits=false"]
EPOCHS_MESSAGE = "trainer.epochs=0 is not allowed: it must be >= 1"


def _assert_finished_sweep(store: str, result, tmp_path: Path) -> None:
    """One parent FINISHED with the report, one FINISHED child per loss."""
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    parent = _parent(store)
    assert parent.info.status == "FINISHED", parent.data.tags.get("xentlab.error")
    children = _children(store, parent.info.run_id)
    statuses = {c.data.params["loss.name"]: c.info.status for c in children}
    assert statuses == {"crossentropy": "FINISHED", "focal": "FINISHED"}, statuses
    assert all(c.data.tags["xentlab.sweep_id"] == parent.data.tags["xentlab.sweep_id"] for c in children)
    assert all("test_accuracy" in c.data.metrics for c in children)
    artifacts = {a.path for a in MlflowClient(store).list_artifacts(parent.info.run_id, "report")}
    assert {"report/report.md", "report/report.csv"} <= artifacts
    csv_path = MlflowClient(store).download_artifacts(parent.info.run_id, "report/report.csv", str(tmp_path))
    text = Path(csv_path).read_text()
    assert "loss=crossentropy" in text and "loss=focal" in text


def _assert_rerun_reuses_every_job(store: str, rerun) -> None:
    """The same command again: the same parent, the same two children, nothing trained."""
    assert rerun.returncode == 0, (rerun.stdout + rerun.stderr)[-3000:]
    assert "2 jobs: 0 trained, 2 reused, 0 failed" in rerun.stdout
    parent = _parent(store)  # still one
    assert parent.info.status == "FINISHED"
    assert len(_children(store, parent.info.run_id)) == 2


def _assert_one_failed_job(store: str, result) -> None:
    """The epochs=0 job FAILED with the check's message, the other FINISHED, the parent FAILED."""
    assert result.returncode != 0
    assert EPOCHS_MESSAGE in result.stderr
    parent = _parent(store)
    assert parent.info.status == "FAILED" and "1 job(s) did not finish" in parent.data.tags["xentlab.error"]
    assert parent.data.tags["xentlab.failed_jobs"] == "1" and "Traceback" not in result.stderr
    # The report over the FINISHED job is on the parent all the same, listing the failed one.
    artifacts = {a.path for a in MlflowClient(store).list_artifacts(parent.info.run_id, "report")}
    assert "report/report.md" in artifacts
    children = {c.data.params["trainer.epochs"]: c for c in _children(store, parent.info.run_id)}
    assert set(children) == {"0", "1"}
    assert children["1"].info.status == "FINISHED"
    assert children["0"].info.status == "FAILED"
    assert EPOCHS_MESSAGE in children["0"].data.tags["xentlab.error"]


# ------------------------------------------------------------------------------------------------------ submitit
@pytest.mark.slow
def test_submitit_local_sweep_runs_each_job_in_its_own_process(tmp_path, store):
    args = ["-m", "+sweep=submitit_local", *TINY_JOB, f"tracking.uri={store}", "loss=crossentropy,focal"]
    result = run_cli(args, cwd=tmp_path, timeout=600)
    _assert_finished_sweep(store, result, tmp_path)
    children = {c.info.run_id for c in _children(store, _parent(store).info.run_id)}
    _assert_rerun_reuses_every_job(store, run_cli(args, cwd=tmp_path, timeout=600))  # decided in each job
    assert {c.info.run_id for c in _children(store, _parent(store).info.run_id)} == children
    # The jobs really went through submitit: one pickled job folder each, with its own process's log.
    sweep_dir = Path(_parent(store).data.tags["xentlab.sweep_dir"])
    logs = sorted((sweep_dir / ".submitit").glob("*/*_log.out"))
    assert len(logs) == 2, sorted(p.name for p in (sweep_dir / ".submitit").rglob("*"))
    assert all("Job completed successfully" in p.read_text() for p in logs)


@pytest.mark.slow
def test_submitit_local_failed_job_is_failed_with_its_message_and_the_other_finishes(tmp_path, store):
    result = run_cli(["-m", "+sweep=submitit_local", *TINY_JOB, f"tracking.uri={store}", "loss=crossentropy",
                      "trainer.epochs=1,0"], cwd=tmp_path, timeout=600)
    _assert_one_failed_job(store, result)


@pytest.mark.parametrize(("launcher", "target"), [(None, "SlurmLauncher"), ("submitit_local", "LocalLauncher")])
def test_one_override_moves_the_slurm_preset_to_this_machine(tmp_path, launcher, target):
    switch = [f"hydra/launcher={launcher}"] if launcher else []
    result = run_cli(["+sweep=slurm", *switch, "--cfg", "hydra", "-p", "hydra.launcher"], cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"hydra_plugins.hydra_submitit_launcher.submitit_launcher.{target}" in result.stdout
    assert "timeout_min: 60" in result.stdout


# ----------------------------------------------------------------------------------------------------------- ray
def test_ray_address_that_does_not_answer_fails_within_seconds_with_the_fix():
    from xentlab.runtime.launchers import RayAddressError, check_ray_address, resolve_ray_address

    port = free_port()  # nothing listens there
    start = time.time()
    with pytest.raises(RayAddressError) as raised:
        check_ray_address(f"127.0.0.1:{port}", timeout_s=3)
    assert time.time() - start < 5
    message = str(raised.value)
    assert f"hydra.launcher.ray.init.address=127.0.0.1:{port} did not answer within 3 s" in message
    assert "ray start --head" in message and "hydra.launcher.ray.init.address=local" in message
    assert resolve_ray_address("local") is None
    key = "hydra.launcher.ray.init.address"
    assert resolve_ray_address("ray://head:10001") == ("head", 10001, key)
    assert resolve_ray_address("ray://head") == ("head", 10001, key)
    assert resolve_ray_address("head") == ("head", 6379, key)
    with pytest.raises(RayAddressError, match="is not HOST:PORT"):
        resolve_ray_address("head:port")


def test_ray_auto_or_no_address_checks_the_cluster_ray_would_join(monkeypatch, tmp_path):
    """auto and null join the cluster `ray start --head` left in /tmp/ray (a stale file after a crash)."""
    import xentlab.runtime.launchers as launchers

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    current = tmp_path / "ray_current_cluster"
    monkeypatch.setattr(launchers, "RAY_CURRENT_CLUSTER", current)
    with pytest.raises(launchers.RayAddressError, match="auto found no Ray cluster"):
        launchers.check_ray_address("auto")
    launchers.check_ray_address(None)  # nothing to join: Ray starts a runtime of its own
    current.write_text(f"127.0.0.1:{free_port()}\n")
    for given in ("auto", None):
        with pytest.raises(launchers.RayAddressError, match=rf"{given or 'null'} -> 127.0.0.1:\d+ \(from {current}\) "
                                                            "did not answer within 2 s"):
            launchers.check_ray_address(given, timeout_s=2)
    launchers.check_ray_address("local")  # a runtime of its own whatever the file says
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{free_port()}")
    with pytest.raises(launchers.RayAddressError, match=r"\(from RAY_ADDRESS\)"):
        launchers.check_ray_address(None, timeout_s=2)


def test_ray_sweep_with_a_dead_address_stops_before_the_parent_run(tmp_path, store):
    pytest.importorskip("hydra_plugins.hydra_ray_launcher.ray_launcher", reason="the optional `ray` extra")
    port = free_port()
    start = time.time()
    result = run_cli(["-m", "+sweep=ray", *TINY_JOB, f"tracking.uri={store}", "loss=crossentropy,focal",
                      f"hydra.launcher.ray.init.address=127.0.0.1:{port}"], cwd=tmp_path, timeout=300)
    assert result.returncode != 0
    assert f"hydra.launcher.ray.init.address=127.0.0.1:{port} did not answer within 5 s" in result.stderr
    assert time.time() - start < 60  # interpreter start included; ray.init alone waits forever
    assert runs_of(store) == []  # no parent left RUNNING


RAY_LOCAL = ["hydra.launcher.ray.init.address=local", "+hydra.launcher.ray.init.num_cpus=2",
             "hydra.launcher.ray.init.object_store_memory=100000000", "hydra.launcher.ray.remote.num_cpus=1"]


def test_ray_sweep_on_a_local_ray_runtime(tmp_path, store):
    pytest.importorskip("hydra_plugins.hydra_ray_launcher.ray_launcher", reason="the optional `ray` extra")
    args = ["-m", "+sweep=ray", *TINY_JOB, *RAY_LOCAL, f"tracking.uri={store}", "loss=crossentropy,focal"]
    result = run_cli(args, cwd=tmp_path, timeout=600)
    assert "Started a local Ray instance" in result.stdout + result.stderr
    _assert_finished_sweep(store, result, tmp_path)
    children = {c.info.run_id for c in _children(store, _parent(store).info.run_id)}
    _assert_rerun_reuses_every_job(store, run_cli(args, cwd=tmp_path, timeout=600))  # decided in each Ray task
    assert {c.info.run_id for c in _children(store, _parent(store).info.run_id)} == children


def test_ray_failed_job_is_failed_with_its_message_and_the_other_finishes(tmp_path, store):
    pytest.importorskip("hydra_plugins.hydra_ray_launcher.ray_launcher", reason="the optional `ray` extra")
    result = run_cli(["-m", "+sweep=ray", *TINY_JOB, *RAY_LOCAL, f"tracking.uri={store}", "loss=crossentropy",
                      "trainer.epochs=1,0"], cwd=tmp_path, timeout=600)
    _assert_one_failed_job(store, result)

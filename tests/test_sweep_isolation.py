"""Each sweep finds its own parent whatever its folder, a sweep command never exits 0 after its parent failed, and
a dry-run sweep validates its jobs without making a parent run."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from conftest import run_cli, runs_of
from xentlab.tracking.store import ERROR_TAG, SUPERSEDED_TAG

TINY = ["model=mlp", "trainer.epochs=1", "trainer.batch_size=32", "data.limit=64", "tracking.log_model=false",
        "tracking.log_plots=false", "tracking.system_metrics=false"]


def test_two_sweeps_in_one_folder_each_read_their_own_record(tmp_path, monkeypatch):
    from xentlab.cli.sweep import read_sweep_file, sweep_job, write_record
    from xentlab.tracking.sweeps import ATTEMPT_ENV

    write_record(tmp_path, {"attempt": "aaaa", "parent_run_id": "A", "sweep_id": "a", "varying": ["loss"]})
    write_record(tmp_path, {"attempt": "bbbb", "parent_run_id": "B", "sweep_id": "b", "varying": ["weighting"]})
    monkeypatch.setenv(ATTEMPT_ENV, "aaaa")
    assert read_sweep_file(tmp_path)["parent_run_id"] == "A"  # though B wrote the folder's latest record after it
    assert sweep_job(tmp_path, ["loss=focal", "trainer.seed=0"], 0)["name"] == "focal s0"
    monkeypatch.delenv(ATTEMPT_ENV)
    assert read_sweep_file(tmp_path)["parent_run_id"] == "B"  # a job on another host: the latest


def test_a_report_that_fails_ends_the_parent_failed_and_the_command_non_zero(tmp_path, store, capsys):
    from xentlab.cli.sweep import SweepRun
    from xentlab.tracking.parent import SweepParent
    from xentlab.tracking.store import setup_experiment

    client = MlflowClient(store)
    callback = SweepRun()
    callback.uri = store
    callback.parent = SweepParent.open(client, setup_experiment(store, "xentlab"), "k", tags={}, params={},
                                       fresh=False)
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    with pytest.raises(SystemExit) as err:
        callback.on_multirun_end(config)  # no child FINISHED: there is nothing to report
    assert err.value.code == 2
    message = capsys.readouterr().err
    assert "xentlab: the sweep's report failed: ReportError" in message and "no FINISHED child runs" in message
    parent = client.get_run(callback.parent.run_id)
    assert parent.info.status == "FAILED" and "no FINISHED child runs" in parent.data.tags[ERROR_TAG]


def _sweep(args: list[str], cwd) -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, "-c", "from xentlab.cli.train import main; main()", *args]
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_two_different_sweeps_sharing_a_folder_keep_their_own_parents(tmp_path, store):
    grids = {"a": ["loss=crossentropy", "trainer.seed=0,1"], "b": ["loss=focal,poly1", "trainer.seed=0"]}
    procs = {name: _sweep(["-m", *TINY, f"tracking.uri={store}", "hydra.sweep.dir=outputs/shared", *grid], tmp_path)
             for name, grid in grids.items()}
    outputs = {name: p.communicate(timeout=900) for name, p in procs.items()}
    assert all(p.returncode == 0 for p in procs.values()), {n: o[1][-2000:] for n, o in outputs.items()}
    runs = runs_of(store)
    parents = {r.info.run_id: r for r in runs if r.data.tags.get("xentlab.role") == "sweep"}
    assert len(parents) == 2 and all(p.info.status == "FINISHED" for p in parents.values())
    variants = {pid: sorted(r.data.tags["xentlab.variant"] for r in runs
                            if r.data.tags.get("mlflow.parentRunId") == pid) for pid in parents}
    assert sorted(variants.values()) == [["default", "default"], ["focal", "poly1"]]
    assert not [r for r in runs if SUPERSEDED_TAG in r.data.tags]


@pytest.mark.slow
def test_a_dry_run_sweep_makes_no_parent_prints_one_summary_and_says_what_failed(tmp_path, store):
    valid = run_cli(["-m", *TINY, f"tracking.uri={store}", "trainer.dry_run=true", "loss=crossentropy,focal"],
                    cwd=tmp_path)
    assert valid.returncode == 0, valid.stderr[-3000:]
    assert "dry run: 2 jobs, 2 valid, 0 failed; nothing trained or logged" in valid.stdout
    assert valid.stdout.count("Total params") == 1 and "summary as above" in valid.stdout
    assert runs_of(store) == []  # no parent, no child
    bad = run_cli(["-m", *TINY, f"tracking.uri={store}", "trainer.dry_run=true", "data.limit=0,64"], cwd=tmp_path)
    assert bad.returncode == 1 and "dry run: 2 jobs, 1 valid, 1 failed" in bad.stdout
    assert "data.limit=0 is not allowed" in bad.stderr and runs_of(store) == []

"""Sweeps through the real CLI: parent/child runs, the comparison report, parallel jobs, a real MLflow server."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from conftest import free_port, run_cli, runs_of, start_mlflow_server, stop_mlflow_server

SMALL = ["trainer.epochs=2", "trainer.batch_size=32", "data.limit=64", "model=mlp", "tracking.log_plots=false"]


def _children(uri: str, parent_id: str):
    client = MlflowClient(uri)
    exp = client.get_run(parent_id).info.experiment_id
    return client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{parent_id}'")


def _parent(uri: str):
    parents = [r for r in runs_of(uri) if r.data.tags.get("xentlab.role") == "sweep"]
    assert len(parents) == 1, [r.info.run_name for r in runs_of(uri)]
    return parents[0]


def test_sweep_makes_one_parent_and_a_child_per_job_and_a_true_report(tmp_path, store):
    args = ["-m", *SMALL, f"tracking.uri={store}", "trainer.seed=0,1", "loss=crossentropy,focal",
            '+hydra.callbacks.sweep_run.baseline="loss=focal"']
    result = run_cli(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    parent = _parent(store)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["xentlab.baseline"] == "loss=focal"
    sweep_id = parent.data.tags["xentlab.sweep_id"]
    children = _children(store, parent.info.run_id)
    assert len(children) == 4 and all(c.info.status == "FINISHED" for c in children)
    assert all(c.data.tags["xentlab.sweep_id"] == sweep_id for c in children)
    # Names a reviewer can read: the variant's short name and the seed; the tag groups a variant's seeds.
    assert {c.info.run_name for c in children} == {f"{loss} s{seed}" for loss in ("crossentropy", "focal")
                                                   for seed in (0, 1)}
    assert {(c.data.tags["xentlab.variant"], c.data.tags["xentlab.variant_overrides"]) for c in children} == {
        ("crossentropy", "loss=crossentropy"), ("focal", "loss=focal")}
    assert {d.dataset.name for c in children for d in c.inputs.dataset_inputs} == {"digits-n64"}
    # The report aggregates seeds: recompute mean and std of test_accuracy per loss from the child runs.
    csv_path = MlflowClient(store).download_artifacts(parent.info.run_id, "report/report.csv", str(tmp_path))
    import csv

    rows = {r["variant"]: r for r in csv.DictReader(open(csv_path))}
    assert set(rows) == {"crossentropy", "focal"} and rows["focal"]["overrides"] == "loss=focal"
    for loss in ("crossentropy", "focal"):
        values = [c.data.metrics["test_accuracy"] for c in children if c.data.tags["xentlab.variant"] == loss]
        assert float(rows[loss]["test_accuracy"]) == pytest.approx(np.mean(values), abs=1e-9)
        assert float(rows[loss]["test_accuracy_std"]) == pytest.approx(np.std(values, ddof=1), abs=1e-9)
        assert rows[loss]["n"] == "2"
    artifacts = {a.path for a in MlflowClient(store).list_artifacts(parent.info.run_id, "report")}
    assert {"report/report.md", "report/report.csv", "report/comparisons.csv", "report/val_nll_vs_baseline.png",
            "report/val_nll_curves.png", "report/report.html"} <= artifacts
    assert "| variant |" in result.stdout  # the table is printed at the end of the sweep
    assert "Baseline: `focal` (named by the sweep preset)" in result.stdout
    assert "| crossentropy | 2 |" in result.stdout and "paired, 2 seeds" in result.stdout

    # The answer on the parent run: its description, the differences as metrics, the children's source and data.
    parent = MlflowClient(store).get_run(parent.info.run_id)
    assert parent.data.tags["mlflow.note.content"].startswith("Against `focal` on `val_nll`")
    assert {"delta_val_nll/crossentropy", "delta_val_nll_low/crossentropy", "delta_val_nll_high/crossentropy",
            "p_holm_val_nll/crossentropy"} <= set(parent.data.metrics)
    assert parent.data.tags["xentlab.verdict"].endswith("(val_nll)")
    assert parent.data.tags.get("mlflow.source.git.commit") == children[0].data.tags.get("mlflow.source.git.commit")
    assert {d.dataset.name for d in parent.inputs.dataset_inputs} == {"digits-n64"}
    link = f"/#/experiments/{parent.info.experiment_id}/runs/{parent.info.run_id}?workflowType=machine_learning"
    assert f"sweep verdict and report: http://127.0.0.1:5000{link}" in result.stdout

    # On demand: xentlab-compare on the same store finds the latest sweep and prints the same rows.
    compare = subprocess.run(
        [sys.executable, "-m", "xentlab.cli.compare", "--tracking-uri", store, "--out", str(tmp_path / "r")],
        capture_output=True, text=True, timeout=120,
    )
    assert compare.returncode == 0, compare.stderr[-2000:]
    assert sweep_id in compare.stdout and "| focal (baseline) | 2 |" in compare.stdout
    assert f"sweep verdict and report: http://127.0.0.1:5000{link}" in compare.stdout

    # The same command again continues this sweep: every job reused (no epoch trained or logged again, no new
    # child), one parent, the report written again.
    def logged(run_id: str) -> list[tuple[int, int]]:
        return sorted((m.step, m.timestamp) for m in MlflowClient(store).get_metric_history(run_id, "val_loss"))

    before = {c.info.run_id: logged(c.info.run_id) for c in children}
    again = run_cli(args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"sweep {sweep_id}: 4 jobs: 0 trained, 4 reused, 0 failed" in again.stdout and "| variant |" in again.stdout
    assert _parent(store).info.run_id == parent.info.run_id
    assert {c.info.run_id: logged(c.info.run_id) for c in _children(store, parent.info.run_id)} == before


@pytest.mark.slow
def test_jobs_in_one_process_do_not_leak_memory_or_layer_names(tmp_path, store):
    """Ten jobs in one process: RSS after the tenth within 20% of after the second."""
    import resource  # noqa: F401  (Linux: /proc/self/status gives the current RSS)

    from conftest import compose
    from xentlab.cli.train import run

    def rss_mb() -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    readings = []
    for seed in range(10):
        run(compose([*SMALL, "trainer.epochs=1", f"trainer.seed={seed}", f"tracking.uri={store}",
                     "tracking.log_model=false"]))
        readings.append(rss_mb())
    assert readings[9] <= 1.2 * readings[1], readings
    names = {r.data.params["model.name"] for r in runs_of(store)}
    assert names == {"mlp"} and len(runs_of(store)) == 10


@pytest.mark.slow
def test_four_parallel_jobs_on_a_fresh_sqlite_store_all_complete(tmp_path, store):
    result = run_cli(
        ["-m", "+sweep=joblib", *SMALL, "trainer.epochs=1", f"tracking.uri={store}", "hydra.launcher.n_jobs=4"],
        cwd=tmp_path, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    parent = _parent(store)
    children = _children(store, parent.info.run_id)
    assert len(children) == 4
    for child in children:
        assert child.info.status == "FINISHED"
        assert {"loss", "val_loss", "test_loss", "test_auc"} <= set(child.data.metrics)


@pytest.mark.slow
def test_eight_parallel_jobs_on_a_fresh_sqlite_store_all_complete(tmp_path, store):
    result = run_cli(
        ["-m", "+sweep=joblib", *SMALL, "trainer.epochs=1", f"tracking.uri={store}", "hydra.launcher.n_jobs=8",
         "trainer.seed=0,1"], cwd=tmp_path, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    children = _children(store, _parent(store).info.run_id)
    assert len(children) == 8 and all(c.info.status == "FINISHED" for c in children)
    assert all(len(MlflowClient(store).get_metric_history(c.info.run_id, "val_loss")) == 1 for c in children)


@pytest.mark.slow
def test_optuna_preset_returns_the_metric_and_records_trials(tmp_path, store):
    import json

    result = run_cli(
        ["+sweep=optuna", "sweep.tuning.trials=2", *SMALL, "trainer.epochs=1", f"tracking.uri={store}"],
        cwd=tmp_path, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    parent = _parent(store)
    children = _children(store, parent.info.run_id)
    trials = [c for c in children if c.data.tags.get("xentlab.stage") == "tuning"]
    assert len(trials) == 2 and len(children) == 3  # 2 trials, then the best configuration on the evaluation seed
    (best,) = json.loads(MlflowClient(store).get_run(parent.info.run_id).data.tags["xentlab.tuning"])[
        "variants"].values()
    # The study minimised the final val_nll each job returned: one scale whatever the label smoothing.
    assert best["best"] == pytest.approx(min(c.data.metrics["val_nll"] for c in trials), rel=1e-5)


@pytest.fixture
def mlflow_server(tmp_path):
    """A real `mlflow server` on 127.0.0.1 with its own SQLite store, stopped after the test."""
    port = free_port()
    proc = start_mlflow_server(port, tmp_path / "server.db", tmp_path / "server-artifacts")
    yield f"http://127.0.0.1:{port}"
    stop_mlflow_server(proc)


@pytest.mark.slow
def test_sweep_against_a_real_tracking_server(tmp_path, mlflow_server):
    result = run_cli(["-m", *SMALL, "trainer.epochs=1", f"tracking.uri={mlflow_server}",
                      "labels=sparse,one_hot"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    parent = _parent(mlflow_server)
    children = _children(mlflow_server, parent.info.run_id)
    assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children)
    assert not (tmp_path / "outputs" / "mlflow.db").exists()


def test_unreachable_tracking_server_fails_fast(tmp_path):
    port = free_port()  # nothing listens there
    start = time.time()
    result = run_cli(["trainer.epochs=1", f"tracking.uri=http://127.0.0.1:{port}"], cwd=tmp_path, timeout=120)
    assert result.returncode != 0
    assert "did not answer" in result.stderr
    assert time.time() - start < 60  # MLflow alone retries for minutes; interpreter start included


def test_job_names_carry_the_variant_and_the_seed_in_30_characters():
    from xentlab.cli.sweep import job_variant
    from xentlab.tracking.naming import run_name

    overrides = ["trainer.seed=2", "+labels=one_hot", "loss=focal", "loss.from_logits=true", "loss.gamma=2"]
    varying = ["labels", "loss", "loss.from_logits", "loss.gamma", "trainer.seed"]
    assert job_variant(overrides, varying) == {"variant": "one_hot focal logits gamma=2",
                                               "variant_overrides": "+labels=one_hot,loss=focal,"
                                               "loss.from_logits=true,loss.gamma=2"}
    assert job_variant(["+setup=logit_adjusted", "trainer.seed=0"], ["setup", "trainer.seed"])["variant"] == (
        "logit_adjusted")
    assert job_variant(["trainer.seed=0"], ["trainer.seed"])["variant"] == "default"  # only the seed varies
    assert job_variant(["model.units=8", "data.units=3"], ["model.units", "data.units"])["variant"] == (
        "data.units=3 model.units=8")  # one last part, two keys: enough of each key to tell them apart
    assert run_name("logit_adjusted", 0) == "logit_adjusted s0"
    long = "learning_rate=0.3141592653589793 label_smoothing=0.1"
    cut = run_name(long, 11)
    assert len(cut) == 30 and cut.startswith("learning_rate=0.31") and cut.endswith(" s11")
    assert cut != run_name(long.replace("0.1", "0.2"), 11)  # two long variants stay apart


@pytest.mark.parametrize("preset", ["losses", "long_tail", "weighting", "hardware", "joblib"])
def test_every_job_of_a_preset_is_named_in_30_characters_with_its_variant_and_seed(preset):
    """All jobs of a preset's grid: names of at most 30 characters starting with the variant and ending with the
    seed; distinct variants get distinct names (Group-by on xentlab.variant never merges two)."""
    import itertools

    from omegaconf import OmegaConf

    from xentlab.cli.sweep import job_variant, varying_keys
    from xentlab.tracking.naming import run_name

    conf = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "sweep" / f"{preset}.yaml")
    grid = {k: str(v).split(",") for k, v in conf.hydra.sweeper.params.items()}
    varying = varying_keys([f"+sweep={preset}"], dict(conf.hydra.sweeper.params))
    variants = {}
    for values in itertools.product(*grid.values()):
        overrides = [f"{k}={v}" for k, v in zip(grid, values, strict=True)]
        job = job_variant(overrides, varying)
        seed = dict(o.split("=", 1) for o in overrides).get("trainer.seed", "0")
        name = run_name(job["variant"], seed)
        assert len(name) <= 30 and name == f"{job['variant']} s{seed}", name
        variants.setdefault(job["variant"], set()).add(job["variant_overrides"])
    assert all(len(o) == 1 for o in variants.values()) and len(variants) == len(
        list(itertools.product(*[v for k, v in grid.items() if k != "trainer.seed"])))


def test_parent_params_mask_secrets_as_run_params_do():
    from xentlab.cli.sweep import sweep_params
    from xentlab.tracking.runs import flatten_params

    overrides = ["tracking.uri=http://alice:s3cret@host:5000", "+tracking.api_token=abc", "loss=focal,crossentropy",
                 "~trainer.password", "db.credential_file=/x"]
    params = sweep_params(overrides, {"tracking.api_token": "a,b", "loss": "focal,crossentropy"})
    assert "s3cret" not in str(params) and "abc" not in str(params) and "a,b" not in str(params)
    run_params = flatten_params({"tracking": {"uri": "http://alice:s3cret@host:5000", "api_token": "abc"},
                                 "db": {"credential_file": "/x"}})
    assert params["sweep.override.0"] == f"tracking.uri={run_params['tracking.uri']}"
    assert params["sweep.override.1"] == f"+tracking.api_token={run_params['tracking.api_token']}"
    assert params["sweep.override.4"] == f"db.credential_file={run_params['db.credential_file']}" == (
        "db.credential_file=***")
    assert params["sweep.override.2"] == "loss=focal,crossentropy" and params["sweep.override.3"] == (
        "~trainer.password")
    assert params["sweep.tracking.api_token"] == "***" and params["sweep.loss"] == "focal,crossentropy"


@pytest.mark.parametrize("preset", ["losses", "weighting"])
def test_presets_run_three_seeds_and_name_a_baseline_of_their_grid(preset):
    import itertools

    from omegaconf import OmegaConf

    from xentlab.report.variants import override_set

    conf = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "sweep" / f"{preset}.yaml")
    grid = {k: str(v).split(",") for k, v in conf.hydra.sweeper.params.items()}
    assert grid.pop("trainer.seed") == ["0", "1", "2"]
    variants = [frozenset(f"{k}={v}" for k, v in zip(grid, values, strict=True))
                for values in itertools.product(*grid.values())]
    assert override_set(conf.hydra.callbacks.sweep_run.baseline) in variants


@pytest.mark.slow
def test_ctrl_c_during_a_sweep_ends_the_child_and_the_parent_killed(tmp_path, store):
    import os
    import signal

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, "-u", "-c", "from xentlab.cli.train import main; main()", "-m", *SMALL, "trainer.epochs=500",
           "trainer.verbose=line", f"tracking.uri={store}", "loss=crossentropy,focal"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "Epoch 3/500" in line:  # the first job is training
            break
    else:
        pytest.fail("the sweep never trained:\n" + "".join(seen[-40:]))
    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
    proc.communicate(timeout=120)
    parent = _parent(store)
    assert parent.info.status == "KILLED", parent.data.tags.get("xentlab.error")
    assert "Ctrl-C" in parent.data.tags["xentlab.error"]
    (child,) = _children(store, parent.info.run_id)  # the second job never started
    assert child.info.status == "KILLED" and child.info.run_name == "crossentropy s0"


@pytest.mark.slow
def test_a_failed_job_ends_the_parent_failed_not_killed(tmp_path, store):
    result = run_cli(["-m", *SMALL, "trainer.epochs=1", f"tracking.uri={store}", "loss=crossentropy,binary"],
                     cwd=tmp_path)
    assert result.returncode != 0
    parent = _parent(store)
    assert parent.info.status == "FAILED" and "1 job(s) did not finish" in parent.data.tags["xentlab.error"]
    assert "Traceback" not in result.stderr and parent.data.tags["xentlab.failed_jobs"] == "1"
    statuses = {c.info.run_name: c.info.status for c in _children(store, parent.info.run_id)}
    assert statuses == {"crossentropy s0": "FINISHED", "binary s0": "FAILED"}


def test_grid_keys_added_with_plus_make_valid_parent_params():
    from mlflow.utils.validation import _validate_param_name

    from xentlab.cli.sweep import sweep_params

    params = sweep_params(["+sweep=long_tail"], {"+setup": "crossentropy,balanced", "trainer.seed": "0,1,2"})
    assert params["sweep.setup"] == "crossentropy,balanced" and params["sweep.override.0"] == "+sweep=long_tail"
    for key in params:
        _validate_param_name(key)  # raises on a name MLflow refuses ("sweep.+setup" was refused)


def test_long_tail_preset_varies_the_setup_and_the_seed():
    from omegaconf import OmegaConf

    conf = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "sweep" / "long_tail.yaml")
    grid = conf.hydra.sweeper.params
    assert grid["+setup"].split(",") == ["crossentropy", "balanced", "focal_effective_number", "logit_adjusted"]
    assert grid["trainer.seed"] == "0,1,2" and conf.hydra.callbacks.sweep_run.baseline == "+setup=crossentropy"


def test_a_grid_entry_narrowed_on_the_command_line_does_not_vary():
    from xentlab.cli.sweep import varying_keys

    grid = {"loss": "crossentropy,focal", "labels": "sparse,one_hot", "trainer.seed": "0,1,2"}
    assert varying_keys(["labels=sparse"], grid) == ["loss", "trainer.seed"]
    assert varying_keys(["labels=sparse,one_hot"], grid) == ["labels", "loss", "trainer.seed"]

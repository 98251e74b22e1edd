"""A sweep's data identity and reuse across sweeps, on real SQLite stores and through the real CLI: changed data
trains again and is never pooled with the old; a job that FINISHED in another sweep of the experiment is reused."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
from benchmarks.compare_scale import synthetic_sweep
from mlflow.tracking import MlflowClient

from conftest import blobs_table, run_cli, runs_of
from xentlab.tracking.store import JOB_TAG, SWEEP_TAG, VARIANT_TAG, member_tag

TINY = ["model=mlp", "trainer.epochs=1", "trainer.batch_size=32", "data.limit=64", "tracking.log_model=false",
        "tracking.log_plots=false", "tracking.system_metrics=false"]


def _parents(uri: str):
    return [r for r in runs_of(uri) if r.data.tags.get("xentlab.role") == "sweep"]


# ------------------------------------------------------------------------------------------------ identity (units)
def test_an_edit_past_mlflows_sampled_values_changes_the_job_and_the_sweep(tmp_path):
    import mlflow.data

    from xentlab.data.digest import data_params
    from xentlab.tracking.resume import job_key
    from xentlab.tracking.sweeps import sweep_key

    table = blobs_table(12000)  # more labels than the 10,000 values MLflow hashes
    table.to_csv(tmp_path / "t.csv", index=False)
    before = data_params({"path": "t.csv"}, root=tmp_path)
    labels = table["species"].to_numpy()
    table.loc[len(table) - 1, "species"] = "setosa" if labels[-1] != "setosa" else "virginica"
    table.to_csv(tmp_path / "t.csv", index=False)
    after = data_params({"path": str(tmp_path / "t.csv")})
    assert before.keys() == after.keys() == {"data.digest"} and before != after
    # MLflow's dataset digest reads 10,000 values of each array: it does not see the edit, ours does.
    features = table.drop(columns="species").to_numpy()
    sampled = [mlflow.data.from_numpy(features, targets=y).digest for y in (labels, table["species"].to_numpy())]
    assert sampled[0] == sampled[1]
    params = {"loss.name": "crossentropy"}
    assert job_key(params | before, store_uri="s") != job_key(params | after, store_uri="s")
    grid = {"loss": "crossentropy,focal"}
    assert sweep_key("s", "e", [], grid, before["data.digest"]) != sweep_key("s", "e", [], grid, after["data.digest"])
    assert sweep_key("s", "e", [], grid) == sweep_key("s", "e", [], grid, None)  # data without a path: as before
    assert data_params({"path": None}) == {} and data_params({"path": "missing.csv"}, root=tmp_path) == {}


def test_the_report_never_pools_a_variants_runs_on_different_data(tmp_path, store):
    def runs(variant: str, digest: str, seeds, nll: float):
        return [{"variant": variant, "seed": s, "params": {"data.digest": digest},
                 "tags": {VARIANT_TAG: variant}, "metrics": {"val_nll": nll + 0.01 * s, "val_loss": nll}}
                for s in seeds]

    from xentlab.report.compare import write_report

    parent = synthetic_sweep(store, runs("a", "old0digest", [0, 1], 9.0) + runs("a", "new1digest", [0, 1, 2], 0.5)
                             + runs("b", "new1digest", [0, 1, 2], 0.6))
    report = write_report(store, parent_run_id=parent, out_dir=tmp_path / "r")
    rows = {r["variant"]: r for r in report.rows}
    assert rows["a"]["n"] == 3 and rows["b"]["n"] == 3
    assert rows["a"]["val_nll"] == pytest.approx(0.51)  # the old data's 9.0 is not in the mean
    assert "Left out: 2 runs trained on other data" in report.markdown and "old0digest" in report.markdown


# ------------------------------------------------------------------------------------------------ reuse across sweeps
def test_a_job_finished_in_another_sweep_is_reused_and_read_as_a_child_of_the_new_one(tmp_path, store, capsys):
    from xentlab.report.query import fetch_children
    from xentlab.tracking.resume import job_key
    from xentlab.tracking.store import setup_experiment
    from xentlab.tracking.sweeps import Reused, plan_sweep_job, write_outcome

    params = {"loss.name": "crossentropy", "trainer.seed": "0"}
    key = job_key(params, store_uri=store, experiment="xentlab")
    old = synthetic_sweep(store, [{"variant": "crossentropy", "seed": 0, "tags": {JOB_TAG: key,
                                   VARIANT_TAG: "crossentropy"}, "metrics": {"val_nll": 0.4}}])
    client = MlflowClient(store)
    old_id = client.get_run(old).data.tags[SWEEP_TAG]
    new = synthetic_sweep(store, [])
    sweep = {"parent_run_id": new, "sweep_id": "new", "name": "ce s0", "job": "loss=crossentropy,trainer.seed=0",
             "variant": "loss=crossentropy", "variant_overrides": "loss=crossentropy"}
    # What tracking.runs.Store holds (that module imports Keras): the real store's URI, experiment and client.
    opened = SimpleNamespace(uri=store, experiment="xentlab", experiment_id=setup_experiment(store, "xentlab"),
                             client=client)
    plan = plan_sweep_job(opened, sweep, params, {"resume": "auto"}, tmp_path)
    assert isinstance(plan, Reused) and plan.from_sweep == old_id
    assert f"of sweep {old_id} (FINISHED there" in capsys.readouterr().out
    (child,) = fetch_children(client, plan.run.info.experiment_id, new)
    assert child.info.run_id == plan.run.info.run_id and child.data.tags[VARIANT_TAG] == "loss=crossentropy"
    assert member_tag(new) in client.get_run(child.info.run_id).data.tags
    (kept,) = fetch_children(client, plan.run.info.experiment_id, old)  # still the old sweep's, as it was
    assert kept.data.tags[VARIANT_TAG] == "crossentropy"
    write_outcome(tmp_path / "0", sweep, status="reused", run_ref=["ce s0"])
    from xentlab.cli.sweep import _tally
    from xentlab.tracking.sweeps import read_outcomes

    assert _tally(read_outcomes(tmp_path, "")) == f"1 jobs: 0 trained, 1 reused, 0 failed; 1 reused from sweep {old_id}"


@pytest.mark.slow
def test_a_grown_grid_reuses_the_jobs_of_the_old_sweep_and_reports_them(tmp_path, store):
    first = run_cli(["-m", *TINY, f"tracking.uri={store}", "loss=crossentropy,focal", "trainer.seed=0"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    (old,) = _parents(store)
    grown = run_cli(["-m", *TINY, f"tracking.uri={store}", "loss=crossentropy,focal,poly1", "trainer.seed=0"],
                    cwd=tmp_path)
    assert grown.returncode == 0, grown.stderr[-3000:]
    old_id = old.data.tags[SWEEP_TAG]
    assert f"3 jobs: 1 trained, 2 reused, 0 failed; 2 reused from sweep {old_id}" in grown.stdout
    new = next(p for p in _parents(store) if p.info.run_id != old.info.run_id)
    assert re.search(r"sweep \w+: 3 runs, 3 variants", grown.stdout)
    client = MlflowClient(store)
    assert client.get_run(new.info.run_id).info.status == "FINISHED"
    assert client.get_run(old.info.run_id).data.tags["xentlab.verdict"]  # the old sweep's answer stays


@pytest.mark.slow
def test_changed_data_trains_again_as_a_new_sweep_never_reused_or_pooled(tmp_path, store):
    table = blobs_table(200)
    table.to_csv(tmp_path / "t.csv", index=False)
    args = ["-m", *TINY, f"tracking.uri={store}", "data=csv", "data.path=t.csv", "data.label=species",
            "loss=crossentropy,focal"]
    first = run_cli([*args, "trainer.seed=0,1"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    table["species"] = table["species"].iloc[::-1].to_numpy()  # the label column edited in place
    table.to_csv(tmp_path / "t.csv", index=False)
    again = run_cli([*args, "trainer.seed=0,1,2"], cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "6 jobs: 6 trained, 0 reused, 0 failed" in again.stdout
    parents = _parents(store)
    assert len(parents) == 2 and len({p.data.params["sweep.data.digest"] for p in parents}) == 2
    client = MlflowClient(store)
    newest = parents[0]
    children = client.search_runs([newest.info.experiment_id], f"tags.`mlflow.parentRunId` = '{newest.info.run_id}'")
    assert len(children) == 6 and {c.data.params["data.digest"] for c in children} == {
        newest.data.params["sweep.data.digest"]}

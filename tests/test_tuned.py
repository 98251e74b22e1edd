"""Tuned comparisons (+sweep=tuned, xentlab.cli.tuned): the search spaces the groups declare, the studies' equal
budgets and seeds, the refusals before any job, and the whole sweep through the real CLI (slow)."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
from mlflow.tracking import MlflowClient

from conftest import compose, run_cli, runs_of
from xentlab.cli.sweep import sweep_job
from xentlab.cli.sweep_grid import Grid
from xentlab.cli.tuned import _check, _curve, _study, _tune, distribution
from xentlab.config.schema import job_config
from xentlab.errors import ConfigError

SMALL = ["trainer.epochs=1", "trainer.batch_size=32", "data.limit=64", "model=mlp", "tracking.log_plots=false",
         "tracking.system_metrics=false"]


def test_search_entries_become_optuna_distributions_and_a_typo_is_refused():
    assert distribution("loss.gamma", "uniform(0.5, 5.0)").high == 5.0
    assert distribution("optimizer.learning_rate", "loguniform(0.001, 0.1)").log
    assert distribution("model.units", "int(1, 4)").low == 1
    assert distribution("labels.encoding", "choice(sparse, one_hot)").choices == ("sparse", "one_hot")
    with pytest.raises(ConfigError, match="is not uniform"):
        distribution("loss.gamma", "normal(0, 1)")
    with pytest.raises(ConfigError, match="loss.gamma"):
        distribution("loss.gamma", "uniform(5.0, 0.5)")  # Optuna refuses low > high


def test_each_group_declares_its_space_and_no_job_sees_it():
    config = compose(["loss=focal", "optimizer=adam"])
    assert "gamma" in config.loss.search and "learning_rate" in config.optimizer.search
    assert "tau" in compose(["loss=logit_adjusted"]).loss.search
    from omegaconf import OmegaConf

    job = job_config(OmegaConf.to_container(config, resolve=True))
    assert "sweep" not in job and "search" not in job["loss"] and "search" not in job["optimizer"]


def _settings(**tuning):
    defaults = {"trials": 2, "sampler": "tpe", "seed": 0, "seeds": [1000]}
    return SimpleNamespace(tuning=SimpleNamespace(**{**defaults, **tuning}), until_decided=False)


def test_tuning_and_evaluation_seeds_must_be_disjoint():
    sweeper = SimpleNamespace(config=SimpleNamespace(trainer=SimpleNamespace(seed=0)))
    assert _check(_settings(), Grid([["loss=focal"]], ["0", "1"]), sweeper) == (["1000"], ["0", "1"])
    with pytest.raises(ConfigError, match="share 1: a configuration chosen on a seed would be judged on it"):
        _check(_settings(seeds=[1, 1000]), Grid([["loss=focal"]], ["0", "1"]), sweeper)
    with pytest.raises(ConfigError, match="sampler"):
        _check(_settings(sampler="grid"), Grid([["loss=focal"]], ["0"]), sweeper)


class FakeLaunches:
    """Stands in for Hydra's launcher in the planning test only: each job's value is a smooth function of its
    learning rate (the real launcher is exercised by the slow end-to-end test)."""

    def __init__(self):
        self.batches = []

    def run(self, batch):
        self.batches.append(batch)
        return [abs(math.log(float(next(o for o in job if o.startswith("optimizer.learning_rate=")).split("=")[1])))
                for job in batch]


def _studies(space):
    return {name: {"variant": [f"loss={name}"], "space": space, "study": _study(_settings())}
            for name in ("crossentropy", "focal")}


def test_every_variant_gets_the_same_trials_sampler_and_tuning_seed_and_a_rerun_asks_the_same():
    space = {"optimizer.learning_rate": distribution("lr", "loguniform(0.01, 10.0)")}
    first, again = FakeLaunches(), FakeLaunches()
    studies, studies_again = _studies(space), _studies(space)
    _tune(first, studies, trials=4, tuning_seeds=["1000", "1001"])
    _tune(again, studies_again, trials=4, tuning_seeds=["1000", "1001"])
    assert [len(s["study"].trials) for s in studies.values()] == [4, 4]
    jobs = [job for batch in first.batches for job in batch]
    for name in studies:  # per variant: 4 trials x 2 tuning seeds, trial t in batch t with its stage tag
        mine = [job for job in jobs if f"loss={name}" in job]
        assert len(mine) == 8 and all("sweep.stage=tuning" in job for job in mine)
        assert sorted(o for job in mine for o in job if o.startswith("trainer.seed=")) == \
            ["trainer.seed=1000"] * 4 + ["trainer.seed=1001"] * 4
    assert first.batches == again.batches  # seeded sampler + the same values (reused runs): the same jobs again
    curve = _curve(studies["focal"]["study"])
    assert curve == sorted(curve, reverse=True) and curve[-1] == pytest.approx(studies["focal"]["study"].best_value)


def test_trials_and_stages_are_separate_jobs_of_one_variant(tmp_path):
    (tmp_path / "sweep.json").write_text(json.dumps({"parent_run_id": "p", "sweep_id": "s", "varying": ["loss",
                                                                                                      "trainer.seed"]}))
    trial = sweep_job(tmp_path, ["loss=focal", "optimizer.learning_rate=0.3", "sweep.stage=tuning", "sweep.trial=3",
                                 "trainer.seed=1000"], 5)
    other = sweep_job(tmp_path, ["loss=focal", "optimizer.learning_rate=0.2", "sweep.stage=tuning", "sweep.trial=4",
                                 "trainer.seed=1000"], 6)
    evaluation = sweep_job(tmp_path, ["loss=focal", "optimizer.learning_rate=0.3", "sweep.stage=evaluation",
                                      "trainer.seed=0"], 7)
    assert trial["variant"] == other["variant"] == evaluation["variant"] == "focal"  # grouped as one variant
    assert len({trial["job"], other["job"], evaluation["job"]}) == 3  # no trial supersedes another
    assert trial["name"] == "focal t3" and evaluation["name"] == "focal s0"
    assert (trial["stage"], trial["trial"], evaluation["stage"]) == ("tuning", "3", "evaluation")


@pytest.mark.slow
def test_tuned_sweep_equal_budgets_disjoint_seeds_report_and_a_rerun_trains_nothing(tmp_path, store):
    args = ["+sweep=tuned", "loss=crossentropy,focal", "sweep.tuning.trials=2", "trainer.seed=0,1", *SMALL,
            f"tracking.uri={store}"]
    result = run_cli(args, cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(store)
    parent = next(r for r in runs_of(store) if r.data.tags.get("xentlab.role") == "sweep")
    children = [r for r in runs_of(store) if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    by = {(r.data.tags["xentlab.variant"], r.data.tags["xentlab.stage"]): [] for r in children}
    for r in children:
        by[(r.data.tags["xentlab.variant"], r.data.tags["xentlab.stage"])].append(r)
    assert {k: len(v) for k, v in by.items()} == {("crossentropy", "tuning"): 2, ("focal", "tuning"): 2,
                                                  ("crossentropy", "evaluation"): 2, ("focal", "evaluation"): 2}
    tuning_seeds = {r.data.params["trainer.seed"] for k, runs in by.items() if k[1] == "tuning" for r in runs}
    evaluation_seeds = {r.data.params["trainer.seed"] for k, runs in by.items() if k[1] == "evaluation" for r in runs}
    assert tuning_seeds == {"1000"} and evaluation_seeds == {"0", "1"}
    summary = json.loads(client.get_run(parent.info.run_id).data.tags["xentlab.tuning"])
    for name in ("crossentropy", "focal"):
        chosen = summary["variants"][name]["chosen"]
        lr = {r.data.params["optimizer.learning_rate"] for r in by[(name, "evaluation")]}
        assert lr == {str(chosen["optimizer.learning_rate"])}  # the evaluation runs use the chosen values
        assert len(summary["variants"][name]["curve"]) == 2
    assert "gamma" in str(summary["variants"]["focal"]["space"])
    assert "#### Tuning (the same budget for every variant)" in result.stdout
    assert "2 trials per variant, tpe sampler (seed 0)" in result.stdout
    assert "| focal | 2 |" in result.stdout  # compared over the 2 evaluation runs only
    artifacts = {f.path for f in client.list_artifacts(parent.info.run_id, "report")}
    assert "report/tuning_curves.png" in artifacts

    again = run_cli(args, cwd=tmp_path, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "8 jobs: 0 trained, 8 reused, 0 failed" in again.stdout
    assert len(runs_of(store)) == len(children) + 1


@pytest.mark.slow  # about 10 s of CPU: start-up, store and parent, no training
def test_overlapping_seeds_stop_the_sweep_before_any_job_with_the_message_on_the_parent(tmp_path, store):
    result = run_cli(["+sweep=tuned", "loss=crossentropy,focal", "sweep.tuning.seeds=[0]", "trainer.seed=0,1",
                      *SMALL, f"tracking.uri={store}"], cwd=tmp_path, timeout=300)
    assert result.returncode == 2
    assert "a configuration chosen on a seed would be judged on it" in result.stderr
    assert "Traceback" not in result.stderr
    (parent,) = runs_of(store)
    assert parent.info.status == "FAILED"
    assert "disjoint seeds" in parent.data.tags["xentlab.error"]


def test_a_plain_grid_continuing_a_tuned_parent_drops_the_design_tags(tmp_path, store):
    from xentlab.cli.sweep_grid import forget_designs
    from xentlab.tracking.store import SEQUENTIAL_TAG, TUNING_TAG

    client = MlflowClient(store)
    experiment = client.create_experiment("x")
    parent = client.create_run(experiment, tags={TUNING_TAG: "{}", SEQUENTIAL_TAG: "{}", "keep": "1"}).info.run_id
    (tmp_path / "sweep.json").write_text(json.dumps({"parent_run_id": parent}))
    forget_designs(SimpleNamespace(config=SimpleNamespace(hydra=SimpleNamespace(sweep=SimpleNamespace(dir=tmp_path)),
                                                          tracking=SimpleNamespace(uri=store))))
    tags = client.get_run(parent).data.tags
    assert TUNING_TAG not in tags and SEQUENTIAL_TAG not in tags and tags["keep"] == "1"

"""Sweeps that survive and grow, through the real CLI and real SQLite stores: a rerun continues the same parent and
reuses FINISHED jobs, more seeds extend it, a failed job never costs the report, two commands never run one job
twice; and the report says how many seeds an open question needs."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from benchmarks.compare_scale import synthetic_sweep
from mlflow.tracking import MlflowClient
from statsmodels.stats.power import TTestPower

from conftest import run_cli, runs_of
from xentlab.report.columns import Comparison
from xentlab.report.statistics import paired_difference
from xentlab.tracking.store import FAILED_JOBS_TAG, SUPERSEDED_TAG

# Tiny jobs: one epoch on 64 digits, nothing heavy logged.
TINY = ["model=mlp", "trainer.epochs=1", "trainer.batch_size=32", "data.limit=64", "tracking.log_model=false",
        "tracking.log_plots=false", "tracking.system_metrics=false"]


def _parents(uri: str):
    return [r for r in runs_of(uri) if r.data.tags.get("xentlab.role") == "sweep"]


def _children(uri: str, parent_id: str, *, current: bool = True):
    client = MlflowClient(uri)
    exp = client.get_run(parent_id).info.experiment_id
    runs = client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{parent_id}'")
    return [r for r in runs if not (current and SUPERSEDED_TAG in r.data.tags)]


def _history(uri: str, run_id: str) -> list[tuple[int, int, float]]:
    """(step, timestamp, value) of val_loss: a retrained or relogged epoch changes it."""
    return sorted((m.step, m.timestamp, m.value) for m in MlflowClient(uri).get_metric_history(run_id, "val_loss"))


# ------------------------------------------------------------------------------------------------ identity (units)
def test_the_sweep_key_ignores_the_seed_axis_order_and_launcher_but_not_the_grid_or_the_store():
    from xentlab.tracking.sweeps import sweep_key

    store, other = "sqlite:////tmp/a/mlflow.db", "sqlite:////tmp/b/mlflow.db"
    grid = {"+setup": "crossentropy,balanced", "trainer.seed": "0,1,2"}
    key = sweep_key(store, "xentlab", ["+sweep=long_tail"], grid)
    assert key == sweep_key(store, "xentlab", ["+sweep=long_tail", "trainer.seed=0,1,2,3,4"], grid)  # extended
    assert key == sweep_key(store, "xentlab", ["+sweep=long_tail"], {"+setup": "balanced,crossentropy"})
    assert key == sweep_key(store, "xentlab", ["+sweep=long_tail", "trainer.verbose=silent",
                                               "hydra/launcher=joblib", "hydra.launcher.n_jobs=4"], grid)
    assert key != sweep_key(store, "xentlab", ["+sweep=long_tail", "trainer.epochs=5"], grid)  # a fixed override
    assert key != sweep_key(store, "xentlab", ["+sweep=long_tail", "+setup=crossentropy,balanced,focal"], grid)
    assert key != sweep_key(other, "xentlab", ["+sweep=long_tail"], grid)
    assert key != sweep_key(store, "other", ["+sweep=long_tail"], grid)
    # Credentials in a server URI do not enter the key (nor its logs): the same server is the same sweep.
    assert sweep_key("http://alice:pw1@host:5000", "x", [], {}) == sweep_key("http://alice:pw2@host:5000", "x", [], {})


def test_the_extend_command_keeps_the_sweep_and_adds_the_smallest_unused_seeds():
    from xentlab.report.followup import extend_command

    assert extend_command(["+sweep=long_tail"], ["0", "1", "2"], 5) == (
        'make sweep SWEEP=long_tail ARGS="trainer.seed=0,1,2,3,4"')
    assert extend_command(["+sweep=seeds", "loss=crossentropy,focal", "trainer.seed=range(0,5)"],
                          ["0", "1", "2", "3", "4"], 7) == (
        'make sweep SWEEP=seeds ARGS="loss=crossentropy,focal trainer.seed=0,1,2,3,4,5,6"')
    assert extend_command(["loss=crossentropy,focal", "trainer.seed=3,7"], ["3", "7"], 4) == (
        "xentlab-train -m loss=crossentropy,focal trainer.seed=0,1,3,7")


def test_seeds_needed_section_matches_statsmodels_and_names_the_extend_command():
    from xentlab.report.followup import seeds_needed_section

    variant, base = [0.50, 0.42, 0.61], [0.58, 0.47, 0.64]  # Δ about -0.05, sd of the differences about 0.025
    shown = paired_difference(variant, base)
    diff = Comparison("balanced", "val_nll", shown, min(1.0, 2 * shown.p), "no difference")
    other = Comparison("focal", "val_nll", paired_difference([0.9, 0.8, 0.85], [0.5, 0.45, 0.52]), 0.01, "worse")
    lines = seeds_needed_section([diff, other], ["val_nll"], ["+sweep=long_tail"], ["0", "1", "2"])
    text = "\n".join(lines)
    effect = abs(shown.mean) / shown.sd
    exact = TTestPower().solve_power(effect_size=effect, alpha=0.05 / 2, power=0.8, alternative="two-sided")
    assert f"`balanced` on val_nll (now 3): {math.ceil(exact)} pairs" in text  # alpha / m, m = 2 tested variants
    assert "focal" not in text  # shown: nothing to add
    assert f'make sweep SWEEP=long_tail ARGS="trainer.seed={",".join(map(str, range(math.ceil(exact))))}"' in text
    tiny = Comparison("x", "val_nll", paired_difference([0.5, 0.6, 0.4], [0.52, 0.55, 0.42]), 0.9,
                      "no difference")  # effect |Δ| / sd about 0.08: a thousand pairs
    assert "> 50 seeds: the effect is too small to chase" in "\n".join(
        seeds_needed_section([tiny], ["val_nll"], [], ["0", "1", "2"]))


def test_the_report_of_a_not_shown_set_up_prints_the_seeds_it_needs(tmp_path, store):
    """A long_tail-like sweep written into a real store: `balanced` gains on average but its seeds vary too much."""
    from xentlab.report.compare import write_report

    rng = np.random.default_rng(3)
    runs = []
    for seed in range(3):
        base = 0.66 + rng.normal(0, 0.05)
        for setup, shift in (("crossentropy", 0.0), ("balanced", -0.06 + rng.normal(0, 0.05)),
                             ("logit_adjusted", -0.15 + rng.normal(0, 0.005))):
            runs.append({"variant": f"+setup={setup}", "seed": seed,
                         "metrics": {"val_nll": base + shift, "test_nll": base + shift, "val_loss": base + shift}})
    parent = synthetic_sweep(store, runs, baseline="+setup=crossentropy")
    MlflowClient(store).log_param(parent, "sweep.override.0", "+sweep=long_tail")
    report = write_report(store, parent_run_id=parent, out_dir=tmp_path)
    assert report.comparison("+setup=balanced", "val_nll").verdict in ("no difference", "not shown")
    assert "Seeds needed for what is not shown" in report.markdown
    assert "`+setup=balanced` on val_nll (now 3):" in report.markdown, report.markdown
    assert 'make sweep SWEEP=long_tail ARGS="trainer.seed=0,1,2,' in report.markdown
    assert "Seeds needed" in (tmp_path / "report.html").read_text()


def test_a_second_process_waits_for_the_job_lock_and_gets_it_when_the_first_ends(tmp_path, capsys):
    from xentlab.tracking.sweeps import job_lock

    hold = ("import sys, time; from pathlib import Path; from xentlab.tracking.sweeps import job_lock\n"
            "with job_lock(Path(sys.argv[1]), 'k1', 'job'):\n    print('held', flush=True); time.sleep(3)\n")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        start = time.perf_counter()
        with job_lock(tmp_path, "k1", "job", poll_s=0.2):
            waited = time.perf_counter() - start
    finally:
        holder.wait(timeout=30)
    assert waited > 1.0 and "job job: waiting: another process on this machine runs it" in capsys.readouterr().out
    assert not (tmp_path / "outputs" / "checkpoints" / ".locks" / "k1").exists()  # removed by its last holder


# ------------------------------------------------------------------------------------------------ rerun and extend
@pytest.mark.slow
def test_a_2x2_sweep_rerun_retrains_nothing_and_a_third_seed_runs_exactly_two_jobs(tmp_path, store):
    args = ["-m", *TINY, f"tracking.uri={store}", "loss=crossentropy,focal"]
    first = run_cli([*args, "trainer.seed=0,1"], cwd=tmp_path, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    (parent,) = _parents(store)
    before = {c.info.run_id: _history(store, c.info.run_id) for c in _children(store, parent.info.run_id)}
    assert len(before) == 4

    start = time.perf_counter()
    again = run_cli([*args, "trainer.seed=0,1"], cwd=tmp_path, timeout=600)
    rerun_s = time.perf_counter() - start
    assert again.returncode == 0, again.stderr[-3000:]
    assert "4 jobs: 0 trained, 4 reused, 0 failed" in again.stdout and "| variant |" in again.stdout
    assert "Epoch" not in again.stdout and " FINISHED  test_" not in again.stdout  # no job trained or evaluated
    assert [p.info.run_id for p in _parents(store)] == [parent.info.run_id]
    assert {c.info.run_id: _history(store, c.info.run_id) for c in _children(store, parent.info.run_id)} == before
    report = MlflowClient(store).get_run(parent.info.run_id)
    assert report.info.status == "FINISHED" and report.info.end_time > parent.info.end_time  # the report, again
    print(f"rerun of a 4-job sweep with nothing to train: {rerun_s:.1f} s")

    more = run_cli([*args, "trainer.seed=0,1,2"], cwd=tmp_path, timeout=600)
    assert more.returncode == 0, more.stderr[-3000:]
    assert "6 jobs: 2 trained, 4 reused, 0 failed" in more.stdout
    children = _children(store, parent.info.run_id)
    assert len(children) == 6 and all(c.info.status == "FINISHED" for c in children)
    assert {c.info.run_id: _history(store, c.info.run_id) for c in children if c.info.run_id in before} == before
    assert [p.info.run_id for p in _parents(store)] == [parent.info.run_id]
    # A fresh sweep on purpose: trainer.resume=never makes a second parent and trains again.
    fresh = run_cli([*args, "trainer.seed=0", "trainer.resume=never"], cwd=tmp_path, timeout=600)
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    assert len(_parents(store)) == 2 and "2 jobs: 2 trained, 0 reused, 0 failed" in fresh.stdout


# ------------------------------------------------------------------------------------------------ a failed job
FAILING = ["optimizer=sgd", "optimizer.learning_rate=1e30,0.01", "loss.from_logits=true"]


def test_an_expected_error_in_a_multirun_job_is_printed_and_recorded_not_raised(capsys):
    """Hydra's basic launcher stops the sweep at the first error a job raises: a job reports and returns instead."""
    from xentlab.cli.console import reported_errors
    from xentlab.errors import ExpectedError

    class NonFiniteLoss(ExpectedError, FloatingPointError):  # as tracking.runs defines it, without TensorFlow
        pass

    with reported_errors(debug=False, multirun=True, run_ref=["lr s0 (abc)"]) as failure:
        raise NonFiniteLoss("loss became nan at epoch 0, batch 1")
    assert isinstance(failure.error, NonFiniteLoss)
    err = capsys.readouterr().err
    assert "xentlab: NonFiniteLoss" in err and "lr s0 (abc) is marked FAILED" in err and "Traceback" not in err
    with reported_errors(debug=False, multirun=True, run_ref=[]) as failure:
        raise KeyError("a bug")
    assert isinstance(failure.error, KeyError) and "Traceback" in capsys.readouterr().err  # a bug keeps it
    with pytest.raises(SystemExit) as single, reported_errors(debug=False, multirun=False, run_ref=[]):
        raise NonFiniteLoss("x")
    assert single.value.code == 2  # a single run still exits with the block's status


@pytest.mark.slow
def test_a_failing_job_costs_neither_the_sweep_nor_the_report(tmp_path, store):
    result = run_cli(["-m", *TINY, f"tracking.uri={store}", *FAILING], cwd=tmp_path, timeout=600)
    _assert_failed_sweep(store, result, tmp_path)


def _assert_failed_sweep(store: str, result, tmp_path: Path):
    """The NaN job FAILED without a traceback, the other FINISHED, the parent FAILED with the report listing it."""
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "Error executing job" not in result.stderr
    assert "xentlab: NonFiniteLoss" in result.stderr
    failed_lines = [ln for ln in result.stderr.splitlines() if ln.startswith("  job ")]
    assert len(failed_lines) == 1 and "learning_rate=1e+30" in failed_lines[0] and "FAILED" in failed_lines[0]
    (parent,) = _parents(store)
    assert parent.info.status == "FAILED" and parent.data.tags[FAILED_JOBS_TAG] == "1"
    assert "1 job(s) did not finish; the report covers the FINISHED ones" in parent.data.tags["xentlab.error"]
    statuses = {c.data.params["optimizer.learning_rate"]: c.info.status for c in _children(store, parent.info.run_id)}
    assert statuses == {"1e+30": "FAILED", "0.01": "FINISHED"}
    path = MlflowClient(store).download_artifacts(parent.info.run_id, "report/report.md", str(tmp_path))
    report = Path(path).read_text()
    assert "Jobs that did not finish (1" in report and "NonFiniteLoss: loss became nan" in report
    # The verdict covers the variant that finished and names the one that diverged.
    note = MlflowClient(store).get_run(parent.info.run_id).data.tags["mlflow.note.content"]
    assert "diverged" in note and "learning_rate=1e+30" in note and "is not ranked in this sweep" not in note
    return parent


@pytest.mark.slow
def test_a_failed_job_runs_again_as_a_new_child_and_the_one_it_replaces_is_superseded(tmp_path, store):
    parent = _assert_failed_sweep(store, run_cli(["-m", *TINY, f"tracking.uri={store}", *FAILING], cwd=tmp_path,
                                                 timeout=600), tmp_path)
    # The same command again: the finished job is reused, the failed one runs again as a new child (it fails
    # again: the rate is absurd) and the child it replaces is marked superseded, left out of the report.
    again = run_cli(["-m", *TINY, f"tracking.uri={store}", *FAILING], cwd=tmp_path, timeout=600)
    assert again.returncode == 1 and "2 jobs: 0 trained, 1 reused, 1 failed" in again.stdout
    every = _children(store, parent.info.run_id, current=False)
    old = [c for c in every if SUPERSEDED_TAG in c.data.tags]
    assert len(every) == 3 and len(old) == 1 and old[0].info.status == "FAILED"
    newer = {c.info.run_id for c in every if c.info.status == "FAILED"} - {old[0].info.run_id}
    assert old[0].data.tags[SUPERSEDED_TAG] in newer
    assert MlflowClient(store).get_run(parent.info.run_id).data.tags[FAILED_JOBS_TAG] == "1"  # the current one


# ------------------------------------------------------------------------------------------------ Ctrl-C, two commands
def _sweep_process(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, "-u", "-c", "from xentlab.cli.train import main; main()", *args]
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_ctrl_c_after_the_first_job_then_the_same_command_finishes_each_child_once(tmp_path, store):
    args = ["-m", *TINY, "trainer.epochs=40", "trainer.verbose=line", f"tracking.uri={store}", "trainer.seed=0,1"]
    proc = _sweep_process(args, tmp_path)
    seen, finished = [], False
    for line in proc.stdout:
        seen.append(line)
        finished = finished or " FINISHED  test_" in line  # the first job's summary line
        if finished and "Epoch 3/40" in line:  # the second job has checkpoints to resume from
            break
    else:
        pytest.fail("the sweep never reached its second job:\n" + "".join(seen[-40:]))
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=180)
    (parent,) = _parents(store)
    assert parent.info.status == "KILLED"
    first = {c.data.params["trainer.seed"]: c for c in _children(store, parent.info.run_id)}
    assert first["0"].info.status == "FINISHED" and first["1"].info.status == "KILLED"
    kept = _history(store, first["0"].info.run_id)

    again = run_cli(args, cwd=tmp_path, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "2 jobs: 1 trained, 1 reused, 0 failed" in again.stdout
    assert f"resuming run {first['1'].info.run_id}" in again.stdout
    children = _children(store, parent.info.run_id, current=False)
    assert {c.info.run_id for c in children} == {c.info.run_id for c in first.values()}  # no new child
    assert all(c.info.status == "FINISHED" for c in children)
    assert _history(store, first["0"].info.run_id) == kept  # not retrained
    steps = [s for s, _, _ in _history(store, first["1"].info.run_id)]
    assert steps == list(range(40))  # each epoch logged once across the two attempts
    assert MlflowClient(store).get_run(parent.info.run_id).info.status == "FINISHED"


@pytest.mark.slow
def test_two_identical_sweep_commands_at_once_never_run_a_job_twice(tmp_path, store):
    args = ["-m", *TINY, "trainer.epochs=3", f"tracking.uri={store}", "trainer.seed=0,1,2"]
    procs = [_sweep_process(args, tmp_path) for _ in range(2)]
    outputs = [p.communicate(timeout=900)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n\n".join(o[-3000:] for o in outputs)
    (parent,) = _parents(store)  # one parent, though both started at once
    children = _children(store, parent.info.run_id, current=False)
    assert sorted(c.data.params["trainer.seed"] for c in children) == ["0", "1", "2"]  # no twin child
    assert all(c.info.status == "FINISHED" for c in children)
    for child in children:
        assert [s for s, _, _ in _history(store, child.info.run_id)] == [0, 1, 2]
    tallies = [next(ln for ln in o.splitlines() if ln.startswith("sweep ") and " jobs: " in ln) for o in outputs]
    trained = sum(int(t.split(" jobs: ")[1].split(" trained")[0]) for t in tallies)
    assert trained == 3, tallies  # every job trained by exactly one of the two commands


# ------------------------------------------------------------------------------------------------ report at scale
def test_reliability_comes_from_tags_and_files_only_for_a_bounded_sample(tmp_path, store):
    import json

    from xentlab.report.query import RELIABILITY_SAMPLE, fetch_children, read_reliability
    from xentlab.tracking.store import RELIABILITY_TAG

    bins = {"num_bins": 2, "edges": [0.0, 0.5, 1.0], "count": [3, 7], "accuracy": [0.4, 0.9],
            "confidence": [0.3, 0.8], "ece": 0.1}
    runs = [{"variant": v, "seed": s, "metrics": {"val_nll": 0.5}} for v in ("loss=old", "loss=new") for s in range(8)]
    parent = synthetic_sweep(store, runs, reliability={"loss=old": bins}, epochs=1)  # files: logged before the tag
    client = MlflowClient(store)
    children = fetch_children(client, client.get_run(parent).info.experiment_id, parent)
    compact = json.dumps({k: v for k, v in bins.items() if k != "edges"})
    for run in children:
        if run.info.run_name.startswith("loss=new"):
            client.set_tag(run.info.run_id, RELIABILITY_TAG, compact)
    children = fetch_children(client, client.get_run(parent).info.experiment_id, parent)
    by_variant = {v: [r for r in children if r.info.run_name.startswith(v + ",")] for v in ("loss=old", "loss=new")}
    found, sampled = read_reliability(client, by_variant)
    new = [r.info.run_id for r in by_variant["loss=new"]]
    old = [r.info.run_id for r in by_variant["loss=old"]]
    assert all(found[r] == bins for r in new)  # every tagged run, edges rebuilt
    assert sum(r in found for r in old) == RELIABILITY_SAMPLE and sampled  # files: a bounded sample
    assert all(found[r] == bins for r in old if r in found)

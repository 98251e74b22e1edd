"""The report on long-tailed and k-fold sweeps: variants paired by (seed, fold), the long-tail section, and the
baseline's post-hoc row (also as --baseline), on a real SQLite store of a synthetic sweep checked against scipy."""

from __future__ import annotations

import numpy as np
import pytest
from benchmarks.compare_scale import synthetic_sweep
from scipy import stats

from xentlab.report.compare import write_report
from xentlab.report.statistics import direction
from xentlab.report.variants import pair_key, variant_name
from xentlab.tracking import naming

FOLDS = 5


def test_folds_are_repetitions_like_seeds():
    assert variant_name("loss=focal,data.fold=3,trainer.seed=1") == "loss=focal"
    assert variant_name("data.fold=3,loss=focal") == "loss=focal"
    assert variant_name("data.fold=0,trainer.seed=2") == "(default)"
    job = ["trainer.seed=1", "data.fold=2", "loss=focal"]
    assert naming.variant_name(job) == "focal" and naming.variant_overrides(job) == "loss=focal"
    assert naming.run_name("focal", 1, 2) == "focal f2 s1" and naming.run_name("focal", 1) == "focal s1"
    assert pair_key({"trainer.seed": "1", "data.folds": "5", "data.fold": "2"}, "rid") == "1/fold2"
    assert pair_key({"trainer.seed": "1", "data.folds": "null", "data.fold": "0"}, "rid") == "1"
    assert pair_key({}, "rid") == "rid"
    for metric, better in (("test_few_shot_accuracy", "max"), ("test_balanced_accuracy_posthoc", "max"),
                           ("test_adaptive_ece", "min"), ("val_classwise_ece", "min"), ("test_nll_posthoc", "min"),
                           ("test_ece_calibrated", "min"), ("posthoc_tau", None)):
        assert direction(metric) == better, metric


def _fold_runs(variant: str, few: np.ndarray, posthoc: np.ndarray | None = None) -> list[dict]:
    specs = []
    for fold in range(FOLDS):
        metrics = {"val_nll": 0.4 - few[fold] / 10, "test_nll": 0.45 - few[fold] / 10, "test_few_shot_accuracy":
                   float(few[fold]), "test_many_shot_accuracy": 0.99, "test_balanced_accuracy": 0.8 + few[fold] / 10}
        if posthoc is not None:
            metrics.update({"test_balanced_accuracy_posthoc": 0.85 + posthoc[fold] / 10,
                            "test_few_shot_accuracy_posthoc": float(posthoc[fold]), "test_nll_posthoc": 0.3})
        specs.append({"variant": f"{variant},data.fold={fold}", "seed": 0, "metrics": metrics,
                      "params": {"data.folds": str(FOLDS), "data.fold": str(fold)}})
    return specs


def test_a_k_fold_sweep_is_paired_by_fold_and_shows_the_posthoc_row(tmp_path, store):
    rng = np.random.default_rng(0)
    fold_effect = np.array([0.40, 0.55, 0.62, 0.48, 0.70])  # the split's variance, shared by both set-ups
    base = fold_effect + rng.normal(0, 0.005, FOLDS)
    adjusted = fold_effect + 0.15 + rng.normal(0, 0.005, FOLDS)
    trained = fold_effect + 0.16 + rng.normal(0, 0.005, FOLDS)
    parent = synthetic_sweep(store, _fold_runs("+setup=ce", base, posthoc=adjusted)
                             + _fold_runs("+setup=la", trained), baseline="+setup=ce")
    report = write_report(store, parent_run_id=parent, out_dir=tmp_path / "a")
    rows = {r["variant"]: r for r in report.rows}
    assert set(rows) == {"+setup=ce", "+setup=la", "+setup=ce + post-hoc"} and rows["+setup=la"]["n"] == FOLDS
    got = {(c.variant, c.metric): c for c in report.comparisons}
    la = got[("+setup=la", "test_few_shot_accuracy")]
    assert la.diff.test == "paired" and la.diff.n == FOLDS and la.pairs == "seed/fold pairs"
    assert la.diff.p == pytest.approx(stats.ttest_rel(trained, base).pvalue, rel=1e-6)
    assert stats.ttest_ind(trained, base, equal_var=False).pvalue > 0.05 > la.diff.p  # pairing by fold matters
    posthoc = got[("+setup=ce + post-hoc", "test_few_shot_accuracy")]
    assert posthoc.diff.mean == pytest.approx(np.mean(adjusted - base)) and posthoc.verdict == "better"
    assert ("+setup=ce + post-hoc", "val_nll") not in got  # nothing logged: not compared, not "untested"
    assert rows["+setup=ce + post-hoc"]["test_nll"] == pytest.approx(0.3)
    assert "#### Long tail" in report.markdown and "paired, 5 seed/fold pairs" in report.markdown

    against = write_report(store, parent_run_id=parent, out_dir=tmp_path / "b", baseline="+setup=ce + post-hoc",
                           metric="test_few_shot_accuracy")
    assert against.baseline == "+setup=ce + post-hoc"
    c = {(c.variant, c.metric): c for c in against.comparisons}[("+setup=la", "test_few_shot_accuracy")]
    assert c.diff.p == pytest.approx(stats.ttest_rel(trained, adjusted).pvalue, rel=1e-6)
    with pytest.raises(ValueError, match=r"the runs of \+setup=la logged no post-hoc metrics"):
        write_report(store, parent_run_id=parent, out_dir=tmp_path / "c", baseline="+setup=la + post-hoc")


@pytest.mark.slow
def test_the_cv_preset_runs_every_fold_and_pairs_by_fold(tmp_path, store):
    from mlflow.tracking import MlflowClient

    from conftest import run_cli

    result = run_cli(["+sweep=cv", f"tracking.uri={store}", "trainer.epochs=2", "data.folds=3", "data.fold=0,1,2",
                      "tracking.log_plots=false"], cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("xentlab").experiment_id])
    parent = next(r for r in runs if r.data.tags.get("xentlab.role") == "sweep")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.status == "FINISHED" and len(children) == 6
    assert {c.info.run_name for c in children} == {f"{s} f{f} s0" for s in ("crossentropy", "logit_adjusted")
                                                   for f in range(3)}
    assert {c.data.params["data.fold"] for c in children} == {"0", "1", "2"}
    report = client.download_artifacts(parent.info.run_id, "report/report.md", str(tmp_path))
    text = open(report).read()
    assert "paired, 3 seed/fold pairs" in text and "crossentropy + post-hoc" in text and "#### Long tail" in text

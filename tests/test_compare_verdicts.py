"""The parent's verdict is the primary metric's, on real SQLite stores of synthetic sweeps: `xentlab-compare` on a
metric no run logged is an error listing what was logged, a report on another metric is written beside the
verdict, `--sweep` takes the parent's run id, and a variant that diverged is named in the verdict."""

from __future__ import annotations

import numpy as np
import pytest
from benchmarks.compare_scale import synthetic_sweep
from mlflow.tracking import MlflowClient

from xentlab.cli.compare import main
from xentlab.report.compare import write_report
from xentlab.tracking.store import ERROR_TAG, SWEEP_TAG, VARIANT_TAG, VERDICT_TAG

NOTE = "mlflow.note.content"


def _runs(variant: str, nll: float, seeds=(0, 1, 2)):
    rng = np.random.default_rng(len(variant))
    return [{"variant": variant, "seed": s, "tags": {VARIANT_TAG: variant},
             "metrics": {"val_nll": nll + rng.normal(0, 0.01), "val_loss": nll, "val_accuracy": 0.9 - nll / 10}}
            for s in seeds]


@pytest.fixture
def classified(store, tmp_path):
    parent = synthetic_sweep(store, _runs("a", 0.5) + _runs("b", 0.3))
    write_report(store, parent_run_id=parent, out_dir=tmp_path / "first")  # as the sweep command does
    return store, parent


def test_a_metric_no_run_logged_is_an_error_listing_the_logged_ones(tmp_path, classified, capsys):
    store, parent = classified
    before = MlflowClient(store).get_run(parent).data.tags
    with pytest.raises(SystemExit) as err:
        main(["--tracking-uri", store, "--metric", "test_bpc", "--out", str(tmp_path / "r")])
    message = capsys.readouterr().err
    assert err.value.code == 2 and "Traceback" not in message
    assert "--metric test_bpc: no FINISHED run of this sweep logged it. Logged: " in message and "val_nll" in message
    after = MlflowClient(store).get_run(parent).data.tags
    assert after[VERDICT_TAG] == before[VERDICT_TAG] and after[NOTE] == before[NOTE]


def test_another_metric_is_reported_beside_the_verdict_never_over_it(tmp_path, classified, capsys):
    store, parent = classified
    client = MlflowClient(store)
    before = client.get_run(parent).data.tags
    assert before[VERDICT_TAG].endswith("(val_nll)")
    main(["--tracking-uri", store, "--metric", "val_accuracy", "--out", str(tmp_path / "r")])
    after = client.get_run(parent).data.tags
    assert after[VERDICT_TAG] == before[VERDICT_TAG] and after[NOTE] == before[NOTE]
    assert after[f"{VERDICT_TAG}.val_accuracy"].endswith("(val_accuracy)")
    assert {a.path for a in client.list_artifacts(parent, "report/val_accuracy")} >= {"report/val_accuracy/report.md"}
    assert "report/report.md" in {a.path for a in client.list_artifacts(parent, "report")}


def test_the_sweep_is_found_by_its_parents_run_id_or_a_childs(tmp_path, store, capsys):
    parent = synthetic_sweep(store, _runs("a", 0.5) + _runs("b", 0.3))
    synthetic_sweep(store, _runs("c", 0.5))  # a later sweep: "latest" would be this one
    client = MlflowClient(store)
    sweep_id = client.get_run(parent).data.tags[SWEEP_TAG]
    child = client.search_runs([client.get_run(parent).info.experiment_id],
                               f"tags.`mlflow.parentRunId` = '{parent}'")[0]
    for given in (parent, child.info.run_id):
        main(["--tracking-uri", store, "--sweep", given, "--out", str(tmp_path / given)])
        assert f"sweep {sweep_id}: 6 runs, 2 variants" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--tracking-uri", store, "--sweep", "0" * 32])
    assert f"no sweep '{'0' * 32}'" in capsys.readouterr().err


def _diverge(store: str, parent: str, variant: str) -> None:
    client = MlflowClient(store)
    for run in client.search_runs([client.get_run(parent).info.experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{parent}' and tags.`{VARIANT_TAG}` = '{variant}'"):
        client.set_tag(run.info.run_id, ERROR_TAG, "NonFiniteLoss: loss became nan at epoch 0, batch 1")
        client.set_terminated(run.info.run_id, "FAILED")


def test_a_diverged_variant_is_named_in_the_verdict_of_those_that_finished(tmp_path, store):
    alone = synthetic_sweep(store, _runs("crossentropy", 0.5) + _runs("lr=1e+30", 0.5))
    _diverge(store, alone, "lr=1e+30")
    report = write_report(store, parent_run_id=alone, out_dir=tmp_path / "alone")
    assert report.unfinished == {"lr=1e+30": "diverged"}
    tags = MlflowClient(store).get_run(alone).data.tags
    assert tags[NOTE].startswith("Only `crossentropy` finished, so nothing is ranked on `val_nll`: `lr=1e+30` "
                                 "diverged") and "is not ranked in this sweep" not in tags[NOTE]
    assert tags[VERDICT_TAG] == "lr=1e+30 diverged; val_nll not ranked"

    three = synthetic_sweep(store, _runs("a", 0.5) + _runs("b", 0.3) + _runs("c", 0.4))
    _diverge(store, three, "c")
    write_report(store, parent_run_id=three, out_dir=tmp_path / "three")
    tags = MlflowClient(store).get_run(three).data.tags
    assert tags[NOTE].startswith("Against `a` on `val_nll`") and "Did not finish: `c` diverged." in tags[NOTE]
    assert tags[VERDICT_TAG] == "b better; c diverged (val_nll)"

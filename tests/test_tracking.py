"""Tracking helpers: absolute URIs, stable param strings, masked secrets; weighting and compare arithmetic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from xentlab.core.weighting import class_weights, label_counts
from xentlab.report.compare import aggregate
from xentlab.report.variants import variant_name
from xentlab.tracking.resume import job_key
from xentlab.tracking.runs import flatten_params, mask_config
from xentlab.tracking.store import resolve_tracking_uri


def test_tracking_uri_is_always_absolute(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(None, tmp_path) == f"sqlite:///{tmp_path.resolve() / 'outputs' / 'mlflow.db'}"
    assert resolve_tracking_uri("sqlite:///rel/m.db", tmp_path) == f"sqlite:///{tmp_path.resolve() / 'rel' / 'm.db'}"
    assert resolve_tracking_uri("mlruns", tmp_path) == (tmp_path / "mlruns").resolve().as_uri()
    assert resolve_tracking_uri("http://127.0.0.1:5000", tmp_path) == "http://127.0.0.1:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://team:5000")
    assert resolve_tracking_uri(None, tmp_path) == "http://team:5000"


def test_params_are_flat_stable_and_secrets_masked():
    config = {
        "loss": {"from_logits": True, "alpha": [0.25, 0.75], "gamma": 2.0},
        "tracking": {"uri": "http://alice:s3cret@host:5000", "api_token": "abc", "password": None},
        "labels": {"ignore_class": None},
    }
    flat = flatten_params(config)
    assert flat == flatten_params(config)  # the same spelling every time (resume re-logs them)
    assert flat["loss.from_logits"] == "True" and flat["loss.alpha"] == "[0.25, 0.75]"
    assert flat["labels.ignore_class"] == "null"
    assert flat["tracking.api_token"] == "***" and "s3cret" not in flat["tracking.uri"]
    assert flat["tracking.uri"] == "http://alice:***@host:5000"
    masked = mask_config(config)
    assert masked["tracking"]["api_token"] == "***" and "s3cret" not in masked["tracking"]["uri"]


def test_job_key_ignores_knobs_that_do_not_change_results():
    base = {"trainer.epochs": "3", "trainer.verbose": "auto", "trainer.resume": "auto"}
    assert job_key(base) == job_key({**base, "trainer.verbose": "2", "trainer.resume": "never"})
    assert job_key(base) != job_key({**base, "trainer.epochs": "4"})


def test_class_weights_for_every_scheme():
    counts = label_counts(np.array([[0, 0], [0, 1], [2, 9]]), num_classes=4, ignore_class=9)  # (N, T) labels
    assert counts.tolist() == [3, 1, 1, 0]
    balanced = class_weights(counts, "balanced")
    assert balanced.tolist() == pytest.approx([5 / 12, 5 / 4, 5 / 4, 0.0])  # n / (k * count); absent -> 0
    inv = class_weights(counts, "inverse_sqrt")
    assert inv[1] / inv[0] == pytest.approx(np.sqrt(3)) and inv[:3].mean() == pytest.approx(1.0)
    eff = class_weights(counts, "effective_number", beta=0.9)
    raw = (1 - 0.9) / (1 - 0.9 ** np.array([3, 1, 1]))
    assert eff[:3] == pytest.approx(raw * 3 / raw.sum())
    assert class_weights(counts, "none") is None
    with pytest.raises(ValueError, match="one value per class"):
        class_weights(counts, "custom", weights=[1.0])


def test_report_aggregates_seeds_with_sample_std():
    assert variant_name("loss=focal,trainer.seed=3") == "loss=focal"
    assert variant_name("trainer.seed=1,labels=one_hot") == "labels=one_hot"
    runs = [{"val_loss": 1.0}, {"val_loss": 2.0}, {"val_loss": 4.0}]
    from xentlab.report.columns import COLUMNS

    filled = [{c: r.get(c, float("nan")) for c, _, _ in COLUMNS} for r in runs]
    (row,) = aggregate({"v": filled})
    assert row["n"] == 3 and row["val_loss"] == pytest.approx(7 / 3)
    assert row["val_loss_std"] == pytest.approx(np.std([1, 2, 4], ddof=1))


def test_weight_sum_normalisation_makes_a_weighted_mean():
    import tensorflow as tf

    from xentlab.core.pipeline import element_weights

    y = tf.constant([[0, 1, 1], [1, 2, 2]])
    table = np.array([2.0, 1.0, 0.5], np.float32)
    w = element_weights(y, class_weights=table, ignore_class=2, normalize="weight_sum").numpy()
    valid = np.array([[1, 1, 1], [1, 0, 0]])
    assert w[valid == 0].tolist() == [0.0, 0.0]
    assert w.sum() == pytest.approx(valid.sum())  # sum(w * loss) / count == sum(w * loss) / sum(w)
    assert w[0, 0] / w[0, 1] == pytest.approx(2.0)


def test_outputs_folder_is_tracked_only_as_gitkeep():
    repo = Path(__file__).resolve().parents[1]
    ignore = (repo / ".gitignore").read_text()
    assert "outputs/*" in ignore and "!outputs/.gitkeep" in ignore

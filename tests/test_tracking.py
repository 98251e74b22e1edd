"""Tracking helpers: absolute URIs, stable param strings, masked secrets; compare arithmetic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from conftest import compose
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


def test_params_spell_one_config_one_way_and_mask_secrets():
    def flat(overrides):
        return flatten_params(OmegaConf.to_container(compose(overrides), resolve=True, enum_to_str=True))

    # The same job written two ways (override order, 2 vs 2.0) logs the same params, so a resumed job finds its
    # run and checkpoint (job_key); a different value does not.
    first = flat(["loss=focal", "loss.gamma=2", "trainer.seed=3", "labels=one_hot"])
    again = flat(["labels=one_hot", "trainer.seed=3", "loss=focal", "loss.gamma=2.0"])
    assert first == again and job_key(first) == job_key(again)
    assert first["loss.gamma"] == "2.0" and first["labels.encoding"] == "one_hot" and first["trainer.seed"] == "3"
    other = flat(["loss=focal", "loss.gamma=3", "trainer.seed=3", "labels=one_hot"])
    assert other["loss.gamma"] == "3.0" and job_key(other) != job_key(first)

    config = {
        "loss": {"from_logits": True, "alpha": [0.25, 0.75], "gamma": 2.0},
        "tracking": {"uri": "http://alice:s3cret@host:5000", "api_token": "abc", "password": None},
        "labels": {"ignore_class": None},
    }
    flat_config = flatten_params(config)
    assert flat_config["loss.from_logits"] == "True" and flat_config["loss.alpha"] == "[0.25, 0.75]"
    assert flat_config["labels.ignore_class"] == "null" and flat_config["tracking.password"] == "null"
    assert flat_config["tracking.api_token"] == "***" and "s3cret" not in flat_config["tracking.uri"]
    assert flat_config["tracking.uri"] == "http://alice:***@host:5000"
    masked = mask_config(config)
    assert masked["tracking"]["api_token"] == "***" and "s3cret" not in masked["tracking"]["uri"]


def test_job_key_ignores_knobs_that_do_not_change_results():
    base = {"trainer.epochs": "3", "trainer.verbose": "auto", "trainer.resume": "auto"}
    assert job_key(base) == job_key({**base, "trainer.verbose": "2", "trainer.resume": "never"})
    assert job_key(base) != job_key({**base, "trainer.epochs": "4"})


def test_report_aggregates_seeds_with_sample_std():
    assert variant_name("loss=focal,trainer.seed=3") == "loss=focal"
    assert variant_name("trainer.seed=1,labels=one_hot") == "labels=one_hot"
    runs = [{"val_loss": 1.0}, {"val_loss": 2.0}, {"val_loss": 4.0}]
    from xentlab.report.columns import COLUMNS

    filled = [{c: r.get(c, float("nan")) for c, _, _ in COLUMNS} for r in runs]
    (row,) = aggregate({"v": filled})
    assert row["n"] == 3 and row["val_loss"] == pytest.approx(7 / 3)
    assert row["val_loss_std"] == pytest.approx(np.std([1, 2, 4], ddof=1))


def test_outputs_folder_is_tracked_only_as_gitkeep():
    repo = Path(__file__).resolve().parents[1]
    ignore = (repo / ".gitignore").read_text()
    assert "outputs/*" in ignore and "!outputs/.gitkeep" in ignore

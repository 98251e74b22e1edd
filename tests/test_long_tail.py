"""Tests of xentlab.data.long_tail (data.long_tail_ratio): the exponential profile of Cao et al. 2019 on the training
split only, deterministic, never emptying a class, refused where it cannot apply; and one real run with it."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import TINY, compose, runs_of
from xentlab.data import DataBundle, DataError, load_data
from xentlab.data.long_tail import apply_long_tail, long_tail_profile


def cao_profile(n_max, k, ratio):
    """Cao et al.'s CIFAR-LT code: int(img_max * (1 / ratio) ** (cls_idx / (cls_num - 1)))."""
    return [int(n_max * (1.0 / ratio) ** (c / (k - 1.0))) for c in range(k)]


def bundle_of(counts, *, seed=0, name="toy"):
    """A bundle whose training split holds counts[c] examples of class c, shuffled; x_train row i encodes i."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.repeat(np.arange(len(counts)), counts))
    x = np.arange(len(y), dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    yv, yt = rng.integers(0, len(counts), 40), rng.integers(0, len(counts), 30)
    return DataBundle(name, x, y, rng.normal(size=(40, 3)), yv, rng.normal(size=(30, 3)), yt,
                      num_classes=len(counts))


@pytest.mark.parametrize(("n_max", "k", "ratio"), [(500, 10, 100.0), (5000, 10, 10.0), (433, 7, 3.5), (60, 2, 6.0)])
def test_profile_is_cao_et_al(n_max, k, ratio):
    profile = long_tail_profile(n_max, k, ratio)
    np.testing.assert_array_equal(profile, cao_profile(n_max, k, ratio))
    assert profile[0] == n_max and profile[-1] == int(n_max / ratio) and np.all(np.diff(profile) <= 0)


def test_training_split_follows_the_profile_and_val_test_stay_whole():
    b = bundle_of([80] * 10)
    x_val, y_val, x_test, y_test = b.x_val.copy(), b.y_val.copy(), b.x_test.copy(), b.y_test.copy()
    original = b.y_train.copy()
    out = apply_long_tail(b, 20.0, seed=3)
    counts = np.bincount(out.y_train, minlength=10)
    np.testing.assert_array_equal(counts, cao_profile(80, 10, 20.0))
    assert out.meta["class_counts"] == counts.tolist() and out.meta["long_tail_ratio"] == 20.0
    rows = out.x_train[:, 0].astype(int)  # the original positions of the kept examples
    assert np.all(np.diff(rows) > 0)  # a subset, in the original order
    np.testing.assert_array_equal(original[rows], out.y_train)  # features and labels stay paired
    for got, want in [(out.x_val, x_val), (out.y_val, y_val), (out.x_test, x_test), (out.y_test, y_test)]:
        np.testing.assert_array_equal(got, want)


def test_deterministic_given_the_seed():
    def kept(seed):
        return apply_long_tail(bundle_of([50] * 5), 10.0, seed=seed).x_train[:, 0]

    np.testing.assert_array_equal(kept(0), kept(0))
    assert len(kept(0)) == len(kept(1)) and not np.array_equal(kept(0), kept(1))


def test_never_empties_a_class_and_a_short_class_keeps_what_it_has():
    out = apply_long_tail(bundle_of([30, 30, 30, 30]), 1000.0, seed=0)  # 30 / 1000 < 1
    np.testing.assert_array_equal(np.bincount(out.y_train, minlength=4), [30, 3, 1, 1])
    # class 0 is the largest by index, not by count: class 1 (n_max = 100) gets target 100 * 10^(-1/3) = 46
    out = apply_long_tail(bundle_of([20, 100, 60, 5]), 10.0, seed=0)
    np.testing.assert_array_equal(np.bincount(out.y_train, minlength=4), [20, 46, 21, 5])
    assert out.meta["class_counts"] == [20, 46, 21, 5]


def test_ratio_one_is_off_and_bad_ratios_fail_clearly():
    b = bundle_of([10, 20, 30])
    y, meta = b.y_train.copy(), dict(b.meta)
    out = apply_long_tail(b, 1.0, seed=0)
    np.testing.assert_array_equal(out.y_train, y)
    assert out.meta == meta
    for bad in (0.5, -3.0, float("nan"), float("inf")):
        with pytest.raises(DataError, match=r"data.long_tail_ratio must be a number >= 1 .* e.g. data.long_tail_ratio"):
            apply_long_tail(bundle_of([10, 20, 30]), bad, seed=0)


def test_sources_without_one_label_per_example_are_refused(text_file):
    with pytest.raises(DataError, match=r"data=periods has labels of shape \(3,\) per example .* "
                                        r"set data.long_tail_ratio=1"):
        load_data("periods", val_fraction=0.15, test_fraction=0.15, split_seed=0, num_examples=200,
                  long_tail_ratio=10.0)
    with pytest.raises(DataError, match=r"data=text has labels of shape \(20,\) per example \(text, sequence"):
        load_data("text", path=str(text_file), val_fraction=0.1, test_fraction=0.1, seq_len=20, stride=20,
                  long_tail_ratio=10.0)


def test_load_data_applies_the_profile_after_the_limit():
    common = {"val_fraction": 0.15, "test_fraction": 0.15, "split_seed": 0}
    plain = load_data("digits", limit=600, **common)
    tail = load_data("digits", limit=600, long_tail_ratio=10.0, **common)
    counts = np.bincount(plain.y_train, minlength=10)
    np.testing.assert_array_equal(np.bincount(tail.y_train, minlength=10),
                                  np.minimum(cao_profile(counts.max(), 10, 10.0), counts))
    assert tail.meta["class_counts"] == np.bincount(tail.y_train, minlength=10).tolist()
    assert len(tail.x_train) < 600
    np.testing.assert_array_equal(tail.y_val, plain.y_val)
    np.testing.assert_array_equal(tail.x_test, plain.x_test)


def test_shot_groups_follow_the_thresholds_and_skip_balanced_splits():
    from xentlab.data.long_tail import shot_groups

    counts = [150, 101, 100, 20, 19, 0, 3]
    assert shot_groups(counts) == {"many": [0, 1], "medium": [2, 3], "few": [4, 6]}  # class 5 is absent: no group
    assert shot_groups(counts, [5, 150]) == {"many": [], "medium": [0, 1, 2, 3, 4], "few": [6]}
    assert shot_groups([40, 40, 0, 40]) is None  # the present classes are balanced: nothing to group
    for bad in ([100, 20], [20], [-1, 5], [1.5, 20], "20,100"):
        with pytest.raises(DataError, match=r"data.shot_thresholds must be two integers \[low, high\]"):
            shot_groups(counts, bad)


def test_a_long_tailed_run_logs_posthoc_shot_and_calibration_metrics(store):
    import json

    from mlflow.tracking import MlflowClient

    from xentlab.cli.train import run

    run(compose([*TINY, "data.limit=null", f"tracking.uri={store}", "data=imbalanced", "model=mlp",
                 "data.long_tail_ratio=20", "loss=logit_adjusted", "calibration=temperature",
                 "calibration.posthoc_tune=true", "data.shot_thresholds=[30,100]"]))
    (logged,) = runs_of(store)
    assert logged.info.status == "FINISHED", logged.data.tags.get("xentlab.error")
    plain = load_data("imbalanced", val_fraction=0.15, test_fraction=0.15, split_seed=0,
                      class_counts=[198, 436, 710, 272])
    counts = np.bincount(plain.y_train, minlength=4)
    expected = np.minimum(cao_profile(counts.max(), 4, 20.0), counts)
    assert logged.data.params["data.long_tail_ratio"] == "20.0"
    assert int(logged.data.params["data.train_size"]) == expected.sum()

    path = MlflowClient(store).download_artifacts(logged.info.run_id, "shot_groups.json")
    shots = json.loads(open(path).read())
    assert shots["class_counts"] == expected.tolist() and shots["thresholds"] == [30, 100]
    for group, members in (("many", expected > 100), ("medium", (expected >= 30) & (expected <= 100)),
                           ("few", expected < 30)):
        assert shots["groups"][group]["classes"] == np.flatnonzero(members).tolist()
        assert members.any()  # the case covers all three groups
    metrics = logged.data.metrics
    for name in ("test_balanced_accuracy_posthoc", "test_few_shot_accuracy", "val_few_shot_accuracy",
                 "test_many_shot_accuracy", "test_medium_shot_accuracy", "test_classwise_ece", "test_adaptive_ece",
                 "val_classwise_ece", "val_adaptive_ece", "test_classwise_ece_calibrated",
                 "test_adaptive_ece_calibrated", "test_few_shot_accuracy_posthoc", "posthoc_tau"):
        assert np.isfinite(metrics[name]), name
    assert 0.0 <= metrics["test_classwise_ece"] <= 1.0 and 0.0 <= metrics["test_adaptive_ece"] <= 1.0
    assert metrics["posthoc_tau"] in (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)


def _artifacts(uri, run_id) -> list[str]:
    from mlflow.tracking import MlflowClient

    return [f.path for f in MlflowClient(uri).list_artifacts(run_id)]


@pytest.mark.slow
def test_an_ignore_class_inside_the_classes_is_in_no_shot_group(store, tmp_path):
    """labels.ignore_class=2 with classes 0..2: the n/a examples are counted by the label contract (nobody's
    count), so class 2 is in no shot group, in shot_groups.json and in the group metrics."""
    import json

    import pandas as pd
    from mlflow.tracking import MlflowClient

    from xentlab.cli.train import run

    rng = np.random.default_rng(0)
    y = rng.permutation(np.repeat([0, 1, 2], [200, 40, 15]))  # class 2 marks n/a: 15 would make a few-shot class
    frame = pd.DataFrame(rng.normal(size=(len(y), 4)) + np.eye(3, 4)[y], columns=list("abcd"))
    frame["y"] = y
    frame.to_csv(tmp_path / "na_inside.csv", index=False)
    run(compose([*TINY, "data.limit=null", f"tracking.uri={store}", "data=csv", f"data.path={tmp_path}/na_inside.csv",
                 "data.label=y", "model=mlp", "labels.ignore_class=2"]))
    (logged,) = runs_of(store)
    assert logged.info.status == "FINISHED", logged.data.tags.get("xentlab.error")
    shots = json.loads(open(MlflowClient(store).download_artifacts(logged.info.run_id, "shot_groups.json")).read())
    assert shots["class_counts"][2] == 0 and shots["class_counts"][0] > 100 and 20 <= shots["class_counts"][1] <= 100
    assert {g: v["classes"] for g, v in shots["groups"].items()} == {"many": [0], "medium": [1], "few": []}
    assert not any(name.startswith(("few_shot", "val_few_shot", "test_few_shot")) for name in logged.data.metrics)


def test_a_balanced_split_logs_no_shot_groups_nor_posthoc_and_a_short_summary(store, capsys):
    """300 digits (about 30 a class, one "medium" group): no shot-group metrics, no post-hoc metrics (the tag
    says why), no shot_groups.json, and the end-of-run line names a handful of metrics."""
    from xentlab.cli.train import run

    run(compose([*TINY, "data.limit=300", f"tracking.uri={store}", "model=mlp"]))
    (logged,) = runs_of(store)
    assert logged.info.status == "FINISHED", logged.data.tags.get("xentlab.error")
    assert not [name for name in logged.data.metrics if "shot" in name or "posthoc" in name]
    assert "training split is balanced" in logged.data.tags["xentlab.posthoc"]
    assert "shot_groups.json" not in _artifacts(store, logged.info.run_id)
    (line,) = [ln for ln in capsys.readouterr().out.splitlines() if " FINISHED " in ln]
    assert line.count("=") <= 5 and "test_accuracy=" in line, line
    assert "test_loss" in logged.data.metrics  # everything else is still logged
    assert "at chance" not in logged.data.tags.get("xentlab.warning", "")  # a model that learned is not warned of


def test_shot_groups_need_two_groups_and_posthoc_an_imbalanced_split():
    from xentlab.core.posthoc import balanced_reason
    from xentlab.data.long_tail import IMBALANCE_RATIO, is_imbalanced, shot_groups

    assert shot_groups([31, 25, 38, 0]) is None  # one "medium" group: nothing a group adds
    assert not is_imbalanced([31, 25, 38]) and balanced_reason([31, 25, 38]) is not None
    assert is_imbalanced([150, 30])  # two groups
    many = [int(IMBALANCE_RATIO * 101) + 1, 101]  # both many-shot, one group, but a large ratio
    assert is_imbalanced(many) and balanced_reason(many) is None and shot_groups(many) is None

"""Stratified k-fold cross-validation (data.folds, data.fold): folds that partition the pool, the test split held
out once, deterministic from data.split_seed, and clear errors before training."""

from __future__ import annotations

import numpy as np
import pytest

from xentlab.data import DataError, load_data
from xentlab.data.folds import apply_folds

COMMON = {"val_fraction": 0.15, "test_fraction": 0.15, "split_seed": 0}


def test_folds_partition_the_pool_stratified_and_keep_the_test_split():
    plain = load_data("digits", **COMMON)
    pool = np.concatenate([plain.x_train, plain.x_val]).reshape(len(plain.x_train) + len(plain.x_val), -1)
    seen = []
    for i in range(5):
        b = load_data("digits", folds=5, fold=i, **COMMON)
        np.testing.assert_array_equal(b.x_test, plain.x_test)  # held out once, the same for every fold
        np.testing.assert_array_equal(b.y_test, plain.y_test)
        assert len(b.x_train) + len(b.x_val) == len(pool)
        val_counts, pool_counts = np.bincount(b.y_val, minlength=10), np.bincount(
            np.concatenate([plain.y_train, plain.y_val]), minlength=10)
        assert np.all(np.abs(val_counts - pool_counts / 5) <= 1)  # stratified: each class split 1 : 4
        seen.append({row.tobytes() for row in b.x_val.reshape(len(b.x_val), -1)})
        assert b.meta["folds"] == 5 and b.meta["fold"] == i
    assert sum(len(s) for s in seen) == len(set().union(*seen))  # the validation folds are disjoint ...
    again = load_data("digits", folds=5, fold=2, **COMMON)
    np.testing.assert_array_equal(again.y_val, load_data("digits", folds=5, fold=2, **COMMON).y_val)
    other = load_data("digits", folds=5, fold=2, **{**COMMON, "split_seed": 1})
    assert not np.array_equal(other.x_val, again.x_val)  # ... and drawn by data.split_seed


def test_folds_come_before_the_limit_and_the_long_tail():
    b = load_data("digits", folds=4, fold=1, limit=300, long_tail_ratio=5.0, **COMMON)
    assert len(b.x_train) < 300 and b.meta["fold"] == 1
    assert len(b.x_val) == pytest.approx((1797 - len(b.x_test)) / 4, abs=5)  # the whole fold validates
    assert b.meta["long_tail_ratio"] == 5.0  # the shot groups come later, from the label contract


@pytest.mark.parametrize(("folds", "fold", "message"), [
    (1, 0, r"data.folds must be an integer >= 2 .* e.g. data.folds=5"),
    (5, 5, r"data.fold must be in 0..4 for data.folds=5, got 5; sweep all of them with data.fold=range\(0,5\)"),
    (3, -1, r"data.fold must be in 0..2"),
    (None, 2, r"data.fold=2 needs data.folds=K"),
])
def test_bad_folds_fail_before_loading(folds, fold, message):
    with pytest.raises(DataError, match=message):
        load_data("no_such_source", folds=folds, fold=fold, **COMMON)  # checked before the source is looked up


def test_classes_with_fewer_examples_than_folds_and_sequence_labels_are_refused(text_file):
    from xentlab.data import DataBundle

    y = np.array([0] * 10 + [1] * 10 + [2] * 3)
    b = DataBundle("toy", np.zeros((20, 2)), y[:20], np.zeros((3, 2)), y[20:], np.zeros((4, 2)), np.zeros(4, int),
                   num_classes=3, class_names=["cat", "dog", "eel"])
    with pytest.raises(DataError, match=r"data.folds=5 needs at least 5 examples of every class .* \{'eel': 3\}"):
        apply_folds(b, 5, 0)
    with pytest.raises(DataError, match=r"data.folds needs one class label per example .* data.folds=null"):
        load_data("text", path=str(text_file), val_fraction=0.1, test_fraction=0.1, seq_len=20, stride=20, folds=3)

"""The tf.data pipeline: labels in the contract's encoding, per-element weights 0 where the contract masks, the
weighted mean of weight_sum, and the per-epoch shuffle."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf

from xentlab.core.pipeline import element_weights, encode_labels, features_dataset, make_dataset, steps_per_epoch
from xentlab.core.targets import LabelContract, valid_mask_np, valid_mask_tf
from xentlab.errors import ConfigError

X = np.arange(20, dtype=np.float32).reshape(10, 2)
Y = np.array([0, 1, 2, -1, 1, 0, -1, 2, 2, 1])


def test_the_one_hot_view_is_made_per_batch_and_masks_what_the_ids_mask():
    ids = tf.constant(Y)
    view = encode_labels(ids, encoding="one_hot", num_classes=3).numpy()
    assert view.shape == (10, 3) and view[Y == -1].sum() == 0 and (view.argmax(-1)[Y >= 0] == Y[Y >= 0]).all()
    assert encode_labels(ids, encoding="sparse", num_classes=3) is ids
    mask = valid_mask_tf(view, encoding="one_hot", ignore_class=-1).numpy()
    np.testing.assert_array_equal(mask, valid_mask_np(Y, -1))
    with pytest.raises(ConfigError, match=r"labels.encoding must be one of \['sparse', 'one_hot'\], got 'onehot'"):
        encode_labels(ids, encoding="onehot", num_classes=3)


def test_weight_sum_normalisation_makes_a_weighted_mean():
    y = tf.constant([[0, 1, 1], [1, 2, 2]])
    table = np.array([2.0, 1.0, 0.5], np.float32)
    w = element_weights(y, class_weights=table, ignore_class=2, normalize="weight_sum").numpy()
    valid = np.array([[1, 1, 1], [1, 0, 0]])
    assert w[valid == 0].tolist() == [0.0, 0.0]
    assert w.sum() == pytest.approx(valid.sum())  # sum(w * loss) / count == sum(w * loss) / sum(w)
    assert w[0, 0] / w[0, 1] == pytest.approx(2.0)
    plain = element_weights(y, class_weights=table, ignore_class=None, normalize="element").numpy()
    np.testing.assert_allclose(plain, table[y.numpy()])
    assert element_weights(y, class_weights=None, ignore_class=2) is None  # the losses mask by themselves
    with pytest.raises(ConfigError, match="weighting.normalize must be one of"):
        element_weights(y, class_weights=table, ignore_class=None, normalize="mean")


def test_a_dataset_delivers_the_contracts_encoding_and_zero_weight_at_masked_positions():
    labels = LabelContract(3, encoding="one_hot", ignore_class=-1)
    weights = np.array([1.0, 2.0, 4.0], np.float32)
    batches = list(make_dataset(X, Y, labels=labels, batch_size=4, class_weights=weights))
    assert [len(b[0]) for b in batches] == [4, 4, 2] and steps_per_epoch(10, 4, drop_remainder=False) == 3
    x, y, w = (np.concatenate([b[i].numpy() for b in batches]) for i in range(3))
    np.testing.assert_array_equal(x, X)
    assert y.shape == (10, 3) and y[Y == -1].sum() == 0
    np.testing.assert_allclose(w, np.where(Y == -1, 0.0, weights[np.clip(Y, 0, 2)]))
    unweighted = next(iter(make_dataset(X, Y, labels=LabelContract(3, ignore_class=-1), batch_size=10)))
    assert len(unweighted) == 2 and unweighted[1].numpy().tolist() == Y.tolist()


def test_the_per_epoch_shuffle_is_a_permutation_keyed_by_seed_and_epoch():
    labels = LabelContract(3, ignore_class=-1)
    two_epochs = [b[0].numpy()[:, 0] for b in make_dataset(X, Y, labels=labels, batch_size=5, shuffle=True, seed=7,
                                                          epochs=(0, 2))]
    assert len(two_epochs) == 2 * steps_per_epoch(10, 5, drop_remainder=False)
    first, second = np.concatenate(two_epochs[:2]), np.concatenate(two_epochs[2:])
    assert sorted(first) == sorted(second) == sorted(X[:, 0]) and first.tolist() != second.tolist()
    resumed = [b[0].numpy()[:, 0] for b in make_dataset(X, Y, labels=labels, batch_size=5, shuffle=True, seed=7,
                                                        epochs=(1, 2))]
    np.testing.assert_array_equal(np.concatenate(resumed), second)  # epoch 1 alike, resumed or not
    assert steps_per_epoch(10, 4, drop_remainder=True) == 2


def test_in_memory_batches_run_without_tf_data_autotuning_and_streamed_ones_keep_it():
    # tf.data's tuning thread kept a finished fit waiting up to 2.4 s while its iterator was destroyed; in-memory
    # batches gain nothing from it. A streamed source's decode map still has its parallelism tuned.
    labels = LabelContract(3, ignore_class=-1)
    in_memory = make_dataset(X, Y, labels=labels, batch_size=5, shuffle=True, seed=7, epochs=(0, 2))
    assert in_memory.options().autotune.enabled is False
    assert make_dataset(X, Y, labels=labels, batch_size=5).options().autotune.enabled is False
    streamed = make_dataset(X, Y, labels=labels, batch_size=5, decode=lambda xb: xb * 2.0)
    assert streamed.options().autotune.enabled is not False
    np.testing.assert_array_equal(np.concatenate([b[0].numpy() for b in streamed]), X * 2.0)
    bundle = SimpleNamespace(x_test=X, decode=None)
    assert features_dataset(bundle, "test", 4).options().autotune.enabled is False
    np.testing.assert_array_equal(np.concatenate([b.numpy() for b in features_dataset(bundle, "test", 4)]), X)

"""The label contract: one rule for "is this position labelled?", the same in numpy and TensorFlow, for integer ids
and their one-hot view, stated in one module only."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from xentlab.core.targets import LabelContract, labelled_rows, valid_mask_np, valid_mask_tf
from xentlab.errors import ConfigError, ConfigTypeError, ExpectedError, LabelError

K = 4
SRC = Path(__file__).resolve().parents[1] / "src" / "xentlab"


def ids_with(ignore: int, shape=(6, 5), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, K, size=shape)
    y.flat[::4] = ignore
    return y


@pytest.mark.parametrize("ignore", [-1, 0, 2, K + 5])
def test_ids_and_their_one_hot_view_are_masked_alike_in_both_backends(ignore):
    y = ids_with(ignore)
    expected = y != ignore
    np.testing.assert_array_equal(valid_mask_np(y, ignore), expected)
    np.testing.assert_array_equal(valid_mask_tf(y, encoding="sparse", ignore_class=ignore).numpy(), expected)
    # tf.one_hot: an id in [0, K) a hot row, an id outside an all-zero row; both views give the same mask.
    one_hot = tf.one_hot(y, K)
    np.testing.assert_array_equal(valid_mask_tf(one_hot, encoding="one_hot", ignore_class=ignore).numpy(), expected)
    # 0/1 labels as floats (the binary loss's y_true after Keras casts it) follow the same rule.
    floats = y.astype("float32")
    np.testing.assert_array_equal(valid_mask_tf(floats, encoding="sparse", ignore_class=ignore).numpy(), expected)


def test_without_an_ignore_class_every_position_is_labelled_at_no_cost():
    y = ids_with(1)
    assert valid_mask_np(y, None).all() and valid_mask_np(y, None).shape == y.shape
    assert valid_mask_tf(y, encoding="sparse", ignore_class=None) is None  # callers skip the masking ops
    assert valid_mask_tf(tf.one_hot(y, K), encoding="one_hot", ignore_class=None) is None


def test_one_hot_rows_smoothed_before_they_arrive_and_a_class_count_known_only_at_run_time():
    y = ids_with(2)
    smoothed = tf.one_hot(y, K) * 0.8 + 0.2 / K  # the hot entry stays above 0.5
    np.testing.assert_array_equal(valid_mask_tf(smoothed, encoding="one_hot", ignore_class=2).numpy(), y != 2)

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32)])
    def dynamic(rows):
        return valid_mask_tf(rows, encoding="one_hot", ignore_class=2)

    rows = tf.one_hot(y.reshape(-1), K)
    np.testing.assert_array_equal(dynamic(rows).numpy(), y.reshape(-1) != 2)


def test_labelled_rows_drop_the_masked_positions_and_refuse_outputs_that_do_not_fit():
    y = ids_with(-1, shape=(3, 4))
    rows = np.arange(3 * 4 * K, dtype=float).reshape(3, 4, K)
    kept_y, kept_rows = labelled_rows(y, rows, -1)
    keep = y != -1
    np.testing.assert_array_equal(kept_y, y[keep])
    np.testing.assert_array_equal(kept_rows, rows[keep])
    with pytest.raises(LabelError, match=r"labels of shape \(3, 4\) do not fit outputs of shape \(3, 4, 4, 4\)"):
        labelled_rows(y, np.eye(K)[rows.astype(int) % K], -1)  # a one-hot view passed as labels' outputs


def test_the_contract_is_built_from_checked_labels_and_is_frozen():
    heads = LabelContract.from_labels(np.zeros((10, 3), int), num_classes=6, encoding="one_hot", ignore_class=-1,
                                      from_logits=True, separate_heads=True)
    assert heads == LabelContract(6, "one_hot", -1, (3,), True, 3)
    sequence = LabelContract.from_labels(np.zeros((10, 7), int), num_classes=6, encoding="sparse", ignore_class=None,
                                         from_logits=False)
    assert sequence.label_shape == (7,) and sequence.num_heads is None
    assert LabelContract(np.int64(3), ignore_class=np.int32(-1)).ignore_class == -1  # numpy ints from the data
    with pytest.raises(AttributeError):
        heads.ignore_class = 0  # built once; nothing downstream changes it


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"num_classes": 1}, ConfigError, "at least 2 classes; received num_classes=1"),
        ({"num_classes": True}, ConfigTypeError, "num_classes must be an integer"),
        ({"num_classes": 3, "encoding": "onehot"}, ConfigError, r"labels.encoding must be one of \['sparse', 'one_hot"),
        ({"num_classes": 3, "ignore_class": 1.5}, ConfigTypeError, "labels.ignore_class must be an integer"),
        ({"num_classes": 3, "from_logits": "yes"}, ConfigTypeError, "from_logits must be True or False"),
        ({"num_classes": 3, "label_shape": (2,), "num_heads": 3}, LabelError, r"3 separate heads need labels of shape"),
    ],
)
def test_a_contract_that_cannot_hold_is_refused_as_the_users_error(kwargs, error, message):
    with pytest.raises(error, match=message) as raised:
        LabelContract(**kwargs)
    assert isinstance(raised.value, ExpectedError)


def test_the_rule_is_stated_in_one_module():
    """No other module compares labels with the ignore class or defines a mask of its own."""
    compares = re.compile(r"(!=|==)\s*ignore_class\b|\bignore_class\s*(!=|==)|not_equal\([^)]*ignore_class")
    offenders = []
    for path in SRC.rglob("*.py"):
        if path.name == "targets.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if compares.search(line) or re.search(r"def \w*valid_mask", line):
                offenders.append(f"{path.relative_to(SRC)}:{number}: {line.strip()}")
    assert not offenders, "re-derives the label mask instead of calling xentlab.core.targets:\n" + "\n".join(offenders)
    defined = re.findall(r"^def (valid_mask\w*)", (SRC / "core" / "targets.py").read_text(), re.M)
    assert defined == ["valid_mask_np", "valid_mask_tf"]



def test_sample_weights_meet_the_labels_one_way_in_the_loss_the_metrics_and_the_multi_worker_loss():
    from xentlab.core.losses import CrossEntropy
    from xentlab.core.metrics import SparseNLL
    from xentlab.runtime.multi_worker import loss_parts

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 3, 5)).astype(np.float32)  # sequences: (N, T, K)
    y = rng.integers(0, 5, size=(4, 3))
    w = np.array([0.0, 1.0, 2.0, 0.5], np.float32)
    loss = CrossEntropy(from_logits=True)

    def metric(weights):
        nll = SparseNLL(from_logits=True)
        nll.update_state(y, logits, sample_weight=weights)
        return float(nll.result())

    def multi_worker(weights):
        numerator, count = loss_parts(loss, y, logits, weights)
        return float(numerator / count)

    for weighted in (lambda weights: float(loss(y, logits, sample_weight=weights)), metric, multi_worker):
        per_position = weighted(np.repeat(w[:, None], 3, 1))
        for per_example in (w, w[:, None]):  # (N,) and (N, 1) weigh each of an example's positions alike
            np.testing.assert_allclose(weighted(per_example), per_position, rtol=1e-6)
        with pytest.raises(LabelError, match="sample_weight must broadcast to the per-element loss shape"):
            weighted(np.ones((4, 3, 2)))

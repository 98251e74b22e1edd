"""Every metric from integer (or one-hot) labels against numpy or scikit-learn on the same predictions."""

from __future__ import annotations

import math
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, recall_score, roc_auc_score

from xentlab.core.metric_set import build_metrics
from xentlab.core.metrics import (
    SparseAccuracy,
    SparseAUC,
    SparseBrier,
    SparseConfusion,
    SparseConfusionStatistics,
    SparseECE,
    SparseNLL,
)
from xentlab.core.targets import LabelContract
from xentlab.metric_table import CLASSIFICATION, task_metrics

# A classifier's metrics per position (the table's, without the shot groups) and the loss.
CONTRACT_METRICS = ("loss", *(m.name for m in task_metrics(CLASSIFICATION) if m.computed != "shot"))

SHAPES = {"N": (300,), "NT": (30, 10), "NH": (100, 3)}


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def make(shape, k, peaked, rng):
    """Labels and logits that carry signal; `peaked` scales logits until softmax saturates (p ~ 1e-30)."""
    y = rng.integers(0, k, size=shape)
    logits = rng.normal(size=(*shape, k)) * peaked
    np.put_along_axis(logits, y[..., None], np.take_along_axis(logits, y[..., None], -1) + peaked, -1)
    return y, logits.astype(np.float32)


def sk_auc(y, probs, weights=None):
    """scikit-learn's one-vs-rest macro AUC (positive-class AUC for 2 classes) over the positions kept."""
    y, probs = y.reshape(-1), probs.reshape(len(y.reshape(-1)), -1)
    if weights is not None:
        weights = weights.reshape(-1)
    if probs.shape[-1] == 2:
        return roc_auc_score(y, probs[:, 1], sample_weight=weights)
    if len(np.unique(y)) == probs.shape[-1]:
        return roc_auc_score(y, probs, multi_class="ovr", average="macro", sample_weight=weights)
    # A class with no positives (e.g. the masked n/a class) has no AUC: average over the others, per class.
    present = [c for c in range(probs.shape[-1]) if 0 < (y == c).sum() < len(y)]
    return np.mean([roc_auc_score(y == c, probs[:, c], sample_weight=weights) for c in present])


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("k", [2, 3, 10])
@pytest.mark.parametrize("peaked", [1.0, 12.0])
@pytest.mark.parametrize("from_logits", [True, False])
def test_auc_and_accuracy_match_sklearn(shape, k, peaked, from_logits):
    rng = np.random.default_rng(k * 100 + int(peaked))
    y, logits = make(SHAPES[shape], k, peaked, rng)
    probs = softmax(logits.astype(np.float64))
    pred = logits if from_logits else softmax(logits).astype(np.float32)
    auc = SparseAUC(k, from_logits=from_logits)
    acc = SparseAccuracy(from_logits=from_logits)
    for m in (auc, acc):
        m.update_state(y, pred)
    assert float(auc.result()) == pytest.approx(sk_auc(y, probs), abs=1e-3)
    assert float(acc.result()) == pytest.approx(accuracy_score(y.reshape(-1), probs.argmax(-1).reshape(-1)), abs=1e-6)


@pytest.mark.parametrize("ignore", [0, -1])
@pytest.mark.parametrize("shape", SHAPES)
def test_masked_positions_and_sample_weights_are_left_out(ignore, shape):
    rng = np.random.default_rng(4)
    k = 4
    y, logits = make(SHAPES[shape], k, 2.0, rng)
    y.flat[::5] = ignore
    w = rng.uniform(0.5, 2.0, size=y.shape).astype(np.float32)
    keep = y != ignore
    probs = softmax(logits.astype(np.float64))
    for encoding in ("sparse", "one_hot"):
        labels = y if encoding == "sparse" else tf.one_hot(y, k).numpy()
        auc = SparseAUC(k, encoding=encoding, from_logits=True, ignore_class=ignore)
        acc = SparseAccuracy(encoding=encoding, from_logits=True, ignore_class=ignore)
        for m in (auc, acc):
            m.update_state(labels, logits, sample_weight=w)
        assert float(auc.result()) == pytest.approx(sk_auc(y[keep], probs[keep], w[keep]), abs=1e-3)
        expected = accuracy_score(y[keep], probs[keep].argmax(-1), sample_weight=w[keep])
        assert float(acc.result()) == pytest.approx(expected, abs=1e-5)
        # Keras' own sparse accuracy counts the n/a positions (as wrong or right by chance): not ours.
        if ignore == 0 and encoding == "sparse":
            keras_acc = keras.metrics.SparseCategoricalAccuracy()
            keras_acc.update_state(y, logits, sample_weight=w)
            assert abs(float(keras_acc.result()) - expected) > 1e-3


def test_streaming_over_batches_equals_one_shot():
    rng = np.random.default_rng(1)
    y, logits = make((400,), 5, 3.0, rng)
    one, many = SparseAUC(5, from_logits=True), SparseAUC(5, from_logits=True)
    one.update_state(y, logits)
    for start in range(0, 400, 64):
        many.update_state(y[start : start + 64], logits[start : start + 64])
    assert float(many.result()) == pytest.approx(float(one.result()), abs=1e-7)
    many.reset_state()
    assert math.isnan(float(many.result()))  # nothing seen: undefined, not 0


def test_sigmoid1_and_softmax2_heads_give_the_same_auc():
    rng = np.random.default_rng(2)
    z = rng.normal(size=(200, 1)).astype(np.float32) * 3
    y = (rng.random(200) < 1 / (1 + np.exp(-z[:, 0]))).astype(int)
    two = np.concatenate([np.zeros_like(z), z], axis=1)  # softmax([0, z])[1] == sigmoid(z)
    results = []
    for pred, fl in ((z, True), (tf.sigmoid(z).numpy(), False), (two, True), (softmax(two), False)):
        m = SparseAUC(2, from_logits=fl)
        m.update_state(y, pred)
        results.append(float(m.result()))
    assert max(results) - min(results) < 1e-6
    assert results[0] == pytest.approx(roc_auc_score(y, z[:, 0]), abs=1e-3)


def test_keras_auc_on_integer_labels_is_wrong_where_ours_is_right():
    rng = np.random.default_rng(3)
    y, logits = make((300,), 4, 2.0, rng)
    probs = softmax(logits).astype(np.float32)
    theirs = keras.metrics.AUC()
    try:
        theirs.update_state(y, probs)  # labels (N,) against predictions (N, 4)
        keras_value = float(theirs.result())
    except Exception:  # some versions refuse outright
        keras_value = None
    ours = SparseAUC(4)
    ours.update_state(y, probs)
    reference = sk_auc(y, probs.astype(np.float64))
    assert float(ours.result()) == pytest.approx(reference, abs=1e-3)
    assert keras_value is None or abs(keras_value - reference) > 0.05


def test_classes_without_positives_are_left_out_of_the_mean():
    y = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.05, 0.05], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.4, 0.5, 0.1]], dtype=np.float32)
    m = SparseAUC(3)
    m.update_state(y, probs)
    expected = np.mean([roc_auc_score(y == 0, probs[:, 0]), roc_auc_score(y == 1, probs[:, 1])])
    assert float(m.result()) == pytest.approx(expected, abs=1e-3)


def test_inside_fit_and_evaluate_under_a_strategy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int) + 2 * (x[:, 1] > 0).astype(int)
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with strategy.scope():
        model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(4)])
        model.compile("adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=build_metrics(LabelContract(4, from_logits=True)))
    model.fit(x, y, epochs=2, batch_size=32, verbose=0)
    result = model.evaluate(x, y, batch_size=64, return_dict=True, verbose=0)
    assert set(result) == set(CONTRACT_METRICS)
    probs = softmax(model.predict(x, verbose=0).astype(np.float64))
    assert result["auc"] == pytest.approx(sk_auc(y, probs), abs=1e-3)
    assert result["accuracy"] == pytest.approx(accuracy_score(y, probs.argmax(-1)), abs=1e-6)
    assert result["ece"] == pytest.approx(ref_ece(y, probs), abs=1e-4)
    assert result["brier"] == pytest.approx(ref_brier(y, probs), abs=1e-4)
    assert result["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, probs.argmax(-1)), abs=1e-4)


def test_config_round_trip():
    m = SparseAUC(7, encoding="one_hot", from_logits=True, ignore_class=3, num_bins=100)
    again = SparseAUC.from_config(m.get_config())
    assert again.get_config() == m.get_config()


@pytest.mark.parametrize("from_logits", [True, False])
@pytest.mark.parametrize("shape", SHAPES)
def test_nll_is_the_plain_crossentropy_of_the_predictions(from_logits, shape):
    from sklearn.metrics import log_loss

    from xentlab.core.metrics import SparseNLL

    rng = np.random.default_rng(6)
    y, logits = make(SHAPES[shape], 4, 2.0, rng)
    y.flat[::7] = 3
    probs = softmax(logits.astype(np.float64))
    m = SparseNLL(from_logits=from_logits, ignore_class=3)
    m.update_state(y, logits if from_logits else probs.astype(np.float32))
    keep = y != 3
    expected = log_loss(y[keep], probs[keep], labels=[0, 1, 2, 3])
    assert float(m.result()) == pytest.approx(expected, abs=1e-5)


def test_nll_for_one_sigmoid_unit():
    from sklearn.metrics import log_loss

    from xentlab.core.metrics import SparseNLL

    rng = np.random.default_rng(8)
    z = rng.normal(size=(50, 1)).astype(np.float32)
    y = rng.integers(0, 2, 50)
    m = SparseNLL(from_logits=True)
    m.update_state(y, z)
    assert float(m.result()) == pytest.approx(log_loss(y, 1 / (1 + np.exp(-z[:, 0].astype(np.float64)))), abs=1e-5)


# ---------------------------------------------------------------------------------------------- calibration, imbalance
NEW = ("ece", "brier", "balanced_accuracy", "macro_f1", "worst_class_recall")


def ref_ece(y, probs, weights=None, num_bins=15):
    """Top-label ECE in float64 with Guo et al.'s right-closed bins ((b-1)/B, b/B], written out bin by bin."""
    y, probs = y.reshape(-1), probs.reshape(y.size, -1)
    w = np.ones(len(y)) if weights is None else weights.reshape(-1).astype(np.float64)
    conf, correct = probs.max(-1), (probs.argmax(-1) == y).astype(np.float64)
    total = 0.0
    for b in range(num_bins):
        lo, hi = b / num_bins, (b + 1) / num_bins
        inside = (conf > lo) & (conf <= hi) if b else (conf <= hi)
        if w[inside].sum() > 0:
            acc = np.average(correct[inside], weights=w[inside])
            mean_conf = np.average(conf[inside], weights=w[inside])
            total += w[inside].sum() / w.sum() * abs(acc - mean_conf)
    return total


def ref_brier(y, probs, weights=None):
    y, probs = y.reshape(-1), probs.reshape(y.size, -1)
    per = ((probs - np.eye(probs.shape[-1])[y]) ** 2).sum(-1)
    return np.average(per, weights=None if weights is None else weights.reshape(-1))


def references(y, probs, weights=None):
    """Every new metric from numpy / scikit-learn on the kept positions (float64)."""
    y, probs = y.reshape(-1), probs.reshape(y.size, -1)
    w = None if weights is None else weights.reshape(-1)
    pred = probs.argmax(-1)
    present = np.unique(y)
    with warnings.catch_warnings():  # "y_pred contains classes not in y_true": such classes are the point
        warnings.simplefilter("ignore", UserWarning)
        balanced = balanced_accuracy_score(y, pred, sample_weight=w)
    return {
        "ece": ref_ece(y, probs, w),
        "brier": ref_brier(y, probs, w),
        "balanced_accuracy": balanced,
        "macro_f1": f1_score(y, pred, average="macro", sample_weight=w, zero_division=0),
        "worst_class_recall": recall_score(y, pred, labels=present, average=None, sample_weight=w).min(),
    }


def new_metrics(k, **kwargs):
    return {m.name: m for m in build_metrics(LabelContract(k, **kwargs)) if m.name in (*NEW, "confusion")}


def results(metrics):
    """Every value of `metrics` by the name Keras logs it under (the confusion statistics' dict flattened)."""
    out = {}
    for name, m in metrics.items():
        value = m.result()
        out.update({k: float(v) for k, v in value.items()} if isinstance(value, dict) else {name: float(value)})
    return out


@pytest.mark.parametrize("variant", ["plain", "one_hot_ignore_inside_weighted", "sparse_ignore_outside_weighted"])
@pytest.mark.parametrize("from_logits", [True, False])
@pytest.mark.parametrize("shape", SHAPES)
def test_calibration_and_imbalance_metrics_match_numpy_and_sklearn(variant, from_logits, shape):
    rng = np.random.default_rng(len(shape) * 10 + from_logits)
    k = 5
    y, logits = make(SHAPES[shape], k, 1.5, rng)
    y[y == 4] = rng.integers(0, 4, size=(y == 4).sum())  # class 4 rare (only predicted): a macro-F1 corner
    y.flat[:3] = 4
    ignore, encoding, w = None, "sparse", None
    if variant != "plain":
        ignore = 0 if "inside" in variant else -1
        encoding = "one_hot" if "one_hot" in variant else "sparse"
        y.flat[::6] = ignore
        w = rng.uniform(0.2, 3.0, size=y.shape).astype(np.float32)
    probs = softmax(logits.astype(np.float64))
    metrics = new_metrics(k, encoding=encoding, from_logits=from_logits, ignore_class=ignore)
    labels = tf.one_hot(y, k).numpy() if encoding == "one_hot" else y
    for m in metrics.values():
        m.update_state(labels, logits if from_logits else probs.astype(np.float32), sample_weight=w)
    keep = np.ones(y.shape, bool) if ignore is None else y != ignore
    expected = references(y[keep], probs[keep], None if w is None else w[keep])
    assert results(metrics) == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("weights", ["none", "per_example", "per_head"])
def test_multi_head_metrics_score_every_head_and_each_head(weights):
    rng = np.random.default_rng(11)
    k, heads = 4, 3
    y, logits = make((120, heads), k, 1.0, rng)
    w = {"none": None, "per_example": rng.uniform(0.5, 2, size=(120,)).astype(np.float32),
         "per_head": rng.uniform(0.5, 2, size=(120, heads)).astype(np.float32)}[weights]
    probs = softmax(logits.astype(np.float64))
    contract = LabelContract(k, from_logits=True, label_shape=(heads,), num_heads=heads)
    metrics = {m.name: m for m in build_metrics(contract)}
    for m in metrics.values():
        m.update_state(y, logits, sample_weight=w)
    got = results(metrics)
    assert {f"{name}_head{h}" for name in (*NEW, "accuracy", "auc", "nll") for h in range(heads)} <= set(got)
    assert set(CONTRACT_METRICS) - {"loss"} <= set(got)
    w_full = None if w is None else np.broadcast_to(w.reshape(120, -1), y.shape)
    assert {n: got[n] for n in NEW} == pytest.approx(references(y, probs, w_full), abs=1e-4)
    for h in range(heads):
        expected = references(y[:, h], probs[:, h], None if w_full is None else w_full[:, h])
        assert {n: got[f"{n}_head{h}"] for n in NEW} == pytest.approx(expected, abs=1e-4)
    # The heads differ, so a per-head metric that silently scored every head would fail above.
    assert len({round(got[f"ece_head{h}"], 6) for h in range(heads)}) == heads


@pytest.mark.parametrize("from_logits", [True, False])
def test_one_sigmoid_unit_is_the_two_classes_one_minus_p_and_p(from_logits):
    rng = np.random.default_rng(12)
    z = (rng.normal(size=(300, 1)) * 2).astype(np.float32)
    p = 1 / (1 + np.exp(-z[:, 0].astype(np.float64)))
    y = (rng.random(300) < p).astype(int)
    two = np.stack([1 - p, p], -1)
    one = new_metrics(2, from_logits=from_logits)
    for m in one.values():
        m.update_state(y, z if from_logits else p[:, None].astype(np.float32))
    assert results(one) == pytest.approx(references(y, two), abs=1e-4)
    from sklearn.metrics import brier_score_loss

    assert results(one)["brier"] == pytest.approx(2 * brier_score_loss(y, p), abs=1e-5)  # two classes, twice
    softmax2 = new_metrics(2, from_logits=True)
    for m in softmax2.values():
        m.update_state(y, np.concatenate([np.zeros_like(z), z], axis=1))  # softmax([0, z])[1] == sigmoid(z)
    assert results(softmax2) == pytest.approx(results(one), abs=1e-5)


def test_streaming_over_batches_equals_one_batch():
    rng = np.random.default_rng(13)
    y, logits = make((500,), 6, 1.0, rng)
    w = rng.uniform(0.5, 2.0, size=500).astype(np.float32)
    one, many = new_metrics(6, from_logits=True), new_metrics(6, from_logits=True)
    for m in one.values():
        m.update_state(y, logits, sample_weight=w)
    for start in (0, 7, 100, 101, 333):  # uneven batches, some missing classes
        stop = {0: 7, 7: 100, 100: 101, 101: 333, 333: 500}[start]
        for m in many.values():
            m.update_state(y[start:stop], logits[start:stop], sample_weight=w[start:stop])
    assert results(many) == pytest.approx(results(one), abs=1e-6)
    assert results(one) == pytest.approx(references(y, softmax(logits.astype(np.float64)), w), abs=1e-4)
    for m in many.values():
        m.reset_state()
    after = results(many)  # nothing seen: sums are 0, statistics of the confusion matrix undefined (NaN)
    assert {k: v for k, v in after.items() if k in ("ece", "brier")} == {"ece": 0.0, "brier": 0.0}
    assert all(math.isnan(v) for k, v in after.items() if k not in ("ece", "brier"))


def test_ece_known_values():
    # Every confidence 0.8 and 60% correct: one bin, ECE = |0.6 - 0.8| = 0.2.
    y = np.array([0] * 6 + [1] * 4)
    probs = np.tile([0.8, 0.1, 0.1], (10, 1)).astype(np.float32)
    m = SparseECE()
    m.update_state(y, probs)
    assert float(m.result()) == pytest.approx(0.2, abs=1e-6)
    # Two bins: half at 0.9 all right (gap 0.1), half at 0.6 with 30% right (gap 0.3): 0.5*0.1 + 0.5*0.3 = 0.2.
    # One global bin would say |0.65 - 0.75| = 0.1: the binning is what is tested.
    y = np.array([0] * 10 + [0] * 3 + [1] * 7)
    probs = np.array([[0.9, 0.1]] * 10 + [[0.6, 0.4]] * 10, dtype=np.float32)
    m = SparseECE()
    m.update_state(y, probs)
    assert float(m.result()) == pytest.approx(0.2, abs=1e-6)
    # A perfectly confident, always right model is perfectly calibrated.
    m = SparseECE()
    m.update_state(np.array([0, 1, 2]), np.eye(3, dtype=np.float32))
    assert float(m.result()) == pytest.approx(0.0, abs=1e-7)


def test_brier_and_confusion_statistics_known_values():
    brier = SparseBrier()
    brier.update_state(np.array([0]), np.array([[0.7, 0.2, 0.1]], dtype=np.float32))
    assert float(brier.result()) == pytest.approx(0.09 + 0.04 + 0.01, abs=1e-6)
    # Labels {0, 1}; predictions also hit class 2, never labelled: recall 0: 2/3, 1: 1/2.
    y = np.array([0, 0, 0, 1, 1])
    pred = np.array([0, 0, 2, 1, 2])
    outputs = np.eye(3, dtype=np.float32)[pred]
    got = {s: SparseConfusion(3, statistic=s) for s in ("balanced_accuracy", "macro_f1", "worst_class_recall")}
    for m in got.values():
        m.update_state(y, outputs)
    assert float(got["balanced_accuracy"].result()) == pytest.approx((2 / 3 + 1 / 2) / 2, abs=1e-6)
    assert float(got["worst_class_recall"].result()) == pytest.approx(0.5, abs=1e-6)
    # F1: class 0 = 2*2/(4+0+1) = 0.8, class 1 = 2*1/(2+0+1) = 2/3, class 2 (only predicted) = 0: mean over 3.
    assert float(got["macro_f1"].result()) == pytest.approx((0.8 + 2 / 3 + 0) / 3, abs=1e-6)
    assert float(got["macro_f1"].result()) == pytest.approx(f1_score(y, pred, average="macro", zero_division=0))
    present = np.union1d(y, pred)
    assert float(got["macro_f1"].result()) == pytest.approx(
        f1_score(y, pred, labels=present, average="macro", zero_division=0), abs=1e-6)


def test_new_metrics_inside_fit_with_one_hot_labels_and_a_mask():
    """Under model.fit/evaluate (graph mode, batches of 32), one-hot labels with an in-range n/a class."""
    rng = np.random.default_rng(14)
    x = rng.normal(size=(200, 5)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0.5).astype(int)
    y[::9] = 3
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(4, activation="softmax")])
    model.compile("adam", loss="categorical_crossentropy",
                  metrics=build_metrics(LabelContract(4, encoding="one_hot", from_logits=False, ignore_class=3)))
    onehot = np.eye(4, dtype=np.float32)[y]
    model.fit(x, onehot, epochs=1, batch_size=32, verbose=0)
    result = model.evaluate(x, onehot, batch_size=32, return_dict=True, verbose=0)
    keep = y != 3
    probs = model.predict(x, verbose=0).astype(np.float64)
    expected = references(y[keep], probs[keep])
    assert {n: result[n] for n in NEW} == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("metric", [
    SparseECE(encoding="one_hot", from_logits=True, ignore_class=2, head=1, num_bins=10, name="e"),
    SparseBrier(from_logits=True, ignore_class=-1, name="b"),
    SparseNLL(head=0, name="n"),
    SparseConfusion(7, statistic="macro_f1", encoding="one_hot", ignore_class=0, head=2, name="f"),
    SparseConfusionStatistics(7, statistics=("macro_f1", "worst_class_recall"), suffix="_head2", head=2),
], ids=lambda m: type(m).__name__)
def test_new_metrics_config_round_trip_and_are_registered(metric):
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(metric))
    assert type(again) is type(metric)
    assert again.get_config() == metric.get_config()
    assert keras.saving.get_registered_object(f"xentlab>{type(metric).__name__}") is type(metric)


def test_confusion_refuses_an_unknown_statistic_and_a_wrong_class_count():
    with pytest.raises(ValueError, match="statistic must be one of"):
        SparseConfusion(3, statistic="micro_f1")
    m = SparseConfusion(3, statistic="macro_f1")
    with pytest.raises(ValueError, match="num_classes=3"):
        m.update_state(np.array([0, 1]), np.zeros((2, 4), np.float32))


# ------------------------------------------------------------------------------------------ the metric table
def test_every_layer_reads_names_and_directions_from_the_one_table():
    from xentlab import metric_table
    from xentlab.core import calibration, posthoc
    from xentlab.report import columns, headline, statistics

    assert columns.COLUMNS == metric_table.report_columns()
    assert columns.LOSS_COLUMNS == ("val_loss", "best_val_loss", "test_loss")  # the losses on their own scales
    for name in ("val_nll", "best_val_loss", "test_ece_calibrated", "test_balanced_accuracy_posthoc", "auc_head2",
                 "test_bpc", "test_perplexity"):
        assert statistics.direction(name) == metric_table.BY_NAME[metric_table.base_name(name)].direction
    assert statistics.direction("macro_f1") == "max" and statistics.direction("samples_per_s") is None
    assert set(posthoc.POSTHOC_METRICS) == {m.name for m in metric_table.METRICS if m.posthoc}
    assert set(calibration.CALIBRATED) == set(metric_table.calibrated_names())
    from xentlab.cli import console
    from xentlab.report import charts, compare

    assert compare.primary_metric([]) == metric_table.PRIMARY["classification"] == "val_nll"
    assert charts.curve_metric("test_perplexity") == metric_table.PRIMARY["language_model"] == "val_bpc"

    assert console.HEADLINE == metric_table.summary_metrics() == (
        "test_accuracy", "test_balanced_accuracy", "test_auc", "test_nll", "test_bpc", "test_ece", "test_perplexity")
    report = columns.Report("s", "p", "base", [], [], "", metric="val_bpc")
    assert headline.headline_metrics(report) == [("val_bpc", "primary")]  # nothing else ranked: only the primary
    assert metric_table.headline_metrics(metric_table.task_of_metric("val_bpc")) == [("test_bpc", "held-out text")]
    assert [m for m, _ in metric_table.headline_metrics(metric_table.task_of_metric("val_nll"))] == [
        "test_ece", "test_balanced_accuracy", "test_worst_class_recall"]


def test_the_sweep_objective_is_val_nll_else_val_loss():
    from xentlab.metric_table import objective

    assert objective({"val_loss": 2.0, "val_nll": 1.5}) == 1.5
    assert objective({"val_loss": 2.0}) == 2.0
    assert math.isnan(objective({"loss": 1.0}))


def test_a_metric_added_as_one_row_is_built_logged_ranked_and_reported(monkeypatch):
    """A new row (here a second name for the accuracy computation) reaches the metric set, the report's columns,
    the direction the report ranks by and the names metrics.extra takes, with no other edit."""
    from xentlab import metric_table
    from xentlab.core.metric_set import build_run_metrics
    from xentlab.metric_table import LANGUAGE_MODEL, Metric

    row = Metric("hit_rate", "max", "accuracy")
    monkeypatch.setattr(metric_table, "METRICS", (*metric_table.METRICS, row))
    monkeypatch.setattr(metric_table, "BY_NAME", {**metric_table.BY_NAME, row.name: row})
    contract = LabelContract(3)
    assert "hit_rate" in {m.name for m in build_run_metrics(contract)}
    assert "hit_rate" not in {m.name for m in build_run_metrics(contract, task=LANGUAGE_MODEL)}
    assert "hit_rate" in {m.name for m in build_run_metrics(contract, task=LANGUAGE_MODEL, extra=["hit_rate"])}
    assert ("val_hit_rate", "val_hit_rate", "validation") in metric_table.report_columns()
    assert metric_table.direction("test_hit_rate_posthoc") == "max"


# ------------------------------------------------------------------------------------------ undefined, unique names
def test_undefined_metrics_are_nan_where_scikit_learn_refuses_or_has_nothing():
    y = np.zeros(6, dtype=int)  # a split of one class
    logits = np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32)
    from sklearn.exceptions import UndefinedMetricWarning

    with pytest.warns(UndefinedMetricWarning, match="not defined"):  # scikit-learn: NaN for one class
        assert math.isnan(roc_auc_score(y, logits[:, 1]))
    auc = SparseAUC(3, from_logits=True)
    auc.update_state(y, logits)
    assert math.isnan(float(auc.result()))
    confusion = SparseConfusion(3, statistic="balanced_accuracy", from_logits=True, ignore_class=-1)
    confusion.update_state(np.full(6, -1), logits)  # every position n/a: nothing to score
    assert math.isnan(float(confusion.result()))
    confusion.update_state(y, logits)  # one class is enough for a balanced accuracy
    assert float(confusion.result()) == pytest.approx(balanced_accuracy_score(y, logits.argmax(-1)))


def test_only_metrics_a_split_can_leave_undefined_are_held_back():
    from xentlab.metric_table import split_undefined, undefined_note

    kept, undefined = split_undefined({"val_auc": math.nan, "val_loss": math.nan, "val_nll": 1.0,
                                       "test_recall_a_b_1": math.nan, "test_few_shot_accuracy": math.nan,
                                       "auc_head1": math.nan, "val_accuracy": 0.5})
    assert set(kept) == {"val_loss", "val_nll", "val_accuracy"}  # a NaN loss is a diverged run: logged as it is
    assert set(undefined) == {"val_auc", "test_recall_a_b_1", "test_few_shot_accuracy", "auc_head1"}
    note = undefined_note(undefined)
    assert "val_auc, auc_head1 (no class has both positive and negative labels" in note
    assert "test_recall_a_b_1 (the class is absent from the split)" in note
    from xentlab.cli.console import headline

    assert headline({"test_accuracy": 0.5, "test_auc": math.nan}) == {"test_accuracy": 0.5}  # the end-of-run line


def test_class_metric_names_are_unique_and_valid_for_mlflow():
    from mlflow.utils.validation import _validate_metric_name

    from xentlab.metric_table import class_metric_names

    names = ["a,b", "a;b", "a b", "n/a", 'say "hi"', "it's", "季節", "季節?", "/", "x:y"]
    parts = class_metric_names(names)
    assert len(set(parts)) == len(names)
    assert parts[:2] == ["a_b_0", "a_b_1"] and parts[2] == "a b" and parts[6] == "季節"
    for part in parts:
        _validate_metric_name(f"test_recall_{part}")  # raises on a name MLflow refuses
    assert class_metric_names(["cat", "dog"]) == ["cat", "dog"]  # nothing to change: names as they are
    with_id = class_metric_names(["a,b", "a;b", "a_b_1"])  # a suffixed name meets a class's own: every id added
    assert len(set(with_id)) == 3 and with_id[2] == "a_b_1_2"


def test_a_run_logs_no_undefined_metric_says_why_once_and_keeps_every_class_recall(tmp_path, store, capfd):
    """Through the real training: a validation split of one class (val_auc undefined every epoch), a class absent
    from test (its recall undefined), and class names that differ only in punctuation (`a,b`, `a;b`) or are CJK."""
    import json

    from mlflow.tracking import MlflowClient

    from conftest import TINY, compose
    from xentlab.cli.train import run

    rng = np.random.default_rng(0)
    names = np.array(["a,b", "a;b", "n/a", "季節"])

    def split(labels):
        y = np.asarray(labels)
        return rng.normal(size=(len(y), 4)).astype("float32") + 2 * np.eye(4, dtype="float32")[y], names[y]

    x_tr, y_tr = split(np.arange(160) % 4)
    x_va, y_va = split(np.zeros(24, dtype=int))  # one class
    x_te, y_te = split(np.arange(48) % 3)  # 季節 absent
    np.savez(tmp_path / "d.npz", x_train=x_tr, y_train=y_tr, x_val=x_va, y_val=y_va, x_test=x_te, y_test=y_te)
    run(compose([*TINY, "trainer.epochs=2", "data.limit=null", "tracking.log_plots=true", f"tracking.uri={store}",
                 "data=npz", f"data.path={tmp_path / 'd.npz'}", "model=mlp"]))
    client = MlflowClient(store)
    (logged,) = client.search_runs([client.get_experiment_by_name("xentlab").experiment_id])
    metrics = logged.data.metrics
    assert logged.info.status == "FINISHED"
    assert "auc" in metrics and "val_auc" not in metrics and "val_balanced_accuracy" in metrics
    assert not [v for v in metrics.values() if isinstance(v, float) and math.isnan(v)]
    per_class = json.loads(open(client.download_artifacts(logged.info.run_id, "evaluation/per_class.json",
                                                          str(tmp_path))).read())["all"]
    assert metrics["test_recall_a_b_0"] == pytest.approx(per_class["a,b"]["recall"])
    assert metrics["test_recall_a_b_1"] == pytest.approx(per_class["a;b"]["recall"])
    assert "test_recall_n_a" in metrics and "test_recall_季節" not in metrics
    tag = logged.data.tags["xentlab.undefined_metrics"]
    assert "val_auc" in tag and "test_recall_季節 (the class is absent from the split)" in tag
    printed = capfd.readouterr()
    notes = [line for line in printed.err.splitlines() if "not logged, undefined" in line]
    assert sum("val_auc" in line for line in notes) == 1  # two epochs, said once
    assert "nan" not in printed.out.split("FINISHED", 1)[1].split("\n")[0]  # the end-of-run line


def test_the_confusion_statistics_share_one_matrix_updated_once_per_batch():
    """One metric, one K x K state, every statistic of it equal to its own single-statistic metric; under fit the
    statistics are logged by name, as separate metrics were."""
    rng = np.random.default_rng(4)
    y, logits = make((300,), 5, 2.0, rng)
    shared = SparseConfusionStatistics(5, statistics=("balanced_accuracy", "macro_f1", "worst_class_recall"),
                                       from_logits=True)
    alone = {s: SparseConfusion(5, statistic=s, from_logits=True) for s in shared.statistics}
    for m in (shared, *alone.values()):
        m.update_state(y, logits)
    assert len(shared.variables) == 1 and shared.variables[0].shape == (5, 5)
    assert results({"confusion": shared}) == pytest.approx(results(alone), abs=1e-7)
    pred = logits.argmax(-1)
    assert results({"confusion": shared})["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"), abs=1e-6)
    built = build_metrics(LabelContract(5, from_logits=True))
    assert sum(isinstance(m, SparseConfusion) for m in built) == 1  # not one per statistic

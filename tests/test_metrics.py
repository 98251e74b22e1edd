"""Accuracy and AUC from integer labels against scikit-learn on the same predictions, for every output shape."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.metrics import accuracy_score, roc_auc_score

from xentlab.metrics import SparseAccuracy, SparseAUC, build_metrics

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
    assert float(many.result()) == 0.0


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
                      metrics=build_metrics(4, from_logits=True))
    model.fit(x, y, epochs=2, batch_size=32, verbose=0)
    result = model.evaluate(x, y, batch_size=64, return_dict=True, verbose=0)
    assert set(result) == {"loss", "accuracy", "auc", "nll"}
    probs = softmax(model.predict(x, verbose=0).astype(np.float64))
    assert result["auc"] == pytest.approx(sk_auc(y, probs), abs=1e-3)
    assert result["accuracy"] == pytest.approx(accuracy_score(y, probs.argmax(-1)), abs=1e-6)


def test_config_round_trip():
    m = SparseAUC(7, encoding="one_hot", from_logits=True, ignore_class=3, num_bins=100)
    again = SparseAUC.from_config(m.get_config())
    assert again.get_config() == m.get_config()


@pytest.mark.parametrize("from_logits", [True, False])
@pytest.mark.parametrize("shape", SHAPES)
def test_nll_is_the_plain_crossentropy_of_the_predictions(from_logits, shape):
    from sklearn.metrics import log_loss

    from xentlab.metrics import SparseNLL

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

    from xentlab.metrics import SparseNLL

    rng = np.random.default_rng(8)
    z = rng.normal(size=(50, 1)).astype(np.float32)
    y = rng.integers(0, 2, 50)
    m = SparseNLL(from_logits=True)
    m.update_state(y, z)
    assert float(m.result()) == pytest.approx(log_loss(y, 1 / (1 + np.exp(-z[:, 0].astype(np.float64)))), abs=1e-5)

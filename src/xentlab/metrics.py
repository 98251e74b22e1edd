"""Accuracy and AUC from integer (or one-hot) labels for every output shape, mask-aware, as streaming Keras metrics.

Keras' AUC needs one-hot labels (on integer labels it errors or reports nonsense) and Keras' sparse accuracy counts
ignored "n/a" labels as wrong; these metrics take the labels the pipeline has and skip masked positions.
"""

from __future__ import annotations

import keras
import tensorflow as tf

# Scores are binned on the log-odds scale, where a trained softmax's saturated outputs (p = 1e-6) still spread
# out; 4,000 bins over [-17, 17] (0.0085 log-odds wide; 17 > logit(1 - 1e-7) = 16.1) keep the AUC within
# 1e-3 of the exact value. Memory: 2 x classes x bins float32, 8 MB for the 256-byte vocabulary.
LOGIT_RANGE = 40.0
NUM_BINS = 8000


def _labels_and_valid(y_true, y_pred, encoding: str, ignore_class: int | None):
    """Flat integer labels (M,) and a validity mask (M,) over every output position."""
    if encoding == "one_hot":
        y_true = tf.cast(y_true, tf.float32)
        valid = tf.reduce_sum(y_true, axis=-1) > 0
        labels = tf.argmax(y_true, axis=-1, output_type=tf.int32)
    else:
        y_true = tf.convert_to_tensor(y_true)
        if y_true.shape.rank == y_pred.shape.rank:
            y_true = tf.squeeze(y_true, -1)
        labels = tf.cast(y_true, tf.int32)
        valid = tf.ones_like(labels, dtype=tf.bool)
    if ignore_class is not None:
        valid = tf.logical_and(valid, tf.not_equal(labels, ignore_class))
    return tf.reshape(labels, [-1]), tf.reshape(valid, [-1])


def _select_head(y_true, y_pred, sample_weight, head: int | None):
    """Restricts (N, heads, ...) labels, outputs and weights to one head; unchanged when head is None."""
    if head is None:
        return y_true, y_pred, sample_weight
    if sample_weight is not None and tf.convert_to_tensor(sample_weight).shape.rank >= 2:
        sample_weight = tf.convert_to_tensor(sample_weight)[:, head]
    return tf.convert_to_tensor(y_true)[:, head], tf.convert_to_tensor(y_pred)[:, head], sample_weight


def _weights(sample_weight, valid, y_pred):
    """Per-position weights (M,): the validity mask times sample_weight broadcast to the label shape."""
    w = tf.cast(valid, tf.float32)
    if sample_weight is None:
        return w
    sw = tf.cast(tf.convert_to_tensor(sample_weight), tf.float32)
    label_rank = y_pred.shape.rank - 1
    while sw.shape.rank > label_rank and sw.shape[-1] == 1:
        sw = tf.squeeze(sw, -1)
    while sw.shape.rank < label_rank:
        sw = sw[..., None]
    return w * tf.reshape(tf.broadcast_to(sw, tf.shape(y_pred)[:-1]), [-1])


def log_odds(y_pred, from_logits: bool):
    """Per-class log-odds (M, K') of the scores the AUC ranks: (M, 1) for binary heads, (M, K) otherwise.

    2-unit softmax: logit of p[:, 1] = x1 - x0 exactly; one sigmoid unit: the logit itself; K > 2 classes:
    log p_c - log(1 - p_c) from log_softmax, so saturated probabilities keep their order.
    """
    x = tf.cast(tf.reshape(y_pred, [-1, y_pred.shape[-1]]), tf.float32)
    k = y_pred.shape[-1]
    if k == 1:
        if from_logits:
            return x
        p = tf.clip_by_value(x, 1e-12, 1.0 - 1e-7)
        return tf.math.log(p) - tf.math.log1p(-p)
    if from_logits:
        log_p = tf.nn.log_softmax(x, axis=-1)
    else:
        log_p = tf.math.log(tf.clip_by_value(x / tf.reduce_sum(x, -1, keepdims=True), 1e-30, 1.0))
    if k == 2:
        return log_p[:, 1:2] - log_p[:, 0:1]
    return log_p - tf.math.log(-tf.math.expm1(tf.minimum(log_p, -1e-30)))


@keras.saving.register_keras_serializable(package="xentlab")
class SparseAUC(keras.metrics.Metric):
    """One-vs-rest macro AUC (positive-class AUC for 2 classes) from integer or one-hot labels.

    Classes without both positive and negative examples so far are left out of the mean (their AUC is
    undefined); with no such class at all the result is 0.
    """

    def __init__(self, num_classes, *, encoding="sparse", from_logits=False, ignore_class=None,
                 num_bins=NUM_BINS, head=None, name="auc", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes, self.encoding, self.from_logits = int(num_classes), encoding, from_logits
        self.head = head
        self.ignore_class, self.num_bins = ignore_class, int(num_bins)
        self.columns = 1 if self.num_classes == 2 else self.num_classes
        shape = (self.columns, self.num_bins)
        self.pos = self.add_variable(shape=shape, initializer="zeros", name="pos", aggregation="sum")
        self.neg = self.add_variable(shape=shape, initializer="zeros", name="neg", aggregation="sum")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true, y_pred, sample_weight = _select_head(y_true, y_pred, sample_weight, self.head)
        y_pred = tf.convert_to_tensor(y_pred)
        labels, valid = _labels_and_valid(y_true, y_pred, self.encoding, self.ignore_class)
        w = _weights(sample_weight, valid, y_pred)
        z = log_odds(y_pred, self.from_logits)  # (M, C)
        width = 2.0 * LOGIT_RANGE / self.num_bins
        bins = tf.cast(tf.floor((tf.clip_by_value(z, -LOGIT_RANGE, LOGIT_RANGE) + LOGIT_RANGE) / width), tf.int32)
        bins = tf.minimum(bins, self.num_bins - 1)
        if self.columns == 1:
            is_pos = tf.cast(tf.equal(labels, 1), tf.float32)[:, None]
        else:
            is_pos = tf.one_hot(labels, self.columns, dtype=tf.float32)
        flat = tf.reshape(bins + tf.range(self.columns)[None, :] * self.num_bins, [-1])
        size = self.columns * self.num_bins
        pos = tf.math.unsorted_segment_sum(tf.reshape(is_pos * w[:, None], [-1]), flat, size)
        neg = tf.math.unsorted_segment_sum(tf.reshape((1.0 - is_pos) * w[:, None], [-1]), flat, size)
        self.pos.assign_add(tf.reshape(pos, (self.columns, self.num_bins)))
        self.neg.assign_add(tf.reshape(neg, (self.columns, self.num_bins)))

    def result(self):
        pos, neg = tf.convert_to_tensor(self.pos), tf.convert_to_tensor(self.neg)
        neg_below = tf.cumsum(neg, axis=1, exclusive=True)
        wins = tf.reduce_sum(pos * (neg_below + 0.5 * neg), axis=1)
        n_pos, n_neg = tf.reduce_sum(pos, 1), tf.reduce_sum(neg, 1)
        defined = tf.logical_and(n_pos > 0, n_neg > 0)
        auc = tf.math.divide_no_nan(wins, n_pos * n_neg)
        count = tf.reduce_sum(tf.cast(defined, tf.float32))
        return tf.math.divide_no_nan(tf.reduce_sum(tf.where(defined, auc, 0.0)), count)

    def reset_state(self):
        self.pos.assign(tf.zeros_like(self.pos))
        self.neg.assign(tf.zeros_like(self.neg))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "encoding": self.encoding,
                "from_logits": self.from_logits, "ignore_class": self.ignore_class, "num_bins": self.num_bins,
                "head": self.head}


@keras.saving.register_keras_serializable(package="xentlab")
class SparseAccuracy(keras.metrics.Metric):
    """Share of unmasked positions whose arg-max (or, for one sigmoid unit, p > 0.5) is the label."""

    def __init__(self, *, encoding="sparse", from_logits=False, ignore_class=None, head=None, name="accuracy",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self.encoding, self.from_logits, self.ignore_class, self.head = encoding, from_logits, ignore_class, head
        self.correct = self.add_variable(shape=(), initializer="zeros", name="correct", aggregation="sum")
        self.total = self.add_variable(shape=(), initializer="zeros", name="total", aggregation="sum")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true, y_pred, sample_weight = _select_head(y_true, y_pred, sample_weight, self.head)
        y_pred = tf.convert_to_tensor(y_pred)
        labels, valid = _labels_and_valid(y_true, y_pred, self.encoding, self.ignore_class)
        w = _weights(sample_weight, valid, y_pred)
        flat = tf.reshape(y_pred, [-1, y_pred.shape[-1]])
        if y_pred.shape[-1] == 1:
            predicted = tf.cast(flat[:, 0] > (0.0 if self.from_logits else 0.5), tf.int32)
        else:
            predicted = tf.argmax(flat, axis=-1, output_type=tf.int32)
        hit = tf.cast(tf.equal(predicted, labels), tf.float32)
        self.correct.assign_add(tf.reduce_sum(hit * w))
        self.total.assign_add(tf.reduce_sum(w))

    def result(self):
        return tf.math.divide_no_nan(self.correct, self.total)

    def reset_state(self):
        self.correct.assign(0.0)
        self.total.assign(0.0)

    def get_config(self):
        return {**super().get_config(), "encoding": self.encoding, "from_logits": self.from_logits,
                "ignore_class": self.ignore_class, "head": self.head}


@keras.saving.register_keras_serializable(package="xentlab")
class SparseNLL(keras.metrics.Metric):
    """Mean negative log-likelihood of the true class (nats), whatever loss trains the model.

    Focal, smoothed and weighted losses report values on their own scales; `nll` puts every variant on one
    scale (plain cross-entropy of the predicted probabilities), so a sweep can rank them fairly.
    Probabilities are clipped to [1e-7, 1] as Keras does.
    """

    def __init__(self, *, encoding="sparse", from_logits=False, ignore_class=None, name="nll", **kwargs):
        super().__init__(name=name, **kwargs)
        self.encoding, self.from_logits, self.ignore_class = encoding, from_logits, ignore_class
        self.total = self.add_variable(shape=(), initializer="zeros", name="total", aggregation="sum")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count", aggregation="sum")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = tf.convert_to_tensor(y_pred)
        labels, valid = _labels_and_valid(y_true, y_pred, self.encoding, self.ignore_class)
        w = _weights(sample_weight, valid, y_pred)
        x = tf.cast(tf.reshape(y_pred, [-1, y_pred.shape[-1]]), tf.float32)
        if y_pred.shape[-1] == 1:  # one sigmoid unit: the two classes are [1 - p, p]
            z = x[:, 0] if self.from_logits else tf.math.log(tf.clip_by_value(x[:, 0], 1e-7, 1 - 1e-7)) - tf.math.log1p(
                -tf.clip_by_value(x[:, 0], 1e-7, 1 - 1e-7))
            nll = tf.nn.sigmoid_cross_entropy_with_logits(tf.cast(tf.equal(labels, 1), tf.float32), z)
        else:
            log_p = tf.nn.log_softmax(x, -1) if self.from_logits else tf.math.log(
                tf.clip_by_value(x / tf.reduce_sum(x, -1, keepdims=True), 1e-7, 1.0))
            safe = tf.where(valid, labels, tf.zeros_like(labels))
            nll = -tf.gather(log_p, safe, batch_dims=1)
        self.total.assign_add(tf.reduce_sum(tf.where(w > 0, nll * w, 0.0)))
        self.count.assign_add(tf.reduce_sum(w))

    def result(self):
        return tf.math.divide_no_nan(self.total, self.count)

    def reset_state(self):
        self.total.assign(0.0)
        self.count.assign(0.0)

    def get_config(self):
        return {**super().get_config(), "encoding": self.encoding, "from_logits": self.from_logits,
                "ignore_class": self.ignore_class}


def build_metrics(num_classes, *, encoding="sparse", from_logits=False, ignore_class=None, num_heads=None):
    """[accuracy, auc, nll] over every position (the contract's names, the same for every label encoding),
    plus accuracy_head<h> and auc_head<h> for each head of a multi-head output (labels (N, heads))."""
    common = {"encoding": encoding, "from_logits": from_logits, "ignore_class": ignore_class}
    metrics = [SparseAccuracy(**common), SparseAUC(num_classes, **common), SparseNLL(**common)]
    for h in range(num_heads or 0):
        metrics += [SparseAccuracy(head=h, name=f"accuracy_head{h}", **common),
                    SparseAUC(num_classes, head=h, name=f"auc_head{h}", **common)]
    return metrics

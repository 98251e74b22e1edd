"""Classification metrics from integer (or one-hot) labels for every output shape, mask-aware, streaming in Keras.

Accuracy, AUC, NLL, calibration (ECE, Brier) and imbalance-aware scores (balanced accuracy, macro F1, worst-class
recall). Keras' AUC needs one-hot labels (on integer labels it errors or reports nonsense) and Keras' sparse
accuracy counts ignored "n/a" labels as wrong; these metrics take the labels the pipeline has and skip masked
positions. Every metric counts each labelled position of sequence (N, T, K) and multi-head (N, H, K) outputs, or
one head's positions with `head=h`; one sigmoid unit (K' = 1) is the two classes [1 - p, p]
(`xentlab.core.probabilities.class_outputs`, the one reading of every head form).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from xentlab.core.probabilities import (
    CALIBRATION_BINS,
    class_outputs,
    confidence_bins_tf,
    log_probabilities_tf,
    to_probabilities_tf,
)
from xentlab.core.targets import align_sample_weight, valid_mask_tf
from xentlab.errors import ConfigError, LabelError
from xentlab.metric_table import METRICS

# Scores are binned on the log-odds scale, where a trained softmax's saturated outputs (p = 1e-6) still spread
# out; 8,000 bins over [-40, 40] (0.01 log-odds wide; 40 > logit(1 - 1e-7) = 16.1, with room for logits) keep
# the AUC within 1e-3 of the exact value. Memory: 2 x classes x bins float32, 16 MB for the 256-byte vocabulary.
LOGIT_RANGE = 40.0
NUM_BINS = 8000

CONFUSION_STATISTICS = tuple(m.name for m in METRICS if m.computed == "confusion")  # rows of the metric table


def _labels_and_valid(y_true, y_pred, encoding: str, ignore_class: int | None):
    """Flat integer labels (M,) and a validity mask (M,) over every output position (`valid_mask_tf`'s rule)."""
    if encoding == "one_hot":
        y_true = tf.cast(y_true, tf.float32)
        labels = tf.argmax(y_true, axis=-1, output_type=tf.int32)
    else:
        y_true = tf.convert_to_tensor(y_true)
        if y_true.shape.rank == y_pred.shape.rank:
            y_true = tf.squeeze(y_true, -1)
        labels = tf.cast(y_true, tf.int32)
    valid = valid_mask_tf(y_true, encoding=encoding, ignore_class=ignore_class)
    if valid is None:
        valid = tf.ones_like(labels, dtype=tf.bool)
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
    sw = align_sample_weight(sample_weight, y_pred.shape.rank - 1)
    return w * tf.reshape(tf.broadcast_to(sw, tf.shape(y_pred)[:-1]), [-1])


def labelled_positions(y_true, y_pred, sample_weight, *, encoding: str, ignore_class: int | None,
                       head: int | None):
    """One head's outputs as a tensor, and per position (M,): the labels, whether labelled, and the weights."""
    y_true, y_pred, sample_weight = _select_head(y_true, y_pred, sample_weight, head)
    y_pred = tf.convert_to_tensor(y_pred)
    labels, valid = _labels_and_valid(y_true, y_pred, encoding, ignore_class)
    return y_pred, labels, valid, _weights(sample_weight, valid, y_pred)


def predicted_positions(metric, y_true, y_pred, sample_weight):
    """Per labelled position of `metric`'s head: (labels, valid, weights, predicted class), the class read from
    the outputs as accuracy reads it (arg-max; one sigmoid unit: above 0 for logits, 0.5 for probabilities)."""
    y_pred, labels, valid, w = labelled_positions(y_true, y_pred, sample_weight, encoding=metric.encoding,
                                                  ignore_class=metric.ignore_class, head=metric.head)
    scores = class_outputs(tf.reshape(y_pred, [-1, y_pred.shape[-1]]), metric.from_logits)
    return labels, valid, w, tf.argmax(scores, axis=-1, output_type=tf.int32)  # ties: the first class, as p > 0.5



def _positions(y_true, y_pred, sample_weight, *, encoding, ignore_class, head, from_logits):
    """What the probability-based metrics read: labels (M,), weights (M,) and probabilities (M, K) float32.

    Masked positions get weight 0 and label 0 (an in-range id, so one_hot and gather never see -1); one sigmoid
    unit becomes the two columns [1 - p, p].
    """
    y_pred, labels, valid, w = labelled_positions(y_true, y_pred, sample_weight, encoding=encoding,
                                                  ignore_class=ignore_class, head=head)
    probs = to_probabilities_tf(y_pred, from_logits)
    probs = tf.cast(tf.reshape(probs, [-1, probs.shape[-1]]), tf.float32)
    return tf.where(valid, labels, tf.zeros_like(labels)), w, probs


def log_odds(y_pred, from_logits: bool):
    """Per-class log-odds (M, K') of the scores the AUC ranks: (M, 1) for binary heads, (M, K) otherwise.

    Two classes (2 units, or one sigmoid unit read as [0, z]): log p1 - log p0, the logit itself; K > 2 classes:
    log p_c - log(1 - p_c) from log_softmax, so saturated probabilities keep their order.
    """
    x = tf.cast(tf.reshape(y_pred, [-1, y_pred.shape[-1]]), tf.float32)
    log_p = log_probabilities_tf(x, from_logits, eps=1e-30)  # 1e-30: saturated probabilities keep their order
    if log_p.shape[-1] == 2:
        return log_p[:, 1:2] - log_p[:, 0:1]
    return log_p - tf.math.log(-tf.math.expm1(tf.minimum(log_p, -1e-30)))


@keras.saving.register_keras_serializable(package="xentlab")
class SparseAUC(keras.metrics.Metric):
    """One-vs-rest macro AUC (positive-class AUC for 2 classes) from integer or one-hot labels.

    Classes without both positive and negative examples so far are left out of the mean (their AUC is
    undefined); with no such class at all (a split of one class) the AUC is undefined: NaN, never logged.
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
        y_pred, labels, valid, w = labelled_positions(y_true, y_pred, sample_weight, encoding=self.encoding,
                                                      ignore_class=self.ignore_class, head=self.head)
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
        return _or_nan(tf.math.divide_no_nan(tf.reduce_sum(tf.where(defined, auc, 0.0)), count), count > 0)

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
        labels, valid, w, predicted = predicted_positions(self, y_true, y_pred, sample_weight)
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


class _PositionMetric(keras.metrics.Metric):
    """Base of the metrics below: the arguments every one takes and returns in get_config().

    Args:
        encoding: ``"sparse"`` (integer class ids) or ``"one_hot"`` (the one-hot view of them).
        from_logits: Whether outputs are logits (True) or probabilities (False).
        ignore_class: The "n/a" label; its positions are left out.
        head: For multi-head outputs (N, H, K): score head h only; None scores every position of every head.
        name: The metric name (what Keras and MLflow log).
    """

    def __init__(self, *, encoding="sparse", from_logits=False, ignore_class=None, head=None, name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        self.encoding, self.from_logits, self.ignore_class, self.head = encoding, from_logits, ignore_class, head

    def _positions(self, y_true, y_pred, sample_weight):
        return _positions(y_true, y_pred, sample_weight, encoding=self.encoding, ignore_class=self.ignore_class,
                          head=self.head, from_logits=self.from_logits)

    def reset_state(self):
        for v in self.variables:  # host zeros: one eager op per variable (Keras resets at every epoch start)
            v.assign(np.zeros(v.shape, dtype=v.dtype))

    def get_config(self):
        return {**super().get_config(), "encoding": self.encoding, "from_logits": self.from_logits,
                "ignore_class": self.ignore_class, "head": self.head}


class _WeightedMean(_PositionMetric):
    """Base of the metrics that are a mean over labelled positions, sum(w * value) / sum(w)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.total = self.add_variable(shape=(), initializer="zeros", name="total", aggregation="sum")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count", aggregation="sum")

    def _add(self, values, w):
        self.total.assign_add(tf.reduce_sum(tf.where(w > 0, values * w, 0.0)))  # masked rows may hold inf/NaN
        self.count.assign_add(tf.reduce_sum(w))

    def result(self):
        return tf.math.divide_no_nan(self.total, self.count)


@keras.saving.register_keras_serializable(package="xentlab")
class SparseNLL(_WeightedMean):
    """Mean negative log-likelihood of the true class (nats), whatever loss trains the model.

    Focal, smoothed and weighted losses report values on their own scales; `nll` puts every variant on one
    scale (plain cross-entropy of the predicted probabilities), so a sweep can rank them fairly.
    From probabilities they are clipped to [1e-7, 1] as Keras does; from logits the value is exact.
    """

    def __init__(self, *, name="nll", **kwargs):
        super().__init__(name=name, **kwargs)

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred, labels, valid, w = labelled_positions(y_true, y_pred, sample_weight, encoding=self.encoding,
                                                      ignore_class=self.ignore_class, head=self.head)
        log_p = log_probabilities_tf(y_pred, self.from_logits)
        log_p = tf.cast(tf.reshape(log_p, [-1, log_p.shape[-1]]), tf.float32)
        self._add(-tf.gather(log_p, tf.where(valid, labels, tf.zeros_like(labels)), batch_dims=1), w)


@keras.saving.register_keras_serializable(package="xentlab")
class SparseECE(_PositionMetric):
    """Top-label expected calibration error (Guo et al. 2017): sum_b (n_b / N) |acc_b - conf_b|.

    Each position's confidence is its largest class probability and it is correct when that class is the label;
    positions fall into `num_bins` equal-width bins over [0, 1], right-closed ((b/B, (b+1)/B], see
    `xentlab.core.probabilities.confidence_bins`). The state is per bin: the (weighted) count of positions, of correct
    ones and the sum of confidences, so ECE = sum_b |correct_b - confidence_b| / sum_b count_b streams exactly.
    In [0, 1]; 0 is perfectly calibrated. `plots.reliability_table` draws the same bins.

    Args:
        num_bins: Equal-width confidence bins (15, as in Guo et al.).
        **kwargs: encoding, from_logits, ignore_class, head, name (see `_PositionMetric`).
    """

    def __init__(self, *, num_bins=CALIBRATION_BINS, name="ece", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_bins = int(num_bins)
        shape = (self._cells(),)
        self.count = self.add_variable(shape=shape, initializer="zeros", name="count", aggregation="sum")
        self.correct = self.add_variable(shape=shape, initializer="zeros", name="correct", aggregation="sum")
        self.confidence = self.add_variable(shape=shape, initializer="zeros", name="confidence", aggregation="sum")

    def _cells(self) -> int:
        """How many bins the state holds (the adaptive ECE keeps a finer histogram)."""
        return self.num_bins

    def _bins(self, confidence):
        return confidence_bins_tf(confidence, self.num_bins)

    def update_state(self, y_true, y_pred, sample_weight=None):
        labels, w, probs = self._positions(y_true, y_pred, sample_weight)
        confidence = tf.where(w > 0, tf.reduce_max(probs, axis=-1), 0.0)  # masked rows may hold NaN
        hit = tf.cast(tf.equal(tf.argmax(probs, axis=-1, output_type=tf.int32), labels), tf.float32)
        rows = tf.stack([w, w * hit, w * confidence], axis=-1)  # (M, 3): one scatter-add for the three sums
        per_bin = tf.math.unsorted_segment_sum(rows, self._bins(confidence), self._cells())
        count, correct, confidence_sum = tf.unstack(per_bin, axis=-1)
        self.count.assign_add(count)
        self.correct.assign_add(correct)
        self.confidence.assign_add(confidence_sum)

    def result(self):
        # Few ops on purpose: Keras also reads results eagerly at every epoch end, where each op costs ~50 us.
        gap = tf.reduce_sum(tf.abs(tf.convert_to_tensor(self.correct) - tf.convert_to_tensor(self.confidence)))
        return tf.math.divide_no_nan(gap, tf.reduce_sum(self.count))

    def get_config(self):
        return {**super().get_config(), "num_bins": self.num_bins}


@keras.saving.register_keras_serializable(package="xentlab")
class SparseBrier(_WeightedMean):
    """Multi-class Brier score: the mean over positions of sum_c (p_c - y_c)^2, y the one-hot label.

    In [0, 2]; 0 is a certain and right prediction. For one sigmoid unit (classes [1 - p, p]) it is
    2 (p - y)^2, twice scikit-learn's binary `brier_score_loss`, so a 2-unit softmax and a sigmoid unit with the
    same probabilities score the same.
    """

    def __init__(self, *, name="brier", **kwargs):
        super().__init__(name=name, **kwargs)

    def update_state(self, y_true, y_pred, sample_weight=None):
        labels, w, probs = self._positions(y_true, y_pred, sample_weight)
        self._add(tf.reduce_sum(tf.square(probs - tf.one_hot(labels, probs.shape[-1])), axis=-1), w)


@keras.saving.register_keras_serializable(package="xentlab")
class SparseConfusion(_PositionMetric):
    """A statistic of the streaming K x K confusion matrix (rows: labels, columns: arg-max predictions).

    The matrix holds summed sample weights, so weighted positions count as scikit-learn's `sample_weight`.
    A class is "in the labels" when its row total is > 0 and "in the predictions" when its column total is.
    Statistics (each equals scikit-learn on the unmasked positions):

    - ``"balanced_accuracy"``: mean recall over the classes in the labels seen so far
      (`balanced_accuracy_score`, which drops classes that are only predicted).
    - ``"macro_f1"``: mean F1 = 2 TP / (2 TP + FP + FN) over the classes in the labels or the predictions
      (`f1_score(average="macro")` with its default label set, the union of both). A class only predicted, or
      only labelled, has F1 0 and counts in the mean; classes in neither are left out (0/0, not a 0).
    - ``"worst_class_recall"``: the smallest recall over the classes in the labels (`recall_score(average=None)`
      restricted to them, then min): how the rarest or hardest class fares.

    Each is undefined (NaN, never logged) before any position is seen.

    Args:
        num_classes: K, the width of the output (2 for one sigmoid unit).
        statistic: One of `CONFUSION_STATISTICS`.
        **kwargs: encoding, from_logits, ignore_class, head, name (default: the statistic's name).

    Raises:
        ValueError: For an unknown statistic, or outputs whose class count is not num_classes.
    """

    def __init__(self, num_classes, *, statistic, name=None, **kwargs):
        if statistic not in CONFUSION_STATISTICS:
            raise ConfigError(f"statistic must be one of {CONFUSION_STATISTICS}; received statistic={statistic!r}.")
        super().__init__(name=name or statistic, **kwargs)
        self.num_classes, self.statistic = int(num_classes), statistic
        k = self.num_classes
        self.matrix = self.add_variable(shape=(k, k), initializer="zeros", name="matrix", aggregation="sum")

    def update_state(self, y_true, y_pred, sample_weight=None):
        labels, w, probs = self._positions(y_true, y_pred, sample_weight)
        k = self.num_classes
        if probs.shape[-1] != k:
            raise LabelError(
                f"{self.name}: outputs have {probs.shape[-1]} classes (one sigmoid unit counts as 2) but "
                f"num_classes={k}; build the metric with the data's class count."
            )
        predicted = tf.argmax(probs, axis=-1, output_type=tf.int32)
        # One scatter-add of M weights into K*K cells (~K^2 floats of state, 256 KB for a 256-class vocabulary).
        cells = tf.math.unsorted_segment_sum(w, labels * k + predicted, k * k)
        self.matrix.assign_add(tf.reshape(cells, (k, k)))

    def result(self):
        return _confusion_statistic(tf.convert_to_tensor(self.matrix), self.statistic)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "statistic": self.statistic}


@keras.saving.register_keras_serializable(package="xentlab")
class SparseConfusionStatistics(SparseConfusion):
    """Several statistics of one streaming confusion matrix, updated once per batch: one K x K scatter-add and one
    state for all of them, where a metric each would repeat both. `result()` is a dict, {`<statistic><suffix>`:
    value}, which Keras logs under each key (`balanced_accuracy`, `macro_f1_head0`, ...).

    Args:
        num_classes: K, the width of the output (2 for one sigmoid unit).
        statistics: Some of `CONFUSION_STATISTICS` (see `SparseConfusion` for each).
        suffix: Appended to every statistic's name (`_head<h>` for one head of a multi-head model).
        **kwargs: encoding, from_logits, ignore_class, head, name (default "confusion").
    """

    def __init__(self, num_classes, *, statistics, suffix="", name="confusion", statistic=None, **kwargs):
        statistics = tuple(statistics)
        unknown = [s for s in statistics if s not in CONFUSION_STATISTICS]
        if not statistics or unknown:
            raise ConfigError(f"statistics must be some of {CONFUSION_STATISTICS}; received {list(statistics)}.")
        super().__init__(num_classes, statistic=statistics[0], name=name, **kwargs)
        self.statistics, self.suffix = statistics, suffix

    def result(self):
        matrix = tf.convert_to_tensor(self.matrix)
        return {f"{s}{self.suffix}": _confusion_statistic(matrix, s) for s in self.statistics}

    def get_config(self):
        config = {**super().get_config(), "statistics": list(self.statistics), "suffix": self.suffix}
        config.pop("statistic")
        return config


def _confusion_statistic(matrix, statistic: str):
    """`SparseConfusion`'s statistic of a K x K matrix (rows labels, columns predictions).

    A per-class value is 0/0 -> 0 (divide_no_nan) exactly for the classes left out, so a mean over the kept
    classes is the plain sum divided by how many are kept: few ops, as Keras also reads results eagerly.
    """
    tp = tf.linalg.diag_part(matrix)
    labelled = tf.reduce_sum(matrix, axis=1)
    if statistic == "macro_f1":
        both = labelled + tf.reduce_sum(matrix, axis=0)  # 2TP + FP + FN, > 0 for a class labelled or predicted
        return _sum_over_kept(tf.math.divide_no_nan(2.0 * tp, both), both)
    recall = tf.math.divide_no_nan(tp, labelled)
    if statistic == "balanced_accuracy":
        return _sum_over_kept(recall, labelled)
    # worst_class_recall: classes not in the labels are lifted above every recall (1 + 1), NaN if none is left.
    worst = tf.reduce_min(recall + 2.0 * tf.cast(labelled <= 0, recall.dtype))
    return _or_nan(worst, worst <= 1.0)


def _sum_over_kept(values, totals):
    """sum(values) / number of classes with totals > 0 (values are 0 elsewhere); NaN when none is kept."""
    kept = tf.reduce_sum(tf.cast(totals > 0, values.dtype))
    return _or_nan(tf.math.divide_no_nan(tf.reduce_sum(values), kept), kept > 0)


def _or_nan(value, defined):
    """`value` where `defined`, else NaN: an undefined metric is not a bad value (the run logs nothing for it)."""
    return tf.where(defined, value, tf.constant(float("nan"), value.dtype))

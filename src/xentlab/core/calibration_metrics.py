"""Calibration beyond the top label, streaming in Keras: class-wise ECE and adaptive (equal-mass) ECE.

Top-label ECE with equal-width bins (`ece`) judges only the predicted class and, when confidences cluster near 1,
puts nearly every position in the last bin. Class-wise ECE (Kull et al. 2019) judges every class's probability;
adaptive ECE (Nguyen & O'Connor 2015, as in Mukhoti et al. 2020) gives every bin the same number of positions.
Both read labels, masks, heads and sample weights as every metric of `xentlab.core.metrics` does.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from xentlab.core.metrics import SparseECE, _PositionMetric
from xentlab.core.probabilities import (
    CALIBRATION_BINS,
    FINE_BINS,
    confidence_bins_tf,
    equal_mass_groups_tf,
    fine_confidence_bins_tf,
)


@keras.saving.register_keras_serializable(package="xentlab")
class SparseClasswiseECE(_PositionMetric):
    """Class-wise expected calibration error (Kull et al. 2019): the mean over classes of each class's ECE.

    classwise_ece = (1 / K) sum_c sum_b |sum_{i in B_cb} (y_ic - p_ic)| / N, where B_cb holds the positions whose
    probability of class c falls in equal-width bin b ((b/B, (b+1)/B], the rule of `ece`) and y_ic is 1 when
    position i is labelled c. The state is per class and bin: the (weighted) sums of y_ic and of p_ic, so it
    streams exactly. In [0, 1]; 0 is calibrated on every class. One sigmoid unit counts as the two classes
    [1 - p, p].

    Args:
        num_classes: K, the width of the output (2 for one sigmoid unit).
        num_bins: Equal-width probability bins per class (15, as `ece`).
        **kwargs: encoding, from_logits, ignore_class, head, name (see `_PositionMetric`).

    Raises:
        ValueError: For outputs whose class count is not num_classes.
    """

    def __init__(self, num_classes, *, num_bins=CALIBRATION_BINS, name="classwise_ece", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes, self.num_bins = int(num_classes), int(num_bins)
        shape = (self.num_classes * self.num_bins,)
        self.labelled = self.add_variable(shape=shape, initializer="zeros", name="labelled", aggregation="sum")
        self.probability = self.add_variable(shape=shape, initializer="zeros", name="probability",
                                             aggregation="sum")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count", aggregation="sum")

    def update_state(self, y_true, y_pred, sample_weight=None):
        labels, w, probs = self._positions(y_true, y_pred, sample_weight)
        k = self.num_classes
        if probs.shape[-1] != k:
            raise ValueError(f"{self.name}: outputs have {probs.shape[-1]} classes (one sigmoid unit counts as 2) "
                             f"but num_classes={k}; build the metric with the data's class count.")
        probs = tf.where(w[:, None] > 0, probs, 0.0)  # masked rows may hold NaN
        cells = confidence_bins_tf(probs, self.num_bins) + tf.range(k)[None, :] * self.num_bins  # (M, K)
        rows = tf.stack([tf.one_hot(labels, k) * w[:, None], probs * w[:, None]], axis=-1)  # (M, K, 2)
        sums = tf.math.unsorted_segment_sum(tf.reshape(rows, [-1, 2]), tf.reshape(cells, [-1]), k * self.num_bins)
        self.labelled.assign_add(sums[:, 0])
        self.probability.assign_add(sums[:, 1])
        self.count.assign_add(tf.reduce_sum(w))

    def result(self):
        gap = tf.reduce_sum(tf.abs(tf.convert_to_tensor(self.labelled) - tf.convert_to_tensor(self.probability)))
        return tf.math.divide_no_nan(gap, self.num_classes * tf.convert_to_tensor(self.count))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "num_bins": self.num_bins}


@keras.saving.register_keras_serializable(package="xentlab")
class SparseAdaptiveECE(SparseECE):
    """Adaptive (equal-mass) top-label ECE: sum_b |correct_b - confidence_b| / N over bins of equal mass.

    Exact equal-mass bins need every confidence sorted, which a streaming metric cannot keep. The state is a fine
    histogram of the top-label confidences instead (FINE_BINS bins 0.01 wide in log-odds, see
    `xentlab.core.probabilities`): per fine bin the (weighted) count of positions, of correct ones and the sum of
    confidences. At result time the fine bins are grouped into `num_bins` bins of equal mass
    (`equal_mass_groups`: each goes where the midpoint of its cumulative mass falls).

    The approximation: a fine bin that straddles an equal-mass edge is not split. Moving m positions from one bin
    to its neighbour changes two terms |correct_b - confidence_b| by at most m each, so the result differs from
    the sorted, exact equal-mass ECE (each position in the bin of its own cumulative-mass midpoint) by at most
    2 * (mass of the fine bins at the num_bins - 1 edges) / N, and is exact when no fine bin holds two positions
    around an edge. Positions tied at one confidence (a saturated softmax gives many 1.0) stay in one bin, where
    a sort would split them by their order. In [0, 1]; 0 is calibrated.

    Args:
        num_bins: Equal-mass bins (15, as `ece` and Mukhoti et al. 2020).
        **kwargs: encoding, from_logits, ignore_class, head, name (see `_PositionMetric`).
    """

    def __init__(self, *, num_bins=CALIBRATION_BINS, name="adaptive_ece", **kwargs):
        super().__init__(num_bins=num_bins, name=name, **kwargs)

    def _cells(self) -> int:
        return FINE_BINS

    def _bins(self, confidence):
        return fine_confidence_bins_tf(confidence)

    def result(self):
        count = tf.convert_to_tensor(self.count)
        gap = tf.convert_to_tensor(self.correct) - tf.convert_to_tensor(self.confidence)
        per_bin = tf.math.unsorted_segment_sum(gap, equal_mass_groups_tf(count, self.num_bins), self.num_bins)
        return tf.math.divide_no_nan(tf.reduce_sum(tf.abs(per_bin)), tf.reduce_sum(count))


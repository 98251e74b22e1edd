"""Many-, medium- and few-shot accuracy (Liu et al. 2019, Kang et al. 2020), streaming in Keras.

The classes are grouped by their training count (`xentlab.data.long_tail.shot_groups`); a group's accuracy is
the recall averaged over its classes, so a long-tail report can say where a gain comes from: the head classes,
the tail, or both. Labels, masks and sample weights are read as every metric of `xentlab.core.metrics` reads them.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from xentlab.core.metrics import _PositionMetric, predicted_positions

SHOT_GROUPS = ("many", "medium", "few")


@keras.saving.register_keras_serializable(package="xentlab")
class SparseGroupRecall(_PositionMetric):
    """Mean recall over the classes of a group that are in the labels seen so far (NaN, undefined, before any).

    Equals scikit-learn's `recall_score(average=None)` restricted to those classes, then averaged.

    Args:
        num_classes: K, the width of the output (2 for one sigmoid unit).
        classes: The class ids of the group.
        **kwargs: encoding, from_logits, ignore_class, head, name (see `_PositionMetric`).

    Raises:
        ValueError: For an empty group or a class id outside [0, num_classes).
    """

    def __init__(self, num_classes, *, classes: Sequence[int], name="group_recall", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes, self.classes = int(num_classes), [int(c) for c in classes]
        if not self.classes or min(self.classes) < 0 or max(self.classes) >= self.num_classes:
            raise ValueError(f"{name}: classes must be a non-empty list of class ids in [0, {self.num_classes}); "
                             f"received classes={list(classes)!r}.")
        member = np.zeros(self.num_classes, dtype="float32")
        member[self.classes] = 1.0
        self._member = tf.constant(member)
        shape = (self.num_classes,)
        self.correct = self.add_variable(shape=shape, initializer="zeros", name="correct", aggregation="sum")
        self.labelled = self.add_variable(shape=shape, initializer="zeros", name="labelled", aggregation="sum")

    def update_state(self, y_true, y_pred, sample_weight=None):
        # The arg-max of the outputs, as `SparseAccuracy` reads it: no probabilities needed, fewer ops per step.
        labels, valid, w, predicted = predicted_positions(self, y_true, y_pred, sample_weight)
        labels = tf.where(valid, labels, tf.zeros_like(labels))  # a masked id (-1) is no segment
        hit = tf.cast(tf.equal(predicted, labels), tf.float32)
        sums = tf.math.unsorted_segment_sum(tf.stack([w * hit, w], axis=-1), labels, self.num_classes)
        self.correct.assign_add(sums[:, 0])
        self.labelled.assign_add(sums[:, 1])

    def result(self):
        labelled = tf.convert_to_tensor(self.labelled) * self._member  # 0 outside the group
        recall = tf.math.divide_no_nan(tf.convert_to_tensor(self.correct) * self._member, labelled)
        present = tf.reduce_sum(tf.cast(labelled > 0, tf.float32))  # none: undefined (NaN, never logged)
        return tf.where(present > 0, tf.math.divide_no_nan(tf.reduce_sum(recall), present), float("nan"))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "classes": self.classes}

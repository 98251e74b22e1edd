"""Cross-entropy losses for every label encoding and label shape: pure functions plus thin Keras Loss classes.

Every function returns per-element losses (the label shape without the class axis) and works from plain Keras
code; `ignore_class` positions contribute exactly zero loss and zero gradient.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

ENCODINGS = ("sparse", "one_hot")
REDUCTIONS = ("sum_over_batch_size", "sum", "none")
LOSS_KINDS = ("crossentropy", "focal", "binary", "weighted_binary")


# ---------------------------------------------------------------------------------------------- helpers
def _epsilon() -> float:
    return keras.config.epsilon()  # 1e-7: Keras clips probabilities to [eps, 1 - eps]


def log_probabilities(y_pred, from_logits: bool):
    """log p over the class axis: log_softmax for logits (exact for any finite logit), else Keras' way:
    normalise to sum 1, clip to [1e-7, 1 - 1e-7] (capping a loss at -log(1e-7) ~= 16.118 and zeroing the
    gradient of a clipped probability), then log."""
    if from_logits:
        return ops.log_softmax(y_pred, axis=-1)
    eps = _epsilon()
    p = y_pred / ops.sum(y_pred, axis=-1, keepdims=True)
    return ops.log(ops.clip(p, eps, 1.0 - eps))


def _sparse_labels(y_true, y_pred):
    """Integer labels shaped like y_pred without its class axis ((N, 1) -> (N,) for (N, K) outputs)."""
    y_true = ops.convert_to_tensor(y_true)
    if len(y_true.shape) == len(y_pred.shape):
        y_true = ops.squeeze(y_true, axis=-1)
    return ops.cast(y_true, "int32")


def valid_mask(y_true, y_pred, *, encoding: str, ignore_class: int | None):
    """1.0 where a position counts, 0.0 at ignore_class positions; None when nothing is masked."""
    if ignore_class is None:
        return None
    if encoding == "sparse":
        return ops.cast(ops.not_equal(_sparse_labels(y_true, y_pred), ignore_class), y_pred.dtype)
    y_true = ops.cast(y_true, y_pred.dtype)
    valid = ops.sum(y_true, axis=-1) > 0  # tf.one_hot of an out-of-range id is an all-zero row
    k = y_pred.shape[-1]
    if 0 <= ignore_class < k:
        valid = ops.logical_and(valid, y_true[..., ignore_class] < 0.5)
    return ops.cast(valid, y_pred.dtype)


def _per_class_and_target(y_true, y_pred, encoding, label_smoothing, ignore_class):
    """(safe integer labels or one-hot targets, mask) with ignored labels replaced by class 0."""
    mask = valid_mask(y_true, y_pred, encoding=encoding, ignore_class=ignore_class)
    if encoding == "sparse":
        labels = _sparse_labels(y_true, y_pred)
        if mask is not None:
            labels = ops.where(mask > 0, labels, ops.zeros_like(labels))
        return labels, mask
    target = ops.cast(y_true, y_pred.dtype)
    if label_smoothing:
        k = ops.cast(y_pred.shape[-1], y_pred.dtype)
        target = target * (1.0 - label_smoothing) + label_smoothing / k
    return target, mask


def _reduce_classes(per_class, target_or_labels, encoding, label_smoothing):
    """sum_c t_c * per_class_c, with t the (smoothed) target; the sparse path never builds a one-hot."""
    if encoding == "one_hot":
        return ops.sum(target_or_labels * per_class, axis=-1)
    picked = ops.squeeze(ops.take_along_axis(per_class, ops.expand_dims(target_or_labels, -1), axis=-1), -1)
    if not label_smoothing:
        return picked
    return (1.0 - label_smoothing) * picked + label_smoothing * ops.mean(per_class, axis=-1)


def _apply_mask(losses, mask):
    # where() rather than a product: a non-finite value at an ignored position cannot reach the gradient.
    return losses if mask is None else ops.where(mask > 0, losses, ops.zeros_like(losses))


def _check_encoding(encoding: str) -> None:
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")


# ---------------------------------------------------------------------------------------------- functions
def crossentropy(y_true, y_pred, *, encoding="sparse", from_logits=False, label_smoothing=0.0, ignore_class=None):
    """Categorical cross-entropy per element, for integer (`sparse`) or `one_hot` labels.

    Label smoothing works for both encodings (target (1 - ls) * one_hot + ls / K). With from_logits=False the
    probabilities are clipped like Keras (see log_probabilities).
    """
    _check_encoding(encoding)
    y_pred = ops.convert_to_tensor(y_pred)
    target, mask = _per_class_and_target(y_true, y_pred, encoding, label_smoothing, ignore_class)
    nll = -log_probabilities(y_pred, from_logits)
    return _apply_mask(_reduce_classes(nll, target, encoding, label_smoothing), mask)


def focal_crossentropy(
    y_true, y_pred, *, encoding="sparse", gamma=2.0, alpha=None, from_logits=False, label_smoothing=0.0,
    ignore_class=None,
):
    """Focal cross-entropy per element: sum_c t_c * alpha_c * (1 - p_c)^gamma * -log p_c (Lin et al. 2017).

    alpha: None (1 for every class), a scalar, or one value per class. gamma=0 and alpha=None give crossentropy.
    """
    _check_encoding(encoding)
    y_pred = ops.convert_to_tensor(y_pred)
    target, mask = _per_class_and_target(y_true, y_pred, encoding, label_smoothing, ignore_class)
    log_p = log_probabilities(y_pred, from_logits)
    one_minus_p = -ops.expm1(log_p)  # 1 - p without cancellation when p is close to 1
    per_class = ops.power(ops.maximum(one_minus_p, 0.0), gamma) * -log_p
    if alpha is not None:
        per_class = per_class * ops.cast(ops.convert_to_tensor(alpha), y_pred.dtype)
    return _apply_mask(_reduce_classes(per_class, target, encoding, label_smoothing), mask)


def binary_crossentropy(y_true, y_pred, *, from_logits=False, label_smoothing=0.0, ignore_class=None):
    """Binary cross-entropy for one sigmoid unit: y_pred (..., 1), integer 0/1 labels (...) or (..., 1)."""
    y_pred = ops.convert_to_tensor(y_pred)
    labels = _sparse_labels(y_true, y_pred)
    mask = None if ignore_class is None else ops.cast(ops.not_equal(labels, ignore_class), y_pred.dtype)
    x = ops.squeeze(y_pred, axis=-1)
    y = ops.cast(ops.where(ops.equal(labels, 1), 1, 0), x.dtype)
    if label_smoothing:
        y = y * (1.0 - label_smoothing) + 0.5 * label_smoothing
    if from_logits:
        losses = ops.maximum(x, 0.0) - x * y + ops.log1p(ops.exp(-ops.abs(x)))
    else:
        eps = _epsilon()
        p = ops.clip(x, eps, 1.0 - eps)
        losses = -(y * ops.log(p) + (1.0 - y) * ops.log(1.0 - p))
    return _apply_mask(losses, mask)


def weighted_binary_crossentropy(y_true, y_pred, *, pos_weight=1.0, from_logits=True):
    """Multi-label sigmoid loss with a positive weight per label, averaged over the label axis.

    Same value as tf.nn.weighted_cross_entropy_with_logits: pos_weight * y * -log(sigmoid(x))
    + (1 - y) * -log(1 - sigmoid(x)).
    """
    y_pred = ops.convert_to_tensor(y_pred)
    y = ops.cast(y_true, y_pred.dtype)
    if from_logits:
        x = y_pred
    else:
        eps = _epsilon()
        p = ops.clip(y_pred, eps, 1.0 - eps)
        x = ops.log(p) - ops.log1p(-p)
    q = ops.cast(ops.convert_to_tensor(pos_weight), x.dtype)
    # log(1 + exp(-x)) computed stably as softplus(-x)
    softplus_neg = ops.log1p(ops.exp(-ops.abs(x))) + ops.maximum(-x, 0.0)
    losses = (1.0 - y) * x + (1.0 + (q - 1.0) * y) * softplus_neg
    return ops.mean(losses, axis=-1)


# ---------------------------------------------------------------------------------------------- classes
def _scale_for_replicas(value):
    """Divides a per-replica mean by the replica count, as Keras' own losses do under tf.distribute: the
    replicas' gradients are summed, so each replica must contribute 1/replicas of the mean."""
    import tensorflow as tf

    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return value if replicas == 1 else value * (1.0 / replicas)


class _MaskedLoss(keras.losses.Loss):
    """Reduction that counts only unmasked elements: sum(loss * w) / (number of unmasked elements).

    Keras' own reduction divides by every element, masked or not, unless the mask travels as a private tensor
    attribute; this class reduces itself and applies Keras' replica scaling.
    """

    def __init__(self, *, reduction="sum_over_batch_size", name=None, **kwargs):
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        super().__init__(name=name, reduction=reduction, **kwargs)

    def _mask(self, y_true, y_pred):
        return None

    def __call__(self, y_true, y_pred, sample_weight=None):
        y_pred = ops.convert_to_tensor(y_pred, dtype=self.dtype)
        losses = self.call(y_true, y_pred)
        mask = self._mask(y_true, y_pred)
        if sample_weight is not None:
            w = ops.cast(ops.convert_to_tensor(sample_weight), losses.dtype)
            while len(w.shape) < len(losses.shape):
                w = ops.expand_dims(w, -1)
            while len(w.shape) > len(losses.shape) and w.shape[-1] == 1:
                w = ops.squeeze(w, -1)
            losses = losses * w
        if self.reduction == "none":
            return losses
        total = ops.sum(losses)
        if self.reduction == "sum":
            return total
        count = ops.cast(ops.size(losses), losses.dtype) if mask is None else ops.sum(mask)
        return _scale_for_replicas(ops.divide_no_nan(total, count))

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "reduction": self.reduction}


@keras.saving.register_keras_serializable(package="xentlab")
class CrossEntropy(_MaskedLoss):
    """Cross-entropy for sparse or one-hot labels; see `crossentropy`."""

    def __init__(self, encoding="sparse", from_logits=False, label_smoothing=0.0, ignore_class=None,
                 reduction="sum_over_batch_size", name="crossentropy", **kwargs):
        _check_encoding(encoding)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        super().__init__(reduction=reduction, name=name, **kwargs)
        self.encoding, self.from_logits = encoding, from_logits
        self.label_smoothing, self.ignore_class = float(label_smoothing), ignore_class

    def call(self, y_true, y_pred):
        return crossentropy(y_true, y_pred, encoding=self.encoding, from_logits=self.from_logits,
                            label_smoothing=self.label_smoothing, ignore_class=self.ignore_class)

    def _mask(self, y_true, y_pred):
        return valid_mask(y_true, y_pred, encoding=self.encoding, ignore_class=self.ignore_class)

    def get_config(self):
        return {**super().get_config(), "encoding": self.encoding, "from_logits": self.from_logits,
                "label_smoothing": self.label_smoothing, "ignore_class": self.ignore_class}


@keras.saving.register_keras_serializable(package="xentlab")
class FocalCrossEntropy(CrossEntropy):
    """Focal cross-entropy for sparse or one-hot labels; see `focal_crossentropy`."""

    def __init__(self, encoding="sparse", gamma=2.0, alpha=None, from_logits=False, label_smoothing=0.0,
                 ignore_class=None, reduction="sum_over_batch_size", name="focal", **kwargs):
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}; 0 gives plain cross-entropy")
        if alpha is not None:
            values = list(alpha) if isinstance(alpha, (list, tuple)) else [alpha]
            if any(a < 0 for a in values):
                raise ValueError(f"alpha must be >= 0 (a scalar or one value per class), got {alpha}")
            alpha = list(alpha) if isinstance(alpha, (list, tuple)) else float(alpha)
        super().__init__(encoding, from_logits, label_smoothing, ignore_class, reduction, name, **kwargs)
        self.gamma, self.alpha = float(gamma), alpha

    def call(self, y_true, y_pred):
        return focal_crossentropy(y_true, y_pred, encoding=self.encoding, gamma=self.gamma, alpha=self.alpha,
                                  from_logits=self.from_logits, label_smoothing=self.label_smoothing,
                                  ignore_class=self.ignore_class)

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma, "alpha": self.alpha}


@keras.saving.register_keras_serializable(package="xentlab")
class BinaryCrossEntropy(_MaskedLoss):
    """Binary cross-entropy for one sigmoid unit; see `binary_crossentropy`."""

    def __init__(self, from_logits=False, label_smoothing=0.0, ignore_class=None,
                 reduction="sum_over_batch_size", name="binary", **kwargs):
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        super().__init__(reduction=reduction, name=name, **kwargs)
        self.from_logits, self.label_smoothing, self.ignore_class = from_logits, float(label_smoothing), ignore_class

    def call(self, y_true, y_pred):
        return binary_crossentropy(y_true, y_pred, from_logits=self.from_logits,
                                   label_smoothing=self.label_smoothing, ignore_class=self.ignore_class)

    def _mask(self, y_true, y_pred):
        if self.ignore_class is None:
            return None
        return ops.cast(ops.not_equal(_sparse_labels(y_true, y_pred), self.ignore_class), y_pred.dtype)

    def get_config(self):
        return {**super().get_config(), "from_logits": self.from_logits, "label_smoothing": self.label_smoothing,
                "ignore_class": self.ignore_class}


@keras.saving.register_keras_serializable(package="xentlab")
class WeightedBinaryCrossEntropy(_MaskedLoss):
    """Multi-label sigmoid loss with per-label positive weights; see `weighted_binary_crossentropy`."""

    def __init__(self, pos_weight=1.0, from_logits=True, reduction="sum_over_batch_size",
                 name="weighted_binary", **kwargs):
        values = list(pos_weight) if isinstance(pos_weight, (list, tuple)) else [pos_weight]
        if any(q <= 0 for q in values):
            raise ValueError(f"pos_weight must be > 0 (a scalar or one value per label), got {pos_weight}")
        super().__init__(reduction=reduction, name=name, **kwargs)
        self.pos_weight = list(pos_weight) if isinstance(pos_weight, (list, tuple)) else float(pos_weight)
        self.from_logits = from_logits

    def call(self, y_true, y_pred):
        return weighted_binary_crossentropy(y_true, y_pred, pos_weight=self.pos_weight,
                                            from_logits=self.from_logits)

    def get_config(self):
        return {**super().get_config(), "pos_weight": self.pos_weight, "from_logits": self.from_logits}


def build_loss(
    kind: str, *, encoding="sparse", from_logits=False, label_smoothing=0.0, reduction="sum_over_batch_size",
    ignore_class=None, gamma=2.0, alpha=None, pos_weight=1.0,
) -> keras.losses.Loss:
    """The loss object for `kind` (one of LOSS_KINDS) with its arguments."""
    if kind == "crossentropy":
        return CrossEntropy(encoding, from_logits, label_smoothing, ignore_class, reduction)
    if kind == "focal":
        return FocalCrossEntropy(encoding, gamma, alpha, from_logits, label_smoothing, ignore_class, reduction)
    if kind == "binary":
        return BinaryCrossEntropy(from_logits, label_smoothing, ignore_class, reduction)
    if kind == "weighted_binary":
        return WeightedBinaryCrossEntropy(pos_weight, from_logits, reduction)
    raise ValueError(f"unknown loss {kind!r}; expected one of {LOSS_KINDS} or loss._target_=module.function")

"""Tensor helpers shared by the loss functions: label shapes, the mask attached for Keras' reduction, and the one
categorical form every softmax loss reduces to (`categorical`)."""

from __future__ import annotations

from numbers import Real

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from xentlab.core.probabilities import to_probabilities_tf
from xentlab.core.targets import valid_mask_tf
from xentlab.errors import ConfigError, LabelError

try:
    # `Loss.__call__` reads the `_keras_mask` of the per-element losses and then divides by the unmasked count;
    # Keras' own sparse_categorical_crossentropy(ignore_class=...) sets it with this (private) function.
    from keras.src.backend import set_keras_mask
except ImportError:  # pragma: no cover - moved in some Keras release; the attribute is what Loss.__call__ reads

    def set_keras_mask(x, mask):
        x._keras_mask = mask


def float_tensor(y_pred):
    """y_pred as a float tensor; float16/bfloat16 go to float32, where the 1e-7 clip is representable."""
    y_pred = ops.convert_to_tensor(y_pred)
    if y_pred.dtype not in (tf.float32, tf.float64):
        y_pred = ops.cast(y_pred, "float32")
    return y_pred


def rank(x) -> int:
    return len(x.shape) if hasattr(x, "shape") else np.ndim(x)


def shapes_compatible(a, b) -> bool:
    """Static shapes match where both are known (None = unknown batch or sequence size in graph mode)."""
    return len(a) == len(b) and all(i is None or j is None or i == j for i, j in zip(a, b, strict=True))


def _fitted(y_true, shape, y_pred, fn: str, expected: str, hint: str = ""):
    """y_true as a tensor of `shape`, a trailing axis of 1 squeezed when `shape` is y_pred's without its class axis;
    else LabelError: "`fn`: `expected`; received" both shapes, then `hint`."""
    y_true = ops.convert_to_tensor(y_true)
    if len(shape) < len(y_pred.shape) and len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] == 1:
        y_true = ops.squeeze(y_true, axis=-1)
    if not shapes_compatible(tuple(y_true.shape), tuple(shape)):
        raise LabelError(f"{fn}: {expected}; received y_true.shape={tuple(y_true.shape)}, "
                         f"y_pred.shape={tuple(y_pred.shape)}.{' ' + hint if hint else ''}")
    return y_true


def sparse_labels(y_true, y_pred, fn: str):
    """Integer class ids shaped like y_pred without its class axis; a trailing size-1 axis is squeezed."""
    y_true = _fitted(y_true, y_pred.shape[:-1], y_pred, fn, "with encoding='sparse', y_true must hold integer class "
                     "ids of shape y_pred.shape[:-1] (or with a trailing axis of 1)",
                     "For labels shaped like y_pred pass encoding='one_hot'.")
    return ops.cast(y_true, "int32")


def one_hot_labels(y_true, y_pred, fn: str, expected: str = "with encoding='one_hot', y_true must have the shape "
                   "of y_pred", hint: str = "For integer class ids pass encoding='sparse'."):
    """Labels of the shape of y_pred (the one-hot view, or multi-hot), in y_pred's dtype."""
    return ops.cast(_fitted(y_true, y_pred.shape, y_pred, fn, expected, hint), y_pred.dtype)


def masked(losses, valid):
    """Exact zeros at masked positions, and the mask attached so Keras' reduction divides by the unmasked count."""
    if valid is None:
        return losses
    losses = ops.where(valid, losses, ops.zeros_like(losses))
    set_keras_mask(losses, valid)
    return losses


def clipped_probabilities(y_pred):
    """Keras' probability path: normalise over the class axis, then clip to [eps, 1 - eps] (eps = 1e-7)."""
    eps = keras.config.epsilon()
    return ops.clip(to_probabilities_tf(y_pred, from_logits=False), eps, 1.0 - eps)


def log_p_and_complement(pred, from_logits: bool):
    """(log p, 1 - p) per class: from logits by log_softmax and 1 - p = -expm1(log p), exact when p nears 1; from
    probabilities Keras' way, on the clipped p (`clipped_probabilities`)."""
    if from_logits:
        log_p = ops.log_softmax(pred, axis=-1)
        return log_p, -ops.expm1(log_p)  # 1 - p without cancellation when p is close to 1
    p = clipped_probabilities(pred)
    return ops.log(p), 1.0 - p  # Keras' formula, on the clipped p


def class_count(y_pred):
    """K as a Python int when static (always, for Dense heads), else a tensor."""
    k = y_pred.shape[-1]
    return k if k is not None else ops.shape(y_pred)[-1]


def per_class_weights(weights, y_pred, arg: str, fn: str):
    """A scalar or a length-K (length-L) weight vector as a tensor broadcasting over the class axis."""
    if isinstance(weights, Real):
        return ops.cast(weights, y_pred.dtype)
    k = y_pred.shape[-1]
    if k is not None and len(weights) != k:
        raise ConfigError(
            f"{fn}: {arg} has {len(weights)} entries but y_pred has {k} classes (last axis); pass one value per "
            f"class or a single number."
        )
    return ops.convert_to_tensor(np.asarray(weights), dtype=y_pred.dtype)


def categorical(y_true, y_pred, *, encoding, label_smoothing, ignore_class, per_class_fn, fn):
    """sum_c t_c * per_class_fn(y_pred)_c with t the (smoothed) target, masked at ignore_class positions.

    The arguments come checked (`arguments.checked_arguments`, on the loss function that calls this)."""
    y_pred = float_tensor(y_pred)
    k = class_count(y_pred)

    if encoding == "sparse":
        labels = sparse_labels(y_true, y_pred, fn)
        valid = valid_mask_tf(labels, encoding=encoding, ignore_class=ignore_class)
        if valid is not None:
            labels = ops.where(valid, labels, ops.zeros_like(labels))  # an in-range id for the gather
    else:
        target = one_hot_labels(y_true, y_pred, fn)
        valid = valid_mask_tf(target, encoding=encoding, ignore_class=ignore_class)
    if valid is not None:
        # Masked rows are replaced by a harmless constant before any log, so whatever they hold (0, inf, NaN)
        # cannot reach the gradient, which tf.where makes exactly zero there.
        y_pred = ops.where(ops.expand_dims(valid, -1), y_pred, ops.ones_like(y_pred))

    per_class = per_class_fn(y_pred)  # (..., K)
    if encoding == "sparse":
        # sum_c t_c f_c with t = (1 - ls) one_hot + ls / K, without building the one-hot
        picked = tf.gather(per_class, labels, batch_dims=len(labels.shape))
        losses = picked
        if label_smoothing:
            losses = (1.0 - label_smoothing) * picked + label_smoothing * ops.mean(per_class, axis=-1)
    else:
        if label_smoothing:
            target = target * (1.0 - label_smoothing) + label_smoothing / ops.cast(k, y_pred.dtype)
        losses = ops.sum(target * per_class, axis=-1)
    return masked(losses, valid)


def binary_labels(y_true, y_pred, fn: str):
    """(y, x): 0/1 labels as floats (soft labels keep their value) and the one unit of y_pred squeezed, both of
    shape y_pred.shape[:-1]."""
    y_pred = float_tensor(y_pred)
    if len(y_pred.shape) < 1 or y_pred.shape[-1] not in (1, None):
        raise LabelError(
            f"{fn}: y_pred must end in one sigmoid unit, shape (..., 1); received "
            f"y_pred.shape={tuple(y_pred.shape)}. For K units use crossentropy (softmax)."
        )
    y_true = _fitted(y_true, y_pred.shape[:-1], y_pred, fn,
                     "y_true must hold 0/1 labels of shape y_pred.shape[:-1] or y_pred.shape")
    return ops.cast(y_true, y_pred.dtype), ops.squeeze(y_pred, axis=-1)

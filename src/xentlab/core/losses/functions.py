"""The loss functions: per-element losses of any label rank, masked at `ignore_class` positions.

Each is a pure function of (y_true, y_pred) and its keyword arguments, which it checks on entry
(`arguments.checked_arguments`); `xentlab.core.losses.classes` wraps them as Keras losses, which check them once
when built. The math of each stays in one function (the softmax losses share `tensors.categorical`).
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
from keras import ops

from xentlab.core.losses.arguments import FOCAL_GAMMA, check_weights, checked_arguments
from xentlab.core.losses.tensors import (
    binary_labels,
    categorical,
    clipped_probabilities,
    float_tensor,
    log_p_and_complement,
    masked,
    one_hot_labels,
    per_class_weights,
)
from xentlab.core.targets import valid_mask_tf
from xentlab.errors import ConfigError, ConfigTypeError


@checked_arguments()
def crossentropy(y_true, y_pred, *, encoding="sparse", from_logits=False, label_smoothing=0.0, ignore_class=None):
    """Categorical cross-entropy per element: -sum_c t_c log p_c.

    With ``from_logits=True``, log p is ``log_softmax(y_pred)``: exact and finite for any finite logits
    (logits of +-1e4 included). With ``from_logits=False`` it follows Keras' categorical cross-entropy:
    y_pred is divided by its sum over the class axis, then clipped to [eps, 1 - eps] with
    eps = ``keras.config.epsilon()`` (1e-7). A sample's loss is therefore capped at -log(1e-7) ~= 16.118 and
    the gradient with respect to a clipped probability is zero: a sample whose true class got p = 0 cannot
    learn its way out. Keras' own losses skip the clip (and use the logits) when y_pred carries
    ``_keras_logits`` (the output of a Keras softmax); this function never does, so the probability set-up
    is what it says. For sparse labels, Keras' ``sparse_categorical_crossentropy`` clips without normalising
    first; values differ from this function only by O(1e-7) at clipped probabilities.

    Args:
        y_true: Integer class ids of shape ``y_pred.shape[:-1]`` (``encoding="sparse"``, a trailing axis of 1
            is allowed) or labels of the shape of ``y_pred`` (``encoding="one_hot"``). Label shapes (N,),
            (N, T) for sequences and (N, H) for multi-head outputs all work.
        y_pred: Logits or probabilities, shape (..., K).
        encoding: ``"sparse"`` or ``"one_hot"``; both give the same values and gradients.
        from_logits: Whether y_pred holds logits (True) or probabilities (False).
        label_smoothing: ls in [0, 1): the target becomes (1 - ls) * one_hot + ls / K, for both encodings.
        ignore_class: The "n/a" label, inside [0, K) or outside (e.g. -1). Its positions get exactly zero loss
            and exactly zero gradient. With one-hot labels a position is also masked when its row is all
            zeros (``tf.one_hot`` of an out-of-range id).

    Returns:
        Per-element losses of shape ``y_pred.shape[:-1]``. With ``ignore_class``, the boolean mask of unmasked
        positions is attached as ``_keras_mask``, so a Keras ``Loss`` averages over unmasked positions only.

    Raises:
        ValueError: For an unknown encoding, label smoothing outside [0, 1) or label shapes that do not fit.
    """

    def nll(pred):
        if from_logits:
            return -ops.log_softmax(pred, axis=-1)
        return -ops.log(clipped_probabilities(pred))

    return categorical(y_true, y_pred, encoding=encoding, label_smoothing=label_smoothing,
                        ignore_class=ignore_class, per_class_fn=nll, fn="crossentropy")


@checked_arguments()
def focal_crossentropy(
    y_true, y_pred, *, encoding="sparse", gamma=FOCAL_GAMMA, alpha=None, from_logits=False, label_smoothing=0.0,
    ignore_class=None,
):
    """Focal cross-entropy per element (Lin et al. 2017): sum_c t_c * a_c * (1 - p_c)^gamma * (-log p_c).

    With ``from_logits=False`` this is exactly Keras' ``categorical_focal_crossentropy`` (normalise over the
    class axis, clip to [1e-7, 1 - 1e-7], (1 - p)^gamma of the clipped p); so the loss is capped and clipped
    probabilities get no gradient, as in `crossentropy`. With ``from_logits=True`` Keras applies softmax and
    then the same clip; this function uses ``log_softmax`` and 1 - p = -expm1(log p) instead, so it stays
    exact for extreme logits (it equals Keras wherever no probability is below 1e-7 or above 1 - 1e-7).
    gamma=0 with alpha=None is `crossentropy`.

    Args:
        y_true: Class ids (``encoding="sparse"``) or one-hot labels (``encoding="one_hot"``); see `crossentropy`.
        y_pred: Logits or probabilities, shape (..., K).
        encoding: ``"sparse"`` or ``"one_hot"``; both give the same values and gradients.
        gamma: Focusing parameter >= 0; larger values down-weight well-classified positions.
        alpha: None (1 for every class), one number for every class, or a list of K per-class weights.
        from_logits: Whether y_pred holds logits (True) or probabilities (False).
        label_smoothing: ls in [0, 1): target (1 - ls) * one_hot + ls / K, for both encodings.
        ignore_class: The "n/a" label; its positions get exactly zero loss and gradient (see `crossentropy`).

    Returns:
        Per-element losses of shape ``y_pred.shape[:-1]`` (with ``_keras_mask`` set when ``ignore_class`` is).

    Raises:
        ValueError: For gamma < 0, negative alpha, alpha of the wrong length, or the errors of `crossentropy`.
    """
    tiny = float(np.finfo(np.float32).tiny)  # smallest normal float32: keeps pow's gradient finite at 1 - p = 0

    def focal(pred):
        log_p, one_minus_p = log_p_and_complement(pred, from_logits)
        per_class = -log_p
        if gamma:  # gamma == 0: no modulating factor at all, so the result is exactly crossentropy
            per_class = ops.power(ops.maximum(one_minus_p, tiny), gamma) * per_class
        if alpha is not None:
            per_class = per_class * per_class_weights(alpha, pred, "alpha", "focal_crossentropy")
        return per_class

    return categorical(y_true, y_pred, encoding=encoding, label_smoothing=label_smoothing,
                        ignore_class=ignore_class, per_class_fn=focal, fn="focal_crossentropy")


@checked_arguments(needs_logits=True)
def logit_adjusted_crossentropy(
    y_true, y_pred, *, priors, tau=1.0, encoding="sparse", from_logits=True, label_smoothing=0.0, ignore_class=None,
):
    """Logit-adjusted cross-entropy per element (Menon et al. 2021): -sum_c t_c log softmax(z + tau log pi)_c.

    The training-time form of logit adjustment: each logit z_c is shifted by tau * log(pi_c), pi the class
    priors of the training split, before the softmax cross-entropy. A rare class must then win by a margin
    that grows as its prior shrinks; tau = 1 is the balanced softmax, tau = 0 plain cross-entropy. The model
    itself still outputs the raw logits z, and every metric reads those unchanged: the shift exists only
    inside the loss. Computed with ``log_softmax``, so exact and finite for any finite logits.

    Args:
        y_true: Class ids (``encoding="sparse"``) or one-hot labels (``encoding="one_hot"``); see `crossentropy`.
            Every label rank of `crossentropy` works: (N,), sequences (N, T), multi-head (N, H).
        y_pred: Logits, shape (..., K).
        priors: K class priors > 0 (normalised here); `class_priors` makes them from class counts.
        tau: Scale of the adjustment, >= 0.
        encoding: ``"sparse"`` or ``"one_hot"``; both give the same values and gradients.
        from_logits: Must be True: the adjustment is defined on logits.
        label_smoothing: ls in [0, 1): target (1 - ls) * one_hot + ls / K, as in `crossentropy`.
        ignore_class: The "n/a" label; its positions get exactly zero loss and gradient (see `crossentropy`).

    Returns:
        Per-element losses of shape ``y_pred.shape[:-1]`` (with ``_keras_mask`` set when ``ignore_class`` is).

    Raises:
        ValueError: For from_logits=False, tau < 0, priors that are not > 0 or not one per class, or the
            errors of `crossentropy`.
    """
    shift = [tau * math.log(p) for p in priors]  # in float64, cast once to the logits' dtype

    def adjusted_nll(pred):
        return -ops.log_softmax(pred + per_class_weights(shift, pred, "priors", "logit_adjusted_crossentropy"),
                                axis=-1)

    return categorical(y_true, y_pred, encoding=encoding, label_smoothing=label_smoothing,
                        ignore_class=ignore_class, per_class_fn=adjusted_nll, fn="logit_adjusted_crossentropy")


@checked_arguments()
def poly1_crossentropy(
    y_true, y_pred, *, epsilon=1.0, encoding="sparse", from_logits=False, label_smoothing=0.0, ignore_class=None,
):
    """Poly-1 cross-entropy per element (Leng et al. 2022): CE + epsilon * (1 - p_t), p_t = sum_c t_c p_c.

    The first polynomial term of cross-entropy's expansion gets weight epsilon more; epsilon > 0 keeps the
    gradient up for confident positions, epsilon = 0 is `crossentropy`. With label smoothing t is the smoothed
    target (as in the paper's code), so the loss is sum_c t_c (-log p_c + epsilon (1 - p_c)). Probabilities
    follow `crossentropy` (normalised, clipped to [1e-7, 1 - 1e-7], no gradient at clipped values); logits use
    ``log_softmax`` and 1 - p = -expm1(log p).

    Args:
        y_true: Class ids (``encoding="sparse"``) or one-hot labels (``encoding="one_hot"``); see `crossentropy`.
        y_pred: Logits or probabilities, shape (..., K).
        epsilon: Weight of the extra (1 - p_t) term, >= -1.
        encoding, from_logits, label_smoothing, ignore_class: As in `crossentropy`.

    Returns:
        Per-element losses of shape ``y_pred.shape[:-1]`` (with ``_keras_mask`` set when ``ignore_class`` is).

    Raises:
        ValueError: For epsilon < -1, or the errors of `crossentropy`.
    """

    def poly1(pred):
        log_p, one_minus_p = log_p_and_complement(pred, from_logits)
        return -log_p + epsilon * one_minus_p

    return categorical(y_true, y_pred, encoding=encoding, label_smoothing=label_smoothing,
                        ignore_class=ignore_class, per_class_fn=poly1, fn="poly1_crossentropy")


@checked_arguments()
def binary_crossentropy(y_true, y_pred, *, from_logits=False, label_smoothing=0.0, ignore_class=None):
    """Binary cross-entropy of one sigmoid unit for 2-class data, per element.

    With ``from_logits=True`` it is computed as y * softplus(-x) + (1 - y) * softplus(x), the value of
    ``tf.nn.sigmoid_cross_entropy_with_logits``, finite and exact for logits of +-1e4. With
    ``from_logits=False`` p is clipped to [1e-7, 1 - 1e-7] like Keras' ``binary_crossentropy``, capping the
    loss and zeroing the gradient of clipped probabilities.

    Args:
        y_true: 0/1 labels of shape (...) or (..., 1).
        y_pred: One logit or probability per element, shape (..., 1).
        from_logits: Whether y_pred holds logits (True) or probabilities (False).
        label_smoothing: ls in [0, 1): the target becomes y * (1 - ls) + ls / 2, as in Keras.
        ignore_class: The "n/a" label (e.g. -1 or 2); its positions get exactly zero loss and gradient.

    Returns:
        Per-element losses of shape ``y_pred.shape[:-1]`` (with ``_keras_mask`` set when ``ignore_class`` is).

    Raises:
        ValueError: If y_pred does not end in one unit, or y_true does not fit its shape.
    """
    y, x = binary_labels(y_true, y_pred, "binary_crossentropy")
    valid = valid_mask_tf(y, encoding="sparse", ignore_class=ignore_class)
    if valid is not None:
        y = ops.where(valid, y, ops.zeros_like(y))
        # logit 0 / probability 0.5: a harmless stand-in so masked inputs cannot reach the gradient
        x = ops.where(valid, x, ops.zeros_like(x) if from_logits else ops.full_like(x, 0.5))
    if label_smoothing:
        y = y * (1.0 - label_smoothing) + 0.5 * label_smoothing

    if from_logits:
        # -log sigmoid(x) = softplus(-x), -log(1 - sigmoid(x)) = softplus(x); each term stays accurate
        losses = y * ops.softplus(-x) + (1.0 - y) * ops.softplus(x)
    else:
        eps = keras.config.epsilon()
        p = ops.clip(x, eps, 1.0 - eps)
        losses = -(y * ops.log(p) + (1.0 - y) * ops.log1p(-p))
    return masked(losses, valid)


@checked_arguments()
def weighted_binary_crossentropy(y_true, y_pred, *, pos_weight, from_logits=True):
    """Multi-label sigmoid cross-entropy with a positive weight per label, averaged over the label axis.

    Per label: pos_weight * y * -log(sigmoid(x)) + (1 - y) * -log(1 - sigmoid(x)), the semantics of
    ``tf.nn.weighted_cross_entropy_with_logits``. With ``from_logits=False`` the probabilities are clipped to
    [1e-7, 1 - 1e-7] (Keras' clip) and used as the sigmoid of their logits, so -log p and -log(1 - p) are
    computed directly: the same values as converting to logits, without the round trip.

    Args:
        y_true: 0/1 (multi-hot) labels of the shape of y_pred, (N, L).
        y_pred: Logits or per-label probabilities, shape (N, L).
        pos_weight: Weight of the positive term: one number, or a list of L per-label weights, all > 0.
        from_logits: Whether y_pred holds logits (True) or probabilities (False).

    Returns:
        Per-element losses, the mean over the last (label) axis: shape ``y_pred.shape[:-1]``.

    Raises:
        ValueError: If pos_weight is not > 0 or has the wrong length, or y_true does not match y_pred's shape.
    """
    y_pred = float_tensor(y_pred)
    y = one_hot_labels(y_true, y_pred, "weighted_binary_crossentropy", "y_true must be 0/1 labels of the shape of "
                       "y_pred", "For integer class ids use their one-hot view (labels encoding='one_hot').")
    q = per_class_weights(pos_weight, y_pred, "pos_weight", "weighted_binary_crossentropy")
    if from_logits:
        neg_log_p, neg_log_not_p = ops.softplus(-y_pred), ops.softplus(y_pred)
    else:
        eps = keras.config.epsilon()
        p = ops.clip(y_pred, eps, 1.0 - eps)
        neg_log_p, neg_log_not_p = -ops.log(p), -ops.log1p(-p)
    losses = q * y * neg_log_p + (1.0 - y) * neg_log_not_p
    return ops.mean(losses, axis=-1)


def class_priors(class_counts: Any) -> list[float]:
    """Class frequencies from the training split's class counts, for `logit_adjusted_crossentropy`.

    A class with no training example counts as half an example: its prior stays positive (log prior finite,
    about log(0.5 / N), below every class that was seen) instead of log 0 = -inf, which would turn the
    adjusted logits and their gradients into NaN. Such a class never appears as a training label, so the
    floor only sets how much the other positions push its logit down.

    Args:
        class_counts: Examples (labelled positions) per class, K numbers >= 0, not all 0.

    Returns:
        K priors > 0 that sum to 1.

    Raises:
        TypeError: If class_counts is not a list of numbers.
        ValueError: If a count is negative, or every count is 0.
    """
    counts = check_weights(class_counts, "class_counts", strictly_positive=False)
    if isinstance(counts, float):
        raise ConfigTypeError(
            f"class_counts must be a list with one count per class; received class_counts={class_counts!r}."
        )
    counts = np.asarray(counts, dtype=np.float64)
    if counts.sum() <= 0:
        raise ConfigError(
            f"class_counts must count at least one example; received class_counts={class_counts!r}. Pass the "
            f"training split's label counts (xentlab.core.weighting.label_counts)."
        )
    counts = np.where(counts > 0, counts, 0.5)
    return (counts / counts.sum()).tolist()

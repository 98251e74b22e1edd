"""Classification losses for comparing set-ups: cross-entropy, focal, binary, weighted binary, logit-adjusted, poly-1.

Pure functions return per-element losses; thin `keras.losses.Loss` classes reduce them over unmasked elements.
`LOSS_TABLE` says, for each loss kind, which head and labels it needs; the model and the checks read it too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from xentlab.core.probabilities import to_probabilities_tf

try:
    # `Loss.__call__` reads the `_keras_mask` of the per-element losses and then divides by the unmasked count;
    # Keras' own sparse_categorical_crossentropy(ignore_class=...) sets it with this (private) function.
    from keras.src.backend import set_keras_mask
except ImportError:  # pragma: no cover - moved in some Keras release; the attribute is what Loss.__call__ reads

    def set_keras_mask(x, mask):
        x._keras_mask = mask

ENCODINGS = ("sparse", "one_hot")
REDUCTIONS = ("sum_over_batch_size", "sum", "none")


# ---------------------------------------------------------------------------------------------- the table of kinds
@dataclass(frozen=True)
class LossSpec:
    """What one loss kind needs from the model head and from the labels.

    `LOSS_TABLE` is the one place these rules are stated: the head builder (`xentlab.core.models.head_spec`), the
    config checks (`xentlab.config.checks.check_loss_and_labels`, through `check_loss_combination`) and `build_loss`
    all read it.

    Attributes:
        single_unit: One sigmoid unit for 2-class data (True) or one unit per class (False).
        activation: The head's activation when the loss takes probabilities (``from_logits=False``);
            with logits the head is linear.
        encodings: The label encodings (``labels.encoding``) the loss accepts; the first is `build_loss`'s
            default.
        label_form: How the loss reads its labels, in words, for error messages.
        needs_logits: The loss changes the logits themselves, so it needs ``from_logits=True`` (a linear head).
        binary_only: The loss is defined for 2-class data only.
        masks: The loss honours ``ignore_class`` (labels.ignore_class).
        smooths: The loss honours ``label_smoothing``.
        one_unit_kind: The kind ``model.head=sigmoid1`` turns this loss into; None when it has no one-unit form.
    """

    single_unit: bool
    activation: str
    encodings: tuple[str, ...]
    label_form: str
    needs_logits: bool = False
    binary_only: bool = False
    masks: bool = True
    smooths: bool = True
    one_unit_kind: str | None = None

    def head_units(self, num_classes: int) -> int:
        """Units of the output layer for `num_classes` classes."""
        return 1 if self.single_unit else num_classes

    def head_activation(self, from_logits: bool) -> str | None:
        """The output layer's activation: None (linear) for logits, else `activation`."""
        return None if from_logits else self.activation


_IDS = "integer class ids or their one-hot view"
LOSS_TABLE: dict[str, LossSpec] = {
    "crossentropy": LossSpec(False, "softmax", ENCODINGS, _IDS, one_unit_kind="binary"),
    "focal": LossSpec(False, "softmax", ENCODINGS, _IDS),
    "binary": LossSpec(True, "sigmoid", ("sparse",), "0/1 labels", binary_only=True, one_unit_kind="binary"),
    "weighted_binary": LossSpec(False, "sigmoid", ("one_hot",), "the one-hot view, each class its own sigmoid label",
                                masks=False, smooths=False),
    "logit_adjusted": LossSpec(False, "softmax", ENCODINGS, _IDS, needs_logits=True),
    "poly1": LossSpec(False, "softmax", ENCODINGS, _IDS),
}
LOSS_KINDS = tuple(LOSS_TABLE)


def loss_spec(kind: Any) -> LossSpec:
    """The `LOSS_TABLE` row of `kind`.

    Raises:
        ValueError: For a kind that is not in the table.
    """
    if kind not in LOSS_TABLE:
        raise ValueError(
            f"kind must be one of {LOSS_KINDS}; received kind={kind!r}. Pick one of these names (loss=NAME), or "
            f"pass your own Keras loss object instead of calling build_loss."
        )
    return LOSS_TABLE[kind]


def _kinds_where(rule) -> str:
    return ", ".join(k for k, spec in LOSS_TABLE.items() if rule(spec))


def check_loss_combination(
    kind: Any, *, encoding: Any = None, from_logits: Any = None, num_classes: int | None = None,
    ignore_class: Any = None, label_smoothing: Any = None,
) -> LossSpec:
    """Refuses what `LOSS_TABLE` forbids for `kind`; arguments left at None are not known yet and not checked.

    Messages name the config key, the value received and the override that fixes it.

    Returns:
        The kind's `LossSpec`.

    Raises:
        ValueError: For an unknown kind, 2-class-only losses on other data, a label encoding the loss cannot
            read, probabilities for a loss that needs logits, or a mask or smoothing the loss cannot honour.
    """
    spec = loss_spec(kind)
    if spec.binary_only and num_classes is not None and num_classes != 2:
        head = "one sigmoid unit" if spec.single_unit else "2 classes"
        raise ValueError(
            f"loss={kind} ({head}) needs 2 classes, the data has {num_classes}; use loss=crossentropy "
            f"(softmax over {num_classes} classes)"
        )
    if encoding is not None and _check_encoding(encoding) not in spec.encodings:
        allowed = " or ".join(f"encoding={e!r}" for e in spec.encodings)
        others = _kinds_where(lambda s: encoding in s.encodings)
        raise ValueError(
            f"loss={kind} takes {spec.label_form} ({allowed}); received encoding={encoding!r}: set "
            f"labels={spec.encodings[0]}, or use a loss that takes labels={encoding}: {others}"
        )
    if spec.needs_logits and from_logits is not None and not from_logits:
        raise ValueError(
            f"loss={kind} works on the logits (the head's raw outputs) and needs from_logits=True; received "
            f"loss.from_logits={from_logits!r}. Set loss.from_logits=true (the model head becomes linear)"
        )
    if not spec.masks and ignore_class is not None:
        raise ValueError(
            f"loss={kind} has no ignore_class; received labels.ignore_class={ignore_class!r}. Unset it, drop the "
            f"n/a examples from the data (data.drop_na=true), or use a loss that masks them: "
            f"{_kinds_where(lambda s: s.masks)}"
        )
    if not spec.smooths and label_smoothing:
        raise ValueError(
            f"loss={kind} has no label_smoothing; received loss.label_smoothing={label_smoothing!r}. Set "
            f"loss.label_smoothing=0"
        )
    return spec


# ---------------------------------------------------------------------------------------------- argument checks
def _check_encoding(encoding: Any) -> str:
    if encoding not in ENCODINGS:
        raise ValueError(
            f"encoding must be one of {ENCODINGS}; received encoding={encoding!r}. Use 'sparse' for integer "
            f"class ids shaped like y_pred without its class axis, 'one_hot' for labels shaped like y_pred."
        )
    return encoding


def _check_bool(value: Any, arg: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{arg} must be True or False; received {arg}={value!r} of type {type(value).__name__}.")
    return bool(value)


def _check_real(value: Any, arg: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, Real) or not math.isfinite(value):
        raise TypeError(f"{arg} must be a finite number; received {arg}={value!r} of type {type(value).__name__}.")
    return float(value)


def _check_label_smoothing(label_smoothing: Any) -> float:
    value = _check_real(label_smoothing, "label_smoothing")
    if not 0.0 <= value < 1.0:
        raise ValueError(
            f"label_smoothing must be in [0, 1); received label_smoothing={label_smoothing!r}. "
            f"0 disables smoothing; 0.1 is a common choice."
        )
    return value


def _check_gamma(gamma: Any) -> float:
    value = _check_real(gamma, "gamma")
    if value < 0:
        raise ValueError(f"gamma must be >= 0; received gamma={gamma!r}. Use 0 for plain cross-entropy, 2 is usual.")
    return value


def _check_weights(value: Any, arg: str, *, strictly_positive: bool) -> float | list[float]:
    """A scalar or a list of per-class (per-label) weights, as plain floats so get_config() is JSON-friendly."""
    bound = "> 0" if strictly_positive else ">= 0"
    if isinstance(value, (str, bytes)) or not (isinstance(value, Real) or np.ndim(value) == 1):
        raise TypeError(
            f"{arg} must be a number or a list of numbers (one per class); received {arg}={value!r} "
            f"of type {type(value).__name__}."
        )
    values = [value] if isinstance(value, Real) else list(value)
    if not values:
        raise ValueError(f"{arg} must not be empty; pass a number or one value per class.")
    checked = [_check_real(v, arg) for v in values]
    if any(v <= 0 if strictly_positive else v < 0 for v in checked):
        raise ValueError(f"{arg} must be {bound} (a scalar or one value per class); received {arg}={value!r}.")
    return checked[0] if isinstance(value, Real) else checked


def _check_alpha(alpha: Any) -> float | list[float] | None:
    return None if alpha is None else _check_weights(alpha, "alpha", strictly_positive=False)


def _check_pos_weight(pos_weight: Any) -> float | list[float]:
    return _check_weights(pos_weight, "pos_weight", strictly_positive=True)


def _check_ignore_class(ignore_class: Any) -> int | None:
    if ignore_class is None:
        return None
    if isinstance(ignore_class, (bool, np.bool_)) or not isinstance(ignore_class, Integral):
        raise TypeError(
            f"ignore_class must be an integer class id or None; received ignore_class={ignore_class!r} of type "
            f"{type(ignore_class).__name__}. Use e.g. -1 for an n/a label outside the classes."
        )
    return int(ignore_class)


def _check_reduction(reduction: Any) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(
            f"reduction must be one of {REDUCTIONS}; received reduction={reduction!r}. 'sum_over_batch_size' "
            f"is the mean over unmasked elements, 'none' returns the per-element losses."
        )
    return reduction


def _check_tau(tau: Any) -> float:
    value = _check_real(tau, "tau")
    if value < 0:
        raise ValueError(
            f"tau must be >= 0; received tau={tau!r}. 1 is the balanced softmax (Menon et al. 2021), 0 is plain "
            f"cross-entropy; set loss.tau to a value >= 0."
        )
    return value


def _check_epsilon(epsilon: Any) -> float:
    value = _check_real(epsilon, "epsilon")
    if value < -1:
        raise ValueError(
            f"epsilon must be >= -1; received epsilon={epsilon!r}. Below -1 the loss of the true class rises "
            f"again as p_true nears 1, so training would reward doubt; 1 is the paper's default (loss.epsilon=1)."
        )
    return value


def _check_needs_logits(from_logits: Any, fn: str) -> bool:
    if not _check_bool(from_logits, "from_logits"):
        raise ValueError(
            f"{fn} adds tau * log(prior) to the logits and needs from_logits=True; received from_logits=False. "
            f"Set loss.from_logits=true (a linear head), or use crossentropy for a softmax head."
        )
    return True


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
    counts = _check_weights(class_counts, "class_counts", strictly_positive=False)
    if isinstance(counts, float):
        raise TypeError(
            f"class_counts must be a list with one count per class; received class_counts={class_counts!r}."
        )
    counts = np.asarray(counts, dtype=np.float64)
    if counts.sum() <= 0:
        raise ValueError(
            f"class_counts must count at least one example; received class_counts={class_counts!r}. Pass the "
            f"training split's label counts (xentlab.core.weighting.label_counts)."
        )
    counts = np.where(counts > 0, counts, 0.5)
    return (counts / counts.sum()).tolist()


def _check_priors(priors: Any) -> list[float]:
    """K priors > 0, normalised to sum 1 (the loss does not change: softmax ignores a shift of every logit)."""
    values = _check_weights(priors, "priors", strictly_positive=True)
    if isinstance(values, float):
        raise TypeError(f"priors must be a list with one prior per class; received priors={priors!r}.")
    total = math.fsum(values)
    return [v / total for v in values]


# ---------------------------------------------------------------------------------------------- tensor helpers
def _float_tensor(y_pred):
    """y_pred as a float tensor; float16/bfloat16 go to float32, where the 1e-7 clip is representable."""
    y_pred = ops.convert_to_tensor(y_pred)
    if y_pred.dtype not in (tf.float32, tf.float64):
        y_pred = ops.cast(y_pred, "float32")
    return y_pred


def _rank(x) -> int:
    return len(x.shape) if hasattr(x, "shape") else np.ndim(x)


def _shapes_compatible(a, b) -> bool:
    """Static shapes match where both are known (None = unknown batch or sequence size in graph mode)."""
    return len(a) == len(b) and all(i is None or j is None or i == j for i, j in zip(a, b, strict=True))


def _sparse_labels(y_true, y_pred, fn: str):
    """Integer class ids shaped like y_pred without its class axis; a trailing size-1 axis is squeezed."""
    y_true = ops.convert_to_tensor(y_true)
    if len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] == 1:
        y_true = ops.squeeze(y_true, axis=-1)
    if not _shapes_compatible(tuple(y_true.shape), tuple(y_pred.shape[:-1])):
        raise ValueError(
            f"{fn}: with encoding='sparse', y_true must hold integer class ids of shape y_pred.shape[:-1] "
            f"(or with a trailing axis of 1); received y_true.shape={tuple(y_true.shape)}, "
            f"y_pred.shape={tuple(y_pred.shape)}. For labels shaped like y_pred pass encoding='one_hot'."
        )
    return ops.cast(y_true, "int32")


def _one_hot_labels(y_true, y_pred, fn: str):
    y_true = ops.convert_to_tensor(y_true)
    if not _shapes_compatible(tuple(y_true.shape), tuple(y_pred.shape)):
        raise ValueError(
            f"{fn}: with encoding='one_hot', y_true must have the shape of y_pred; received "
            f"y_true.shape={tuple(y_true.shape)}, y_pred.shape={tuple(y_pred.shape)}. "
            f"For integer class ids pass encoding='sparse'."
        )
    return ops.cast(y_true, y_pred.dtype)


def _one_hot_valid(target, ignore_class: int):
    """False where the one-hot row marks ignore_class, or is all zeros (tf.one_hot of an id outside [0, K))."""
    valid = ops.any(ops.not_equal(target, 0.0), axis=-1)
    num_classes = target.shape[-1]
    if num_classes is not None and 0 <= ignore_class < num_classes:
        # > 0.5 rather than == 1: also right for labels that arrive already smoothed
        valid = ops.logical_and(valid, ops.less_equal(target[..., ignore_class], 0.5))
    return valid


def _masked(losses, valid):
    """Exact zeros at masked positions, and the mask attached so Keras' reduction divides by the unmasked count."""
    if valid is None:
        return losses
    losses = ops.where(valid, losses, ops.zeros_like(losses))
    set_keras_mask(losses, valid)
    return losses


def _clipped_probabilities(y_pred):
    """Keras' probability path: normalise over the class axis, then clip to [eps, 1 - eps] (eps = 1e-7)."""
    eps = keras.config.epsilon()
    return ops.clip(to_probabilities_tf(y_pred, from_logits=False), eps, 1.0 - eps)


def _class_count(y_pred):
    """K as a Python int when static (always, for Dense heads), else a tensor."""
    k = y_pred.shape[-1]
    return k if k is not None else ops.shape(y_pred)[-1]


def _per_class_weights(weights, y_pred, arg: str, fn: str):
    """A scalar or a length-K (length-L) weight vector as a tensor broadcasting over the class axis."""
    if isinstance(weights, Real):
        return ops.cast(weights, y_pred.dtype)
    k = y_pred.shape[-1]
    if k is not None and len(weights) != k:
        raise ValueError(
            f"{fn}: {arg} has {len(weights)} entries but y_pred has {k} classes (last axis); pass one value per "
            f"class or a single number."
        )
    return ops.convert_to_tensor(np.asarray(weights), dtype=y_pred.dtype)


def _categorical(y_true, y_pred, *, encoding, label_smoothing, ignore_class, per_class_fn, fn):
    """sum_c t_c * per_class_fn(y_pred)_c with t the (smoothed) target, masked at ignore_class positions."""
    _check_encoding(encoding)
    label_smoothing = _check_label_smoothing(label_smoothing)
    ignore_class = _check_ignore_class(ignore_class)
    y_pred = _float_tensor(y_pred)
    k = _class_count(y_pred)

    valid = None
    if encoding == "sparse":
        labels = _sparse_labels(y_true, y_pred, fn)
        if ignore_class is not None:
            valid = ops.not_equal(labels, ignore_class)
            labels = ops.where(valid, labels, ops.zeros_like(labels))  # an in-range id for the gather
    else:
        target = _one_hot_labels(y_true, y_pred, fn)
        if ignore_class is not None:
            valid = _one_hot_valid(target, ignore_class)
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
    return _masked(losses, valid)


# ---------------------------------------------------------------------------------------------- functions
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
    _check_bool(from_logits, "from_logits")

    def nll(pred):
        if from_logits:
            return -ops.log_softmax(pred, axis=-1)
        return -ops.log(_clipped_probabilities(pred))

    return _categorical(y_true, y_pred, encoding=encoding, label_smoothing=label_smoothing,
                        ignore_class=ignore_class, per_class_fn=nll, fn="crossentropy")


def focal_crossentropy(
    y_true, y_pred, *, encoding="sparse", gamma=2.0, alpha=None, from_logits=False, label_smoothing=0.0,
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
    _check_bool(from_logits, "from_logits")
    gamma = _check_gamma(gamma)
    alpha = _check_alpha(alpha)
    tiny = float(np.finfo(np.float32).tiny)  # smallest normal float32: keeps pow's gradient finite at 1 - p = 0

    def focal(pred):
        if from_logits:
            log_p = ops.log_softmax(pred, axis=-1)
            one_minus_p = -ops.expm1(log_p)  # 1 - p without cancellation when p is close to 1
        else:
            p = _clipped_probabilities(pred)
            log_p, one_minus_p = ops.log(p), 1.0 - p  # Keras' formula, on the clipped p
        per_class = -log_p
        if gamma:  # gamma == 0: no modulating factor at all, so the result is exactly crossentropy
            per_class = ops.power(ops.maximum(one_minus_p, tiny), gamma) * per_class
        if alpha is not None:
            per_class = per_class * _per_class_weights(alpha, pred, "alpha", "focal_crossentropy")
        return per_class

    return _categorical(y_true, y_pred, encoding=encoding, label_smoothing=label_smoothing,
                        ignore_class=ignore_class, per_class_fn=focal, fn="focal_crossentropy")


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
    _check_needs_logits(from_logits, "logit_adjusted_crossentropy")
    tau = _check_tau(tau)
    priors = _check_priors(priors)
    shift = [tau * math.log(p) for p in priors]  # in float64, cast once to the logits' dtype

    def adjusted_nll(pred):
        return -ops.log_softmax(pred + _per_class_weights(shift, pred, "priors", "logit_adjusted_crossentropy"),
                                axis=-1)

    return _categorical(y_true, y_pred, encoding=encoding, label_smoothing=label_smoothing,
                        ignore_class=ignore_class, per_class_fn=adjusted_nll, fn="logit_adjusted_crossentropy")


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
        encoding: ``"sparse"`` or ``"one_hot"``; both give the same values and gradients.
        from_logits: Whether y_pred holds logits (True) or probabilities (False).
        label_smoothing: ls in [0, 1): target (1 - ls) * one_hot + ls / K, for both encodings.
        ignore_class: The "n/a" label; its positions get exactly zero loss and gradient (see `crossentropy`).

    Returns:
        Per-element losses of shape ``y_pred.shape[:-1]`` (with ``_keras_mask`` set when ``ignore_class`` is).

    Raises:
        ValueError: For epsilon < -1, or the errors of `crossentropy`.
    """
    _check_bool(from_logits, "from_logits")
    epsilon = _check_epsilon(epsilon)

    def poly1(pred):
        if from_logits:
            log_p = ops.log_softmax(pred, axis=-1)
            one_minus_p = -ops.expm1(log_p)
        else:
            p = _clipped_probabilities(pred)
            log_p, one_minus_p = ops.log(p), 1.0 - p
        return -log_p + epsilon * one_minus_p

    return _categorical(y_true, y_pred, encoding=encoding, label_smoothing=label_smoothing,
                        ignore_class=ignore_class, per_class_fn=poly1, fn="poly1_crossentropy")


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
    _check_bool(from_logits, "from_logits")
    label_smoothing = _check_label_smoothing(label_smoothing)
    ignore_class = _check_ignore_class(ignore_class)
    y_pred = _float_tensor(y_pred)
    if len(y_pred.shape) < 1 or y_pred.shape[-1] not in (1, None):
        raise ValueError(
            f"binary_crossentropy: y_pred must end in one sigmoid unit, shape (..., 1); received "
            f"y_pred.shape={tuple(y_pred.shape)}. For K units use crossentropy (softmax)."
        )
    y_true = ops.convert_to_tensor(y_true)
    if len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] == 1:
        y_true = ops.squeeze(y_true, axis=-1)
    if not _shapes_compatible(tuple(y_true.shape), tuple(y_pred.shape[:-1])):
        raise ValueError(
            f"binary_crossentropy: y_true must hold 0/1 labels of shape y_pred.shape[:-1] or y_pred.shape; "
            f"received y_true.shape={tuple(y_true.shape)}, y_pred.shape={tuple(y_pred.shape)}."
        )
    y = ops.cast(y_true, y_pred.dtype)  # float, not int: soft labels keep their value
    x = ops.squeeze(y_pred, axis=-1)

    valid = None
    if ignore_class is not None:
        valid = ops.not_equal(y, float(ignore_class))
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
    return _masked(losses, valid)


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
    _check_bool(from_logits, "from_logits")
    pos_weight = _check_pos_weight(pos_weight)
    y_pred = _float_tensor(y_pred)
    y_true = ops.convert_to_tensor(y_true)
    if not _shapes_compatible(tuple(y_true.shape), tuple(y_pred.shape)):
        raise ValueError(
            f"weighted_binary_crossentropy: y_true must be 0/1 labels of the shape of y_pred; received "
            f"y_true.shape={tuple(y_true.shape)}, y_pred.shape={tuple(y_pred.shape)}. For integer class ids "
            f"use their one-hot view (labels encoding='one_hot')."
        )
    y = ops.cast(y_true, y_pred.dtype)
    q = _per_class_weights(pos_weight, y_pred, "pos_weight", "weighted_binary_crossentropy")
    if from_logits:
        neg_log_p, neg_log_not_p = ops.softplus(-y_pred), ops.softplus(y_pred)
    else:
        eps = keras.config.epsilon()
        p = ops.clip(y_pred, eps, 1.0 - eps)
        neg_log_p, neg_log_not_p = -ops.log(p), -ops.log1p(-p)
    losses = q * y * neg_log_p + (1.0 - y) * neg_log_not_p
    return ops.mean(losses, axis=-1)


# ---------------------------------------------------------------------------------------------- classes
class _ElementwiseLoss(keras.losses.Loss):
    """Base: Keras' reduction (mask-aware, replica-scaled) with sample weights aligned to the label shape.

    `Loss.__call__` turns a `_keras_mask` on the per-element losses into weights total / unmasked, so
    "sum_over_batch_size" is sum(w * loss) / (number of unmasked elements); it also divides by the number of
    replicas under tf.distribute, as for Keras' own losses. With several replicas each one divides by its own
    unmasked count, so the step's loss is the mean of the replicas' masked means: the global masked mean only
    when the replicas hold equally many unmasked elements (Keras' SparseCategoricalCrossentropy(ignore_class)
    behaves the same). Only sample weights need help: Keras would broadcast (N,) weights against (N, T) losses
    from the left and fail, so they get trailing axes here.
    """

    def __init__(self, *, reduction: str, name: str):
        super().__init__(name=name, reduction=_check_reduction(reduction))

    def __call__(self, y_true, y_pred, sample_weight=None):
        if sample_weight is not None:
            sample_weight = self._align_sample_weight(sample_weight, _rank(y_pred) - 1)
        return super().__call__(y_true, y_pred, sample_weight=sample_weight)

    def _align_sample_weight(self, sample_weight, loss_rank: int):
        """(N,) or (N, 1) weights for (N, T) losses -> (N, 1): weights broadcast over the trailing label axes."""
        w = ops.convert_to_tensor(sample_weight, dtype=self.dtype)
        while len(w.shape) > loss_rank and w.shape[-1] == 1:
            w = ops.squeeze(w, axis=-1)
        if len(w.shape) > loss_rank:
            raise ValueError(
                f"{type(self).__name__}: sample_weight must broadcast to the per-element loss shape (rank "
                f"{loss_rank}); received sample_weight.shape={tuple(w.shape)}. Pass one weight per example "
                f"(N,) or per element (the label shape)."
            )
        while 0 < len(w.shape) < loss_rank:
            w = ops.expand_dims(w, axis=-1)
        return w


@keras.saving.register_keras_serializable(package="xentlab")
class CrossEntropy(_ElementwiseLoss):
    """Categorical cross-entropy for sparse or one-hot labels; see `crossentropy` for the semantics.

    Args:
        encoding: ``"sparse"`` (integer class ids) or ``"one_hot"``.
        from_logits: Whether y_pred holds logits.
        label_smoothing: In [0, 1), for both encodings.
        ignore_class: The "n/a" label: zero loss and gradient, left out of the mean.
        reduction: ``"sum_over_batch_size"`` (mean over unmasked elements), ``"sum"`` or ``"none"``.
        name: The loss name.
    """

    def __init__(self, encoding="sparse", from_logits=False, label_smoothing=0.0, ignore_class=None,
                 reduction="sum_over_batch_size", name="crossentropy"):
        super().__init__(reduction=reduction, name=name)
        self.encoding = _check_encoding(encoding)
        self.from_logits = _check_bool(from_logits, "from_logits")
        self.label_smoothing = _check_label_smoothing(label_smoothing)
        self.ignore_class = _check_ignore_class(ignore_class)

    def call(self, y_true, y_pred):
        return crossentropy(y_true, y_pred, encoding=self.encoding, from_logits=self.from_logits,
                            label_smoothing=self.label_smoothing, ignore_class=self.ignore_class)

    def get_config(self) -> dict[str, Any]:
        return {"encoding": self.encoding, "from_logits": self.from_logits, "label_smoothing": self.label_smoothing,
                "ignore_class": self.ignore_class, "reduction": self.reduction, "name": self.name}


@keras.saving.register_keras_serializable(package="xentlab")
class FocalCrossEntropy(_ElementwiseLoss):
    """Focal cross-entropy for sparse or one-hot labels; see `focal_crossentropy` for the semantics.

    Args:
        encoding: ``"sparse"`` (integer class ids) or ``"one_hot"``.
        gamma: Focusing parameter >= 0.
        alpha: None, one number >= 0, or a list of K per-class weights >= 0.
        from_logits: Whether y_pred holds logits.
        label_smoothing: In [0, 1), for both encodings.
        ignore_class: The "n/a" label: zero loss and gradient, left out of the mean.
        reduction: ``"sum_over_batch_size"`` (mean over unmasked elements), ``"sum"`` or ``"none"``.
        name: The loss name.
    """

    def __init__(self, encoding="sparse", gamma=2.0, alpha=None, from_logits=False, label_smoothing=0.0,
                 ignore_class=None, reduction="sum_over_batch_size", name="focal"):
        super().__init__(reduction=reduction, name=name)
        self.encoding = _check_encoding(encoding)
        self.gamma = _check_gamma(gamma)
        self.alpha = _check_alpha(alpha)
        self.from_logits = _check_bool(from_logits, "from_logits")
        self.label_smoothing = _check_label_smoothing(label_smoothing)
        self.ignore_class = _check_ignore_class(ignore_class)

    def call(self, y_true, y_pred):
        return focal_crossentropy(y_true, y_pred, encoding=self.encoding, gamma=self.gamma, alpha=self.alpha,
                                  from_logits=self.from_logits, label_smoothing=self.label_smoothing,
                                  ignore_class=self.ignore_class)

    def get_config(self) -> dict[str, Any]:
        return {"encoding": self.encoding, "gamma": self.gamma, "alpha": self.alpha, "from_logits": self.from_logits,
                "label_smoothing": self.label_smoothing, "ignore_class": self.ignore_class,
                "reduction": self.reduction, "name": self.name}


@keras.saving.register_keras_serializable(package="xentlab")
class BinaryCrossEntropy(_ElementwiseLoss):
    """Binary cross-entropy of one sigmoid unit; see `binary_crossentropy` for the semantics.

    Args:
        from_logits: Whether y_pred holds logits.
        label_smoothing: In [0, 1): target y * (1 - ls) + ls / 2.
        ignore_class: The "n/a" label: zero loss and gradient, left out of the mean.
        reduction: ``"sum_over_batch_size"`` (mean over unmasked elements), ``"sum"`` or ``"none"``.
        name: The loss name.
    """

    def __init__(self, from_logits=False, label_smoothing=0.0, ignore_class=None, reduction="sum_over_batch_size",
                 name="binary"):
        super().__init__(reduction=reduction, name=name)
        self.from_logits = _check_bool(from_logits, "from_logits")
        self.label_smoothing = _check_label_smoothing(label_smoothing)
        self.ignore_class = _check_ignore_class(ignore_class)

    def call(self, y_true, y_pred):
        return binary_crossentropy(y_true, y_pred, from_logits=self.from_logits,
                                   label_smoothing=self.label_smoothing, ignore_class=self.ignore_class)

    def get_config(self) -> dict[str, Any]:
        return {"from_logits": self.from_logits, "label_smoothing": self.label_smoothing,
                "ignore_class": self.ignore_class, "reduction": self.reduction, "name": self.name}


@keras.saving.register_keras_serializable(package="xentlab")
class WeightedBinaryCrossEntropy(_ElementwiseLoss):
    """Multi-label sigmoid loss with per-label positive weights; see `weighted_binary_crossentropy`.

    Args:
        pos_weight: One number > 0, or a list of L per-label weights > 0.
        from_logits: Whether y_pred holds logits.
        reduction: ``"sum_over_batch_size"``, ``"sum"`` or ``"none"`` (over examples; labels are averaged).
        name: The loss name.
    """

    def __init__(self, pos_weight=1.0, from_logits=True, reduction="sum_over_batch_size", name="weighted_binary"):
        super().__init__(reduction=reduction, name=name)
        self.pos_weight = _check_pos_weight(pos_weight)
        self.from_logits = _check_bool(from_logits, "from_logits")

    def call(self, y_true, y_pred):
        return weighted_binary_crossentropy(y_true, y_pred, pos_weight=self.pos_weight, from_logits=self.from_logits)

    def get_config(self) -> dict[str, Any]:
        return {"pos_weight": self.pos_weight, "from_logits": self.from_logits, "reduction": self.reduction,
                "name": self.name}


@keras.saving.register_keras_serializable(package="xentlab")
class LogitAdjustedCrossEntropy(_ElementwiseLoss):
    """Logit-adjusted cross-entropy on logits; see `logit_adjusted_crossentropy` for the semantics.

    Args:
        priors: K class priors > 0 (stored normalised); `class_priors` makes them from training class counts.
        tau: Scale of the adjustment, >= 0 (1: balanced softmax).
        encoding: ``"sparse"`` (integer class ids) or ``"one_hot"``.
        from_logits: Must be True.
        label_smoothing: In [0, 1), for both encodings.
        ignore_class: The "n/a" label: zero loss and gradient, left out of the mean.
        reduction: ``"sum_over_batch_size"`` (mean over unmasked elements), ``"sum"`` or ``"none"``.
        name: The loss name.
    """

    def __init__(self, priors, tau=1.0, encoding="sparse", from_logits=True, label_smoothing=0.0, ignore_class=None,
                 reduction="sum_over_batch_size", name="logit_adjusted"):
        super().__init__(reduction=reduction, name=name)
        self.priors = _check_priors(priors)
        self.tau = _check_tau(tau)
        self.encoding = _check_encoding(encoding)
        self.from_logits = _check_needs_logits(from_logits, type(self).__name__)
        self.label_smoothing = _check_label_smoothing(label_smoothing)
        self.ignore_class = _check_ignore_class(ignore_class)

    def call(self, y_true, y_pred):
        return logit_adjusted_crossentropy(y_true, y_pred, priors=self.priors, tau=self.tau, encoding=self.encoding,
                                           from_logits=self.from_logits, label_smoothing=self.label_smoothing,
                                           ignore_class=self.ignore_class)

    def get_config(self) -> dict[str, Any]:
        return {"priors": self.priors, "tau": self.tau, "encoding": self.encoding, "from_logits": self.from_logits,
                "label_smoothing": self.label_smoothing, "ignore_class": self.ignore_class,
                "reduction": self.reduction, "name": self.name}


@keras.saving.register_keras_serializable(package="xentlab")
class Poly1CrossEntropy(_ElementwiseLoss):
    """Poly-1 cross-entropy for sparse or one-hot labels; see `poly1_crossentropy` for the semantics.

    Args:
        encoding: ``"sparse"`` (integer class ids) or ``"one_hot"``.
        epsilon: Weight of the (1 - p_t) term, >= -1 (0: crossentropy).
        from_logits: Whether y_pred holds logits.
        label_smoothing: In [0, 1), for both encodings.
        ignore_class: The "n/a" label: zero loss and gradient, left out of the mean.
        reduction: ``"sum_over_batch_size"`` (mean over unmasked elements), ``"sum"`` or ``"none"``.
        name: The loss name.
    """

    def __init__(self, encoding="sparse", epsilon=1.0, from_logits=False, label_smoothing=0.0, ignore_class=None,
                 reduction="sum_over_batch_size", name="poly1"):
        super().__init__(reduction=reduction, name=name)
        self.encoding = _check_encoding(encoding)
        self.epsilon = _check_epsilon(epsilon)
        self.from_logits = _check_bool(from_logits, "from_logits")
        self.label_smoothing = _check_label_smoothing(label_smoothing)
        self.ignore_class = _check_ignore_class(ignore_class)

    def call(self, y_true, y_pred):
        return poly1_crossentropy(y_true, y_pred, epsilon=self.epsilon, encoding=self.encoding,
                                  from_logits=self.from_logits, label_smoothing=self.label_smoothing,
                                  ignore_class=self.ignore_class)

    def get_config(self) -> dict[str, Any]:
        return {"encoding": self.encoding, "epsilon": self.epsilon, "from_logits": self.from_logits,
                "label_smoothing": self.label_smoothing, "ignore_class": self.ignore_class,
                "reduction": self.reduction, "name": self.name}


# ---------------------------------------------------------------------------------------------- factory
def build_loss(
    kind, *, encoding=None, from_logits=False, label_smoothing=0.0, reduction="sum_over_batch_size",
    ignore_class=None, gamma=2.0, alpha=None, pos_weight=1.0, tau=1.0, epsilon=1.0, class_counts=None, priors=None,
):
    """Builds the loss object of one kind from plain arguments, after `check_loss_combination`.

    Args:
        kind: One of `LOSS_KINDS` (the keys of `LOSS_TABLE`).
        encoding: The label encoding, one of the kind's `LossSpec.encodings`; None takes the first of them
            (``"sparse"``, or ``"one_hot"`` for weighted_binary).
        from_logits: Whether the model outputs logits; logit_adjusted needs True.
        label_smoothing: In [0, 1); not available for weighted_binary.
        reduction: ``"sum_over_batch_size"``, ``"sum"`` or ``"none"``.
        ignore_class: The "n/a" label; not available for weighted_binary.
        gamma: focal only: focusing parameter.
        alpha: focal only: None, a number or per-class weights.
        pos_weight: weighted_binary only: positive weight, a number or per-label weights.
        tau: logit_adjusted only: scale of the log-prior shift, >= 0.
        epsilon: poly1 only: weight of the (1 - p_t) term, >= -1.
        class_counts: logit_adjusted only: the training split's examples per class (masked positions left
            out), turned into priors by `class_priors`. Other kinds ignore it, so a runner may always pass it.
        priors: logit_adjusted only: the class priors themselves, instead of class_counts.

    Returns:
        A `keras.losses.Loss`.

    Raises:
        ValueError: For an unknown kind, or an argument the kind cannot honour.
    """
    spec = check_loss_combination(kind, encoding=encoding, from_logits=from_logits, ignore_class=ignore_class,
                                  label_smoothing=label_smoothing)
    encoding = spec.encodings[0] if encoding is None else encoding
    if kind == "crossentropy":
        return CrossEntropy(encoding, from_logits, label_smoothing, ignore_class, reduction)
    if kind == "focal":
        return FocalCrossEntropy(encoding, gamma, alpha, from_logits, label_smoothing, ignore_class, reduction)
    if kind == "binary":
        return BinaryCrossEntropy(from_logits, label_smoothing, ignore_class, reduction)
    if kind == "weighted_binary":
        return WeightedBinaryCrossEntropy(pos_weight, from_logits, reduction)
    if kind == "poly1":
        return Poly1CrossEntropy(encoding, epsilon, from_logits, label_smoothing, ignore_class, reduction)
    # logit_adjusted, the last row of the table
    if (class_counts is None) == (priors is None):
        raise ValueError(
            f"loss=logit_adjusted needs the class frequencies of the training split: pass exactly one of "
            f"class_counts=[n_0, ..., n_K-1] or priors=[...] to build_loss; received class_counts={class_counts!r}, "
            f"priors={priors!r}. A runner passes xentlab.core.weighting.label_counts(y_train, K, ignore_class)."
        )
    priors = class_priors(class_counts) if priors is None else priors
    return LogitAdjustedCrossEntropy(priors, tau, encoding, from_logits, label_smoothing, ignore_class, reduction)


def build_loss_from_config(loss_cfg: dict[str, Any], *, encoding: str, ignore_class: int | None, **data_facts: Any):
    """The loss of the `loss` config group: a user's own `loss._target_` callable, or one of this module's losses
    by `loss.name` with the group's options (`data_facts`: what some losses need from the data, e.g. class counts)."""
    target = loss_cfg.get("_target_")
    if target:
        from hydra.utils import get_object

        obj = get_object(target)
        return obj() if isinstance(obj, type) else obj
    options = {k: v for k, v in loss_cfg.items() if k not in ("name", "_target_")}
    return build_loss(loss_cfg["name"], encoding=encoding, ignore_class=ignore_class, **options, **data_facts)

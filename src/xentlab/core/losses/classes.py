"""The Keras loss classes: one generic wrapper (`ElementwiseLoss`, in the style of Keras' `LossFunctionWrapper`)
and, per loss function, a class that is only its constructor: it hands the arguments to the wrapper, which checks
them once, with the function's own checks (`arguments.checked_arguments`).

`get_config` returns the checked arguments, which are the constructor's, so a saved model loads again
(`Loss.from_config` calls ``cls(**config)``); the classes are registered as ``xentlab>ClassName``.
"""

from __future__ import annotations

from typing import Any

import keras

from xentlab.core.losses.arguments import FOCAL_GAMMA, check_reduction
from xentlab.core.losses.functions import (
    binary_crossentropy,
    crossentropy,
    focal_crossentropy,
    logit_adjusted_crossentropy,
    poly1_crossentropy,
    weighted_binary_crossentropy,
)
from xentlab.core.losses.tensors import rank
from xentlab.core.targets import align_sample_weight


class ElementwiseLoss(keras.losses.Loss):
    """A per-element loss function with fixed keyword arguments, reduced the Keras way.

    Like Keras' `LossFunctionWrapper`, it stores `fn` and its keyword arguments and calls
    ``fn(y_true, y_pred, **fn_kwargs)``; the arguments read as attributes (``loss.gamma``) and are what
    `get_config` returns, beside ``reduction`` and ``name``. Unlike it, it leaves the labels' rank alone (the
    functions read sparse and one-hot labels of any rank) and aligns sample weights to the label shape.

    `Loss.__call__` turns a `_keras_mask` on the per-element losses into weights total / unmasked, so
    "sum_over_batch_size" is sum(w * loss) / (number of unmasked elements); it also divides by the number of
    replicas under tf.distribute, as for Keras' own losses. With several replicas each one divides by its own
    unmasked count, so the step's loss is the mean of the replicas' masked means: the global masked mean only
    when the replicas hold equally many unmasked elements (Keras' SparseCategoricalCrossentropy(ignore_class)
    behaves the same). Keras would broadcast (N,) weights against (N, T) losses from the left and fail, so
    sample weights get trailing axes here.

    Args:
        fn: ``fn(y_true, y_pred, **fn_kwargs)`` -> per-element losses. A function of this package checks
            `fn_kwargs` here (its `check_arguments`) and runs unchecked at every step; another runs as given.
        reduction: ``"sum_over_batch_size"`` (mean over unmasked elements), ``"sum"`` or ``"none"``.
        name: The loss name.
        **fn_kwargs: The function's keyword arguments; `get_config` returns them checked and JSON-friendly.
    """

    def __init__(self, fn, *, reduction: str = "sum_over_batch_size", name: str | None = None, **fn_kwargs: Any):
        check = getattr(fn, "check_arguments", None)  # this package's functions check their arguments, once here
        fn_kwargs = check(owner=type(self).__name__, **fn_kwargs) if check else fn_kwargs
        super().__init__(name=name or fn.__name__, reduction=check_reduction(reduction))
        self.fn = fn
        self.fn_kwargs = fn_kwargs
        self._unchecked = getattr(fn, "unchecked", fn)  # every step: the arguments were checked above

    def __getattr__(self, key: str) -> Any:
        # Only reached when normal lookup fails: the function's arguments read as attributes (loss.encoding).
        fn_kwargs = self.__dict__.get("fn_kwargs", {})
        if key in fn_kwargs:
            return fn_kwargs[key]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {key!r}")

    def call(self, y_true, y_pred):
        return self._unchecked(y_true, y_pred, **self.fn_kwargs)

    def get_config(self) -> dict[str, Any]:
        return {**self.fn_kwargs, "reduction": self.reduction, "name": self.name}

    def __call__(self, y_true, y_pred, sample_weight=None):
        if sample_weight is not None:
            sample_weight = align_sample_weight(sample_weight, rank(y_pred) - 1, dtype=self.dtype,
                                                owner=type(self).__name__)
        return super().__call__(y_true, y_pred, sample_weight=sample_weight)


def constructor_arguments(arguments: dict[str, Any]) -> dict[str, Any]:
    """A constructor's own arguments (its `locals()` on entry) for `ElementwiseLoss`: the function's keyword
    arguments, ``reduction`` and ``name``."""
    return {k: v for k, v in arguments.items() if k not in ("self", "__class__")}


# Args shared by the classes below:
#     encoding: "sparse" (integer class ids) or "one_hot".
#     from_logits: Whether y_pred holds logits.
#     label_smoothing: In [0, 1), for both encodings.
#     ignore_class: The "n/a" label: zero loss and gradient, left out of the mean (xentlab.core.targets).
#     reduction: "sum_over_batch_size" (mean over unmasked elements), "sum" or "none".
#     name: The loss name.
@keras.saving.register_keras_serializable(package="xentlab")
class CrossEntropy(ElementwiseLoss):
    """Categorical cross-entropy for sparse or one-hot labels; see `crossentropy` for the semantics."""

    def __init__(self, encoding="sparse", from_logits=False, label_smoothing=0.0, ignore_class=None,
                 reduction="sum_over_batch_size", name="crossentropy"):
        super().__init__(crossentropy, **constructor_arguments(locals()))


@keras.saving.register_keras_serializable(package="xentlab")
class FocalCrossEntropy(ElementwiseLoss):
    """Focal cross-entropy for sparse or one-hot labels; see `focal_crossentropy` for the semantics.

    Args:
        gamma: Focusing parameter >= 0.
        alpha: None, one number >= 0, or a list of K per-class weights >= 0.
    """

    def __init__(self, encoding="sparse", gamma=FOCAL_GAMMA, alpha=None, from_logits=False, label_smoothing=0.0,
                 ignore_class=None, reduction="sum_over_batch_size", name="focal"):
        super().__init__(focal_crossentropy, **constructor_arguments(locals()))


@keras.saving.register_keras_serializable(package="xentlab")
class BinaryCrossEntropy(ElementwiseLoss):
    """Binary cross-entropy of one sigmoid unit; see `binary_crossentropy` for the semantics.

    Args:
        label_smoothing: In [0, 1): target y * (1 - ls) + ls / 2.
    """

    def __init__(self, from_logits=False, label_smoothing=0.0, ignore_class=None, reduction="sum_over_batch_size",
                 name="binary"):
        super().__init__(binary_crossentropy, **constructor_arguments(locals()))


@keras.saving.register_keras_serializable(package="xentlab")
class WeightedBinaryCrossEntropy(ElementwiseLoss):
    """Multi-label sigmoid loss with per-label positive weights; see `weighted_binary_crossentropy`.

    Args:
        pos_weight: One number > 0, or a list of L per-label weights > 0.
        reduction: Over examples; labels are averaged.
    """

    def __init__(self, pos_weight=1.0, from_logits=True, reduction="sum_over_batch_size", name="weighted_binary"):
        super().__init__(weighted_binary_crossentropy, **constructor_arguments(locals()))


@keras.saving.register_keras_serializable(package="xentlab")
class LogitAdjustedCrossEntropy(ElementwiseLoss):
    """Logit-adjusted cross-entropy on logits; see `logit_adjusted_crossentropy` for the semantics.

    Args:
        priors: K class priors > 0 (stored normalised); `class_priors` makes them from training class counts.
        tau: Scale of the adjustment, >= 0 (1: balanced softmax).
        from_logits: Must be True.
    """

    def __init__(self, priors, tau=1.0, encoding="sparse", from_logits=True, label_smoothing=0.0, ignore_class=None,
                 reduction="sum_over_batch_size", name="logit_adjusted"):
        super().__init__(logit_adjusted_crossentropy, **constructor_arguments(locals()))


@keras.saving.register_keras_serializable(package="xentlab")
class Poly1CrossEntropy(ElementwiseLoss):
    """Poly-1 cross-entropy for sparse or one-hot labels; see `poly1_crossentropy` for the semantics.

    Args:
        epsilon: Weight of the (1 - p_t) term, >= -1 (0: crossentropy).
    """

    def __init__(self, encoding="sparse", epsilon=1.0, from_logits=False, label_smoothing=0.0, ignore_class=None,
                 reduction="sum_over_batch_size", name="poly1"):
        super().__init__(poly1_crossentropy, **constructor_arguments(locals()))

"""The label contract of a run, built once after the data checks, and the one rule for "is this position labelled?".

The rule: **a position is labelled unless its label is `ignore_class`**; with no ignore class every position is.
Labels are integer class ids (any shape); the one-hot view (`labels=one_hot`, made per batch by `tf.one_hot`)
carries an id in [0, K) as a row with its 1 at that id and an id outside [0, K) as an all-zero row. The data
checks admit only ids in [0, K) and the ignore class, so an all-zero row is the view of the ignore class: with an
ignore class set it is never labelled, and an ignore class inside [0, K) is also recognised by its hot entry.

Why this rule and not "every negative id is n/a": it is what `labels.ignore_class` says, Keras'
`ignore_class` means the same, and an id that is neither a class nor the ignore class stays an error (the data
checks name it) instead of being dropped in silence. Without an ignore class nothing is masked, at no cost.

`valid_mask_np` (numpy, integer ids) and `valid_mask_tf` (TensorFlow, both encodings) state the rule; losses,
metrics, the tf.data pipeline, class counts, calibration and the evaluation figures all call one of them.
`align_sample_weight` is the one way sample weights meet the labels' positions (losses, metrics, the multi-worker
loop). TensorFlow and Keras are imported inside those functions only, so the numpy side stays light.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral
from typing import Any

import numpy as np

from xentlab.choices import Encoding
from xentlab.errors import ConfigError, ConfigTypeError, LabelError


def valid_mask_np(y: Any, ignore_class: int | None) -> np.ndarray:
    """True where a label is labelled (not `ignore_class`); integer class ids of any shape, one bool each."""
    y = np.asarray(y)
    if ignore_class is None:
        return np.ones(y.shape, dtype=bool)
    return y != ignore_class


def valid_mask_tf(y_true: Any, *, encoding: str, ignore_class: int | None):
    """`valid_mask_np` in TensorFlow, for integer ids or their one-hot view; None when nothing can be masked.

    Args:
        y_true: Integer (or whole float) class ids of any shape (``encoding="sparse"``; squeeze a trailing axis
            of 1 first), or one-hot rows (..., K) (``encoding="one_hot"``).
        encoding: ``"sparse"`` or ``"one_hot"``.
        ignore_class: The n/a id, inside [0, K) or outside (e.g. -1); None masks nothing.

    Returns:
        A bool tensor of the label shape (one-hot: without the class axis), or None for ``ignore_class=None``:
        every position is labelled and callers skip the masking ops.
    """
    if ignore_class is None:
        return None
    import tensorflow as tf

    y_true = tf.convert_to_tensor(y_true)
    if Encoding.parse(encoding, "encoding") is Encoding.sparse:
        return tf.not_equal(y_true, tf.cast(ignore_class, y_true.dtype))
    valid = tf.reduce_any(tf.not_equal(y_true, 0), axis=-1)  # an all-zero row: the view of an id outside [0, K)
    k = y_true.shape[-1]
    if k is None:  # the class count known only at run time
        hot = tf.gather(y_true, tf.clip_by_value(ignore_class, 0, tf.shape(y_true)[-1] - 1), axis=-1)
        inside = tf.logical_and(ignore_class >= 0, ignore_class < tf.shape(y_true)[-1])
        return tf.logical_and(valid, tf.logical_or(tf.logical_not(inside), hot <= 0.5))
    if 0 <= ignore_class < k:
        # <= 0.5 rather than == 0: also right for rows that arrive already smoothed
        valid = tf.logical_and(valid, y_true[..., ignore_class] <= 0.5)
    return valid


def align_sample_weight(sample_weight: Any, label_rank: int, *, dtype: Any = "float32", owner: str = ""):
    """Sample weights of rank `label_rank`, to broadcast over the labels' positions: trailing axes of 1 beyond it
    squeezed, trailing axes of 1 added below it, so (N,) or (N, 1) weights for (N, T) labels become (N, 1).

    The one alignment of the losses (`ElementwiseLoss`), the metrics and the multi-worker loop's loss: Keras would
    broadcast (N,) weights against (N, T) values from the left and fail. A scalar stays a scalar.

    Args:
        sample_weight: A scalar, one weight per example (N,) or (N, 1), or one per position (the label shape).
        label_rank: The rank of the labels' positions (the per-element losses; y_pred's rank minus its class axis).
        dtype: The weights' dtype.
        owner: Who asks, to name in the error (a loss class's name).

    Raises:
        LabelError: For weights with more axes than the labels, other than trailing axes of 1.
    """
    from keras import ops

    w = ops.cast(sample_weight, dtype)
    while len(w.shape) > label_rank and w.shape[-1] == 1:
        w = ops.squeeze(w, axis=-1)
    if len(w.shape) > label_rank:
        raise LabelError(
            f"{owner + ': ' if owner else ''}sample_weight must broadcast to the per-element loss shape (rank "
            f"{label_rank}); received sample_weight.shape={tuple(w.shape)}. Pass one weight per example (N,) or per "
            f"element (the label shape)."
        )
    while 0 < len(w.shape) < label_rank:
        w = ops.expand_dims(w, axis=-1)
    return w


def labelled_rows(y: Any, rows: Any, ignore_class: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Every labelled position as one row: labels (M,) and `rows` (M, K) (outputs or probabilities), the
    positions `valid_mask_np` rejects dropped.

    Args:
        y: Integer class ids of any shape S.
        rows: An array of shape S + (K,).
        ignore_class: The n/a id, or None.
    """
    y = np.asarray(y)
    rows = np.asarray(rows)
    if rows.shape[:-1] != y.shape:
        raise LabelError(
            f"labels of shape {y.shape} do not fit outputs of shape {rows.shape}: expected outputs of shape "
            f"labels.shape + (classes,). Pass the integer labels, not their one-hot view."
        )
    keep = valid_mask_np(y, ignore_class).reshape(-1)
    return y.reshape(-1)[keep], rows.reshape(-1, rows.shape[-1])[keep]


@dataclass(frozen=True)
class LabelContract:
    """What the labels of one run are, stated once after the data checks; every builder reads it.

    Attributes:
        num_classes: K, classes per labelled position (2 for one sigmoid unit as well).
        encoding: ``"sparse"`` (integer ids) or ``"one_hot"`` (their one-hot view, made per batch).
        ignore_class: The n/a id (labels.ignore_class): zero loss and gradient, left out of every metric, count
            and figure; None when every position is labelled.
        label_shape: One example's label shape: () one label, (T,) a sequence, (H,) several heads.
        from_logits: Whether the model outputs logits (linear head) or probabilities.
        num_heads: H when the H label positions are separate classifications (per-head metrics and figures);
            None when all positions belong to one classification.
    """

    num_classes: int
    encoding: str = Encoding.sparse.value
    ignore_class: int | None = None
    label_shape: tuple[int, ...] = ()
    from_logits: bool = False
    num_heads: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, Integral):
            raise ConfigTypeError(f"num_classes must be an integer >= 2; received num_classes={self.num_classes!r}")
        if self.num_classes < 2:
            raise ConfigError(
                f"classification needs at least 2 classes; received num_classes={self.num_classes}. Check the "
                f"label column or loader: it found fewer than 2 classes"
            )
        if self.ignore_class is not None and (isinstance(self.ignore_class, bool)
                                              or not isinstance(self.ignore_class, Integral)):
            raise ConfigTypeError(
                f"labels.ignore_class must be an integer class id or null; received {self.ignore_class!r}. Use "
                f"e.g. -1 for an n/a label outside the classes"
            )
        if not isinstance(self.from_logits, (bool, np.bool_)):
            raise ConfigTypeError(f"from_logits must be True or False; received from_logits={self.from_logits!r}")
        shape = tuple(int(d) for d in self.label_shape)
        if self.num_heads is not None and shape != (self.num_heads,):
            raise LabelError(
                f"{self.num_heads} separate heads need labels of shape ({self.num_heads},) per example; the data "
                f"has labels of shape {shape}. Check that data= and model= go together"
            )
        object.__setattr__(self, "num_classes", int(self.num_classes))
        object.__setattr__(self, "encoding", Encoding.parse(self.encoding, "labels.encoding").value)
        object.__setattr__(self, "ignore_class", None if self.ignore_class is None else int(self.ignore_class))
        object.__setattr__(self, "label_shape", shape)
        object.__setattr__(self, "from_logits", bool(self.from_logits))

    @classmethod
    def from_labels(cls, y_train: Any, *, num_classes: int, encoding: str, ignore_class: int | None,
                    from_logits: bool, separate_heads: bool = False) -> LabelContract:
        """The contract of checked training labels (N, *label_shape); `separate_heads`: the model scores each
        position of (N, H) labels as its own classification (model=multi_head)."""
        label_shape = tuple(np.shape(y_train)[1:])
        heads = label_shape[0] if separate_heads and len(label_shape) == 1 else None
        return cls(num_classes, encoding, ignore_class, label_shape, from_logits, heads)

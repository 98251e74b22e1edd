"""Validation of data and of config combinations, in one place, before any training.

Every check raises `CheckError` saying what was wrong, what was expected and the override that fixes it.
"""

from __future__ import annotations

import numpy as np

from xentlab.data import DataBundle


class CheckError(ValueError):
    """A config combination or data set that would train wrongly or silently produce nonsense."""


def squeeze_labels(y: np.ndarray) -> np.ndarray:
    """(N, 1) labels become (N,) explicitly (Keras would guess); other shapes are returned unchanged."""
    return y[:, 0] if y.ndim == 2 and y.shape[1] == 1 else y


def _looks_one_hot(y: np.ndarray, num_classes: int) -> bool:
    if y.ndim < 2 or y.shape[-1] != num_classes or y.size == 0:
        return False
    binary = np.isin(y, (0, 1)).all()
    return bool(binary and np.allclose(y.sum(axis=-1), 1))


def check_labels(y: np.ndarray, *, split: str, num_classes: int, ignore_class: int | None) -> np.ndarray:
    """Checks one split's labels are integer class ids in range; returns them as int64 (squeezed)."""
    y = squeeze_labels(np.asarray(y))
    if _looks_one_hot(y, num_classes):
        raise CheckError(
            f"{split} labels have shape {y.shape} and look one-hot, but the pipeline expects integer class ids "
            f"(shape {y.shape[:-1]}); convert them with y.argmax(-1) in the loader. A one-hot view is made "
            f"per batch by labels=one_hot"
        )
    if y.dtype.kind == "f":
        if not np.isfinite(y).all():
            raise CheckError(f"{split} labels contain NaN or inf; expected integer class ids in [0, {num_classes})")
        fractional = y[y != np.round(y)]
        if fractional.size:
            raise CheckError(
                f"{split} labels contain non-whole numbers (e.g. {fractional[:3].tolist()}); Keras would "
                f"silently truncate 1.7 to 1. Expected integer class ids in [0, {num_classes})"
            )
    elif y.dtype.kind not in "iub":
        raise CheckError(f"{split} labels have dtype {y.dtype}; expected integer class ids in [0, {num_classes})")
    y = y.astype("int64")
    valid = y if ignore_class is None else y[y != ignore_class]
    bad = valid[(valid < 0) | (valid >= num_classes)]
    if bad.size:
        hint = "" if ignore_class is not None else "; if one of them marks 'n/a', set labels.ignore_class=ID"
        raise CheckError(
            f"{split} labels out of range: found {sorted(set(bad.tolist()))[:5]} but num_classes={num_classes} "
            f"expects ids in [0, {num_classes}) (on GPU/XLA these silently give NaN instead of an error){hint}"
        )
    return y


def check_features(x: np.ndarray | None, *, split: str) -> None:
    """Rejects missing and empty splits and NaN/inf features (file paths of streamed sources have none)."""
    if x is None:
        raise CheckError(f"the {split} split is missing; the loader must return train, val and test splits")
    if len(x) == 0:
        raise CheckError(f"the {split} split is empty; check data.limit, data.val_fraction and the source file")
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        count = int((~np.isfinite(x)).sum())
        raise CheckError(f"{split} features contain {count} NaN or inf values; clean or impute them in the loader")


def check_bundle(bundle: DataBundle, *, ignore_class: int | None) -> DataBundle:
    """Runs the data checks on every split and writes back the cleaned (squeezed, int64) labels."""
    for split, (x, y) in bundle.splits().items():
        check_features(x, split=split)
        if len(x) != len(y):
            raise CheckError(f"{split} split has {len(x)} feature rows but {len(y)} labels; they must match")
        setattr(bundle, f"y_{split}", check_labels(y, split=split, num_classes=bundle.num_classes,
                                                    ignore_class=ignore_class))
    return bundle


BINARY_LOSSES = ("binary",)


def check_loss_and_labels(*, loss: str, encoding: str, num_classes: int) -> None:
    """Rejects loss x label combinations that cannot go together, with the override that fixes it."""
    if loss in BINARY_LOSSES and num_classes != 2:
        raise CheckError(
            f"loss={loss} (one sigmoid unit) needs 2 classes, the data has {num_classes}; "
            f"use loss=crossentropy (softmax over {num_classes} classes)"
        )
    if loss in BINARY_LOSSES and encoding != "sparse":
        raise CheckError(f"loss={loss} takes 0/1 integer labels; set labels=sparse (got labels={encoding})")
    if loss == "weighted_binary" and encoding != "one_hot":
        raise CheckError(
            f"loss=weighted_binary scores each class as its own sigmoid label and needs the one-hot view; "
            f"set labels=one_hot (got labels={encoding})"
        )


def check_model_output(
    *, output_shape: tuple, label_shape: tuple, units: int, num_classes: int, head_activation: str | None,
    head_dtype: str, from_logits: bool, single_unit: bool,
) -> None:
    """Checks the model head against the data (class count, label rank) and the loss (logits vs probabilities)."""
    if output_shape[-1] != units:
        raise CheckError(
            f"the model head has {output_shape[-1]} units but the data has {num_classes} classes "
            f"(expected {units}); the last layer must be Dense({units})"
        )
    if len(output_shape) - 2 != len(label_shape):  # output: (batch, *label_shape, units)
        raise CheckError(
            f"model output shape {output_shape} needs per-example labels of shape {output_shape[1:-1]}, "
            f"got per-example labels of shape {label_shape}; check that data= and model= go together"
        )
    if head_dtype != "float32":
        raise CheckError(
            f"the model head computes in {head_dtype}; under mixed precision it must be float32 "
            f"(Dense(..., dtype='float32')) or the loss loses precision and may overflow"
        )
    normaliser = "sigmoid" if single_unit else "softmax"
    if from_logits and head_activation == normaliser:
        raise CheckError(
            f"loss.from_logits=true but the model head already applies {normaliser}: the loss would apply it "
            f"twice. Set loss.from_logits=false, or make the head linear"
        )
    if not from_logits and head_activation not in (normaliser,):
        raise CheckError(
            f"loss.from_logits=false expects probabilities, but the model head's activation is "
            f"{head_activation or 'linear'}; set loss.from_logits=true, or end the model with {normaliser}"
        )


def check_batch(*, batch_size: int, replicas: int, train_size: int) -> None:
    """The global batch must split evenly over replicas and not exceed what the training split can fill."""
    if batch_size < 1:
        raise CheckError(f"trainer.batch_size must be >= 1, got {batch_size}")
    if batch_size % replicas:
        lower = batch_size - batch_size % replicas
        raise CheckError(
            f"trainer.batch_size={batch_size} is not divisible by the {replicas} replicas; "
            f"use trainer.batch_size={lower or replicas} or {lower + replicas}"
        )

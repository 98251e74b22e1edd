"""The validators of the run: the config's values alone (`check_config`), then the data and the combinations of
config, data and hardware, all run by the pre-flight pass (xentlab.config.preflight) before anything is built;
`check_tracking`, the values needed to open the store, runs before the store is opened.

Every check raises `CheckError` saying what was wrong, what was expected and the override that fixes it.
"""

from __future__ import annotations

import math

import numpy as np

from xentlab.core.losses import check_loss_combination
from xentlab.core.targets import valid_mask_np
from xentlab.data import DataBundle
from xentlab.errors import ExpectedError
from xentlab.metric_table import check_extra


class CheckError(ExpectedError, ValueError):
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
    valid = y[valid_mask_np(y, ignore_class)]
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


def unused_ignore_class(bundle: DataBundle, *, ignore_class: int | None) -> str | None:
    """A warning when labels.ignore_class is set but no label of any split carries it: almost always a wrong id
    (the n/a label of the data is another value), so nothing is masked. None when all is well."""
    if ignore_class is None:
        return None
    if any(not valid_mask_np(y, ignore_class).all() for _, y in bundle.splits().values()):
        return None
    labels = np.unique(np.concatenate([np.asarray(y).reshape(-1) for _, y in bundle.splits().values()]))
    return (
        f"labels.ignore_class={ignore_class} masks nothing: no label of any split equals {ignore_class} (labels "
        f"seen: {labels[:12].tolist()}{' ...' if len(labels) > 12 else ''}). If the data marks n/a with another "
        f"id, set labels.ignore_class to it; with no n/a labels, set labels.ignore_class=null"
    )


def check_loss_and_labels(
    *, loss: str, encoding: str, num_classes: int, from_logits: bool | None = None, ignore_class: int | None = None,
    label_smoothing: float | None = None,
) -> None:
    """Rejects loss x labels x head combinations that cannot go together, with the override that fixes it.

    The rules are the rows of `xentlab.core.losses.LOSS_TABLE` (`check_loss_combination`), which `build_loss`
    applies too; checking here fails the run before any data pipeline or model is built. Arguments left at
    None are not checked here.
    """
    try:
        check_loss_combination(loss, encoding=encoding, from_logits=from_logits, num_classes=num_classes,
                               ignore_class=ignore_class, label_smoothing=label_smoothing)
    except ValueError as error:
        raise CheckError(str(error)) from None


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


KNOWN_STORE_SCHEMES = ("sqlite", "file", "http", "https", "postgresql", "mysql", "mssql", "databricks")


def _refuse(key: str, value, allowed: str, fix: str) -> None:
    raise CheckError(f"{key}={value!r} is not allowed: {allowed}; {fix}")


def check_tracking(tracking: dict) -> None:
    """The tracking values needed to open the store at all (checked before it is opened: no run can hold
    these errors)."""
    if not str(tracking["experiment"] or "").strip():
        _refuse("tracking.experiment", tracking["experiment"], "an experiment needs a non-empty name",
                "e.g. tracking.experiment=xentlab")
    uri = tracking["uri"]
    if uri and "://" in uri and uri.split("://", 1)[0].split("+", 1)[0] not in KNOWN_STORE_SCHEMES:
        _refuse("tracking.uri", _masked(uri), f"the scheme must be one of {list(KNOWN_STORE_SCHEMES)}",
                "e.g. tracking.uri=http://127.0.0.1:5000, or null for outputs/mlflow.db")
    if tracking["system_metrics_interval_s"] <= 0:
        _refuse("tracking.system_metrics_interval_s", tracking["system_metrics_interval_s"], "it must be > 0",
                "e.g. tracking.system_metrics_interval_s=10")


def check_config(config: dict) -> dict:
    """Checks the values a schema's types cannot: ranges, finiteness, shares of the data.

    Runs first thing in the run (so the run is FAILED with the message), before TensorFlow builds anything;
    every message names the key, the value given, what is allowed and the override that fixes it.
    Returns `config` unchanged.
    """
    trainer, data = config["trainer"], config["data"]
    refuse = _refuse

    if trainer["epochs"] < 1:
        refuse("trainer.epochs", trainer["epochs"], "it must be >= 1 (one pass over the training split)",
               "e.g. trainer.epochs=12")
    if trainer["batch_size"] < 1:
        refuse("trainer.batch_size", trainer["batch_size"], "it must be >= 1", "e.g. trainer.batch_size=128")
    for key in ("validate_every", "checkpoint_every"):
        if trainer[key] < 1:
            refuse(f"trainer.{key}", trainer[key], "a number of epochs >= 1 (1: every epoch)",
                   f"e.g. trainer.{key}=1")
    if not 0 <= trainer["seed"] <= 2**32 - 1:
        refuse("trainer.seed", trainer["seed"], "seeds are integers in [0, 2**32 - 1]", "e.g. trainer.seed=0")
    lr = config["optimizer"]["learning_rate"]
    if not math.isfinite(lr) or lr <= 0:
        refuse("optimizer.learning_rate", lr, "it must be a finite number > 0", "e.g. optimizer.learning_rate=0.001")
    for key in ("val_fraction", "test_fraction"):
        if key in data and not 0.0 < data[key] < 1.0:
            refuse(f"data.{key}", data[key], "a share of the labelled pool strictly between 0 and 1",
                   f"e.g. data.{key}=0.15")
    if data.get("limit") is not None and data["limit"] < 1:
        refuse("data.limit", data["limit"], "a positive number of training examples, or null for all",
               "e.g. data.limit=1000")
    check_extra(config.get("metrics", {}).get("extra"))  # known metric names only (xentlab.metric_table)
    return config


def _masked(uri: str) -> str:
    from xentlab.masking import mask_text

    return mask_text(uri)

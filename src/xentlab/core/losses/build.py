"""`build_loss`: the loss object of one kind from plain arguments, after the table's checks; and the loss of the
`loss` config group, with the labels' side from the run's `LabelContract`."""

from __future__ import annotations

from typing import Any

from xentlab.core.losses.arguments import FOCAL_GAMMA
from xentlab.core.losses.classes import (
    BinaryCrossEntropy,
    CrossEntropy,
    FocalCrossEntropy,
    LogitAdjustedCrossEntropy,
    Poly1CrossEntropy,
    WeightedBinaryCrossEntropy,
)
from xentlab.core.losses.functions import class_priors
from xentlab.core.losses.table import check_loss_combination
from xentlab.core.targets import LabelContract
from xentlab.errors import ConfigError


def build_loss(
    kind, *, encoding=None, from_logits=False, label_smoothing=0.0, reduction="sum_over_batch_size",
    ignore_class=None, gamma=FOCAL_GAMMA, alpha=None, pos_weight=1.0, tau=1.0, epsilon=1.0, class_counts=None,
    priors=None,
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
        ConfigError: (a ValueError) For an unknown kind, or an argument the kind cannot honour.
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
        raise ConfigError(
            f"loss=logit_adjusted needs the class frequencies of the training split: pass exactly one of "
            f"class_counts=[n_0, ..., n_K-1] or priors=[...] to build_loss; received class_counts={class_counts!r}, "
            f"priors={priors!r}. A runner passes xentlab.core.weighting.label_counts(y_train, labels)."
        )
    priors = class_priors(class_counts) if priors is None else priors
    return LogitAdjustedCrossEntropy(priors, tau, encoding, from_logits, label_smoothing, ignore_class, reduction)


def build_loss_from_config(loss_cfg: dict[str, Any], labels: LabelContract, **data_facts: Any):
    """The loss of the `loss` config group: a user's own `loss._target_` callable, or one of this package's losses
    by `loss.name` with the group's options.

    Args:
        loss_cfg: The resolved `loss` group (name, from_logits, label_smoothing, reduction and the kind's options).
        labels: The run's label contract: its encoding, ignore class and from_logits are the loss's.
        **data_facts: What some losses need from the data (class_counts for logit_adjusted).
    """
    target = loss_cfg.get("_target_")
    if target:
        from hydra.utils import get_object

        obj = get_object(target)
        return obj() if isinstance(obj, type) else obj
    options = {k: v for k, v in loss_cfg.items() if k not in ("name", "_target_", "from_logits")}
    return build_loss(loss_cfg["name"], encoding=labels.encoding, ignore_class=labels.ignore_class,
                      from_logits=labels.from_logits, **options, **data_facts)

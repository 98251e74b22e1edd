"""The metrics a training run compiles: the contract set of `xentlab.core.metrics`, class-wise and adaptive
calibration error, and the shot-group accuracies of a training split whose class counts vary."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from xentlab.core.calibration_metrics import CALIBRATION_METRICS, calibration_metrics
from xentlab.core.metrics import CONTRACT_METRICS, build_metrics
from xentlab.core.shot_metrics import SHOT_METRICS, shot_metrics

# What the runner logs as `test_<name>` when the model reports it (shot groups only when they exist).
EVALUATED_METRICS = (*CONTRACT_METRICS, *CALIBRATION_METRICS, *SHOT_METRICS)


def build_run_metrics(num_classes: int, *, encoding: str = "sparse", from_logits: bool = False,
                      ignore_class: int | None = None, num_heads: int | None = None,
                      shot_groups: Mapping[str, Sequence[int]] | None = None) -> list:
    """`build_metrics` plus classwise_ece and adaptive_ece (also per head, `<name>_head<h>`) and, with
    `shot_groups` ({"many": [class ids], "medium": [...], "few": [...]}), `<group>_shot_accuracy` per non-empty
    group over every labelled position.

    Args:
        num_classes: Classes per output position (2 for one sigmoid unit).
        encoding: ``"sparse"`` or ``"one_hot"``.
        from_logits: Whether the model outputs logits.
        ignore_class: The "n/a" label, left out of every metric.
        num_heads: H for a model with separate heads, else None.
        shot_groups: The training split's shot groups (`xentlab.data.long_tail.shot_groups`), or None.

    Returns:
        A list of `keras.metrics.Metric` for `model.compile(metrics=...)`.
    """
    common = {"encoding": encoding, "from_logits": from_logits, "ignore_class": ignore_class}
    metrics = build_metrics(num_classes, num_heads=num_heads, **common)
    metrics += calibration_metrics(num_classes, **common)
    for h in range(num_heads or 0):
        metrics += calibration_metrics(num_classes, head=h, suffix=f"_head{h}", **common)
    return metrics + shot_metrics(num_classes, shot_groups, **common)

"""The metrics a training run compiles: the contract set of `xentlab.core.metrics`, class-wise and adaptive
calibration error, and the shot-group accuracies of a training split whose class counts vary."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from xentlab.core.calibration_metrics import CALIBRATION_METRICS, calibration_metrics
from xentlab.core.metrics import CONTRACT_METRICS, build_metrics
from xentlab.core.shot_metrics import SHOT_METRICS, shot_metrics
from xentlab.core.targets import LabelContract

# What the runner logs as `test_<name>` when the model reports it (shot groups only when they exist).
EVALUATED_METRICS = (*CONTRACT_METRICS, *CALIBRATION_METRICS, *SHOT_METRICS)


def build_run_metrics(labels: LabelContract, shot_groups: Mapping[str, Sequence[int]] | None = None) -> list:
    """`build_metrics` plus classwise_ece and adaptive_ece (also per separate head, `<name>_head<h>`) and, with
    `shot_groups` ({"many": [class ids], "medium": [...], "few": [...]}), `<group>_shot_accuracy` per non-empty
    group over every labelled position.

    Args:
        labels: The run's label contract (see `build_metrics`).
        shot_groups: The training split's shot groups (`xentlab.data.long_tail.shot_groups`), or None.

    Returns:
        A list of `keras.metrics.Metric` for `model.compile(metrics=...)`.
    """
    k = labels.num_classes
    common = {"encoding": labels.encoding, "from_logits": labels.from_logits, "ignore_class": labels.ignore_class}
    metrics = build_metrics(labels) + calibration_metrics(k, **common)
    for h in range(labels.num_heads or 0):
        metrics += calibration_metrics(k, head=h, suffix=f"_head{h}", **common)
    return metrics + shot_metrics(k, shot_groups, **common)

"""The metrics a training run compiles, read from the metric table (xentlab.metric_table) for the run's task: a
classifier's full set (accuracy, AUC, NLL, calibration, imbalance-aware scores, shot-group accuracies), a language
model's nll and next-token accuracy, plus any streaming metric asked for by name (`metrics.extra`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

from xentlab.core.calibration_metrics import SparseAdaptiveECE, SparseClasswiseECE
from xentlab.core.metrics import (
    SparseAccuracy,
    SparseAUC,
    SparseBrier,
    SparseConfusionStatistics,
    SparseECE,
    SparseNLL,
)
from xentlab.core.models import FITS, DataShapes, capabilities
from xentlab.core.shot_metrics import SHOT_GROUPS, SparseGroupRecall
from xentlab.core.targets import LabelContract
from xentlab.metric_table import CLASSIFICATION, LANGUAGE_MODEL, check_extra, evaluated_names, task_metrics

# What the runner logs as `test_<name>` when the model reports it (shot groups only when they exist).
EVALUATED_METRICS = evaluated_names()
# How each streaming computation of the table is built: (classes K, Keras arguments) -> metric;
# the confusion statistics are built together (SparseConfusionStatistics), shot groups from the training split.
BUILDERS: dict[str, Callable] = {
    "accuracy": lambda k, **c: SparseAccuracy(**c),
    "auc": lambda k, **c: SparseAUC(k, **c),
    "nll": lambda k, **c: SparseNLL(**c),
    "ece": lambda k, **c: SparseECE(**c),
    "brier": lambda k, **c: SparseBrier(**c),
    "classwise_ece": lambda k, **c: SparseClasswiseECE(k, **c),
    "adaptive_ece": lambda k, **c: SparseAdaptiveECE(**c),
}


def metric_task(model_name: str, data: DataShapes) -> str:
    """The table's task of a run: a language model, i.e. a sequence model over a vocabulary (the char LSTM, or any
    model, a user's too, on token ids labelled per position: the next-token data the char LSTM fits), or a
    classifier."""
    language_model = capabilities(model_name).generates_text or FITS["char_lstm"][1](data)
    return LANGUAGE_MODEL if language_model else CLASSIFICATION


def build_run_metrics(labels: LabelContract, shot_groups: Mapping[str, Sequence[int]] | None = None, *,
                      task: str = CLASSIFICATION, extra: Iterable[str] = ()) -> list:
    """The streaming metrics of `task` in the table's order (each also per separate head, `<name>_head<h>`) and,
    with `shot_groups` ({"many": [class ids], "medium": [...], "few": [...]}), `<group>_shot_accuracy` per
    non-empty group over every labelled position.

    Names are the same for every loss, label encoding and head type, so MLflow compares runs side by side.

    Args:
        labels: The run's label contract: classes per position (2 for one sigmoid unit), the encoding the model
            is fitted on, whether it outputs logits, the ignore class (left out of every metric) and, for a
            multi-head model (labels (N, H)), H, which adds each metric per head as `<name>_head<h>`.
        shot_groups: The training split's shot groups (`xentlab.data.long_tail.shot_groups`), or None.
        task: "classification" (every metric) or "language_model" (nll and next-token accuracy).
        extra: More streaming metrics by name (`metrics.extra`); unknown names raise ConfigError.

    Returns:
        A list of `keras.metrics.Metric` for `model.compile(metrics=...)`.
    """
    rows = task_metrics(task, check_extra(list(extra)))
    k = labels.num_classes
    common = {"encoding": labels.encoding, "from_logits": labels.from_logits, "ignore_class": labels.ignore_class}
    per_position = [m for m in rows if m.computed in BUILDERS]
    # The confusion matrix's statistics share one matrix: one metric updates it once per batch for all of them.
    confusion = tuple(m.name for m in rows if m.computed == "confusion")

    def one_set(head: int | None, suffix: str) -> list:
        built = [BUILDERS[m.computed](k, name=f"{m.name}{suffix}", head=head, **common) for m in per_position]
        if confusion:
            built.append(SparseConfusionStatistics(k, statistics=confusion, suffix=suffix, name=f"confusion{suffix}",
                                                   head=head, **common))
        return built

    metrics = one_set(None, "")
    for h in range(labels.num_heads or 0):
        metrics += one_set(h, f"_head{h}")
    shots = {m.name for m in rows if m.computed == "shot"}
    return metrics + [SparseGroupRecall(k, classes=shot_groups[g], name=f"{g}_shot_accuracy", **common)
                      for g in SHOT_GROUPS if shot_groups and shot_groups.get(g) and f"{g}_shot_accuracy" in shots]


def build_metrics(labels: LabelContract) -> list:
    """A classifier's per-position metrics (`build_run_metrics` without shot groups)."""
    return build_run_metrics(labels)

"""Every metric xentlab logs, in one table: name, direction, report section, whether it is a loss on its own scale,
how it is computed and for which task; also the sweep objective and metric names made from class names.

The metric set (core.metric_set), post-hoc and calibrated scores (core), the report's columns, directions and
headline (report) and the sweep objective (cli, tracking) all read this table, so a metric is added in one row.
It sits at the package's ground, beside errors.py, because every layer reads it and it imports nothing heavier than
the standard library.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from xentlab.errors import ConfigError

CLASSIFICATION = "classification"
LANGUAGE_MODEL = "language_model"  # a sequence model over a vocabulary, labelled per position (next token)
BOTH = frozenset({CLASSIFICATION, LANGUAGE_MODEL})
# How a metric is computed. Streaming (a Keras metric per batch, xentlab.core.metric_set builds it): accuracy, auc,
# nll, ece, brier, confusion (a statistic of the K x K confusion matrix), classwise_ece, adaptive_ece, shot (recall
# over a shot group). Not streaming: loss (the training objective, Keras' own), from_nll (bpc and perplexity, read
# from nll after an epoch or the test), run (the run's own facts: epochs, wall time, throughput).
STREAMING = ("accuracy", "auc", "nll", "ece", "brier", "confusion", "classwise_ece", "adaptive_ece", "shot")
NO_POSITION = "no labelled position in the split"


@dataclass(frozen=True)
class Metric:
    """One row of the table.

    Attributes:
        name: the base name: `<name>` per training epoch, `val_<name>` per epoch, `test_<name>` after training.
        direction: "min" or "max" (which way is better, what the report ranks by); None: not ranked.
        computed: how it is computed (see STREAMING and the comment above it).
        tasks: the tasks that compute it without being asked; any other streaming metric is opt-in by name
            (`metrics.extra`).
        report: the report's columns of it: "val" (`val_<name>`), "best_val" (`best_val_<name>`, the best epoch),
            "test" (`test_<name>`) or "" (the bare name, for run facts).
        section: the report section of its columns when not the split's own ("long_tail", "cost").
        own_scale: a loss on its own scale: values compare across runs only when every run trains the same loss.
        posthoc: scored again after post-hoc logit adjustment (`test_<name>_posthoc`, core.posthoc); "report" also
            puts `test_<name>_posthoc` in the report's long-tail section.
        calibrated: scored again after temperature scaling (`test_<name>_calibrated`, core.calibration).
        headline: what the metric tells in the sweep's headline, after the primary metric (None: not listed).
        summary: its place in the end-of-run line (`test_<name>`, the first five a run has; 0: not there).
        undefined_when: when a split leaves it undefined (its value is NaN, never logged, and the run says once
            why); None: a non-finite value means a diverged model, and is logged as it is.
    """

    name: str
    direction: str | None
    computed: str
    tasks: frozenset = frozenset({CLASSIFICATION})
    report: tuple[str, ...] = ("val", "test")
    section: str | None = None
    own_scale: bool = False
    posthoc: bool | str = False
    calibrated: bool = False
    headline: str | None = None
    summary: int = 0
    undefined_when: str | None = None


METRICS: tuple[Metric, ...] = (
    Metric("loss", "min", "loss", BOTH, ("val", "best_val", "test"), own_scale=True),
    # Cross-entropy of the predictions: one scale for every loss variant (what a sweep ranks by).
    Metric("nll", "min", "nll", BOTH, posthoc=True, calibrated=True, summary=4),
    Metric("ece", "min", "ece", posthoc=True, calibrated=True, headline="calibration", summary=6),
    Metric("classwise_ece", "min", "classwise_ece", report=("test",), posthoc=True, calibrated=True),  # Kull 2019
    Metric("adaptive_ece", "min", "adaptive_ece", report=("test",), posthoc=True, calibrated=True),  # equal-mass
    Metric("brier", "min", "brier", posthoc=True, calibrated=True),
    # A language model's accuracy is next-token accuracy.
    Metric("accuracy", "max", "accuracy", BOTH, posthoc=True, summary=1),
    Metric("balanced_accuracy", "max", "confusion", posthoc="report", headline="minority classes", summary=2,
           undefined_when=NO_POSITION),
    Metric("macro_f1", "max", "confusion", posthoc=True, undefined_when=NO_POSITION),
    Metric("worst_class_recall", "max", "confusion", posthoc=True, headline="minority classes",
           undefined_when=NO_POSITION),
    Metric("auc", "max", "auc", summary=3, undefined_when="no class has both positive and negative labels in the split "
                                               "(a split of one class)"),
    Metric("bpc", "min", "from_nll", frozenset({LANGUAGE_MODEL}), headline="held-out text", summary=5),  # nll/ln 2
    Metric("perplexity", "min", "from_nll", frozenset({LANGUAGE_MODEL}), ("test",), summary=7),  # exp(nll)
    # Recall averaged over the classes with > 100 / 20..100 / < 20 training examples (data.shot_thresholds).
    Metric("many_shot_accuracy", "max", "shot", report=("test",), section="long_tail", posthoc=True,
           undefined_when="no class of the group is in the split"),
    Metric("medium_shot_accuracy", "max", "shot", report=("test",), section="long_tail", posthoc=True,
           undefined_when="no class of the group is in the split"),
    Metric("few_shot_accuracy", "max", "shot", report=("test",), section="long_tail", posthoc="report",
           undefined_when="no class of the group is in the split"),
    # Per class, `test_recall_<class>` (class_metric_names), with the evaluation figures of up to 12 classes.
    Metric("recall", "max", "per_class", frozenset(), (), undefined_when="the class is absent from the split"),
    Metric("epochs", None, "run", frozenset(), ("",), section="cost"),
    Metric("wall_time_s", None, "run", frozenset(), ("",), section="cost"),
    Metric("samples_per_s", None, "run", frozenset(), ("",), section="cost"),
)
BY_NAME: dict[str, Metric] = {m.name: m for m in METRICS}
# Prefixes and suffixes of a logged name around the table's name (`best_val_nll`, `test_ece_calibrated`).
PREFIXES = ("best_", "val_", "test_")
DERIVED_SUFFIXES = ("_posthoc", "_calibrated")
# What a sweeper minimises, the first of these a run logged: the final val_nll is on one scale for every loss (a
# focal or smoothed val_loss is not comparable across variants); val_loss for a model compiled without nll.
OBJECTIVE = ("val_nll", "val_loss")
# What a sweep's report ranks by, per task: a classifier's val_nll (one scale for every loss), a language model's
# val_bpc (the same nll in bits per character).
PRIMARY = {CLASSIFICATION: "val_nll", LANGUAGE_MODEL: "val_bpc"}


def base_name(metric: str) -> str:
    """The table name inside a logged name: `best_val_loss` -> `loss`, `test_ece_calibrated` -> `ece`,
    `nll_head1` -> `nll`."""
    base = metric
    for prefix in PREFIXES:
        base = base.removeprefix(prefix)
    for suffix in DERIVED_SUFFIXES:
        base = base.removesuffix(suffix)
    if base.startswith("recall_"):  # test_recall_<class>
        return "recall"
    return re.sub(r"_head\d+$", "", base)


def direction(metric: str) -> str | None:
    """"min" or "max" for a ranked metric under any of its logged names, else None."""
    row = BY_NAME.get(base_name(metric))
    return row.direction if row else None


def task_metrics(task: str, extra: Iterable[str] = ()) -> list[Metric]:
    """The streaming metrics a model of `task` computes: the task's own, then those of `extra` (in table order)."""
    wanted = set(extra)
    return [m for m in METRICS if m.computed in STREAMING and (task in m.tasks or m.name in wanted)]


def extra_choices() -> list[str]:
    """The names `metrics.extra` takes: every streaming metric but the shot-group ones (they need shot groups)."""
    return [m.name for m in METRICS if m.computed in STREAMING and m.computed != "shot"]


def check_extra(extra: Sequence[str] | None) -> list[str]:
    """`metrics.extra` as a list, or ConfigError naming the unknown names and the known ones."""
    names = list(extra or [])
    unknown = [n for n in names if n not in extra_choices()]
    if unknown:
        raise ConfigError(f"metrics.extra has unknown metric names {unknown}; known: {extra_choices()}. "
                          f"Example: metrics.extra=[auc,ece]")
    return names


def evaluated_names() -> tuple[str, ...]:
    """What a test evaluation may report (`test_<name>`): the loss and every streaming metric."""
    return tuple(m.name for m in METRICS if m.computed == "loss" or m.computed in STREAMING)


def report_columns() -> list[tuple[str, str, str]]:
    """The report's (column, source, section) rows, sections in order: validation, test, long_tail, cost.

    A source is a final metric, `best:<metric>` (its best over epochs) or a run fact.
    """
    columns: list[tuple[str, str, str]] = []
    for split, section in (("val", "validation"), ("test", "test")):
        for m in (m for m in METRICS if m.section is None):
            if split in m.report:
                columns.append((f"{split}_{m.name}", f"{split}_{m.name}", section))
            if split == "val" and "best_val" in m.report:
                columns.append((f"best_val_{m.name}", f"best:val_{m.name}", section))
    columns += [(f"test_{m.name}",) * 2 + ("long_tail",) for m in METRICS if m.section == "long_tail"]
    columns += [(f"test_{m.name}_posthoc",) * 2 + ("long_tail",) for m in METRICS if m.posthoc == "report"]
    return columns + [(m.name, m.name, m.section) for m in METRICS if m.section == "cost"]


def loss_columns() -> tuple[str, ...]:
    """The report columns of losses on their own scales (ranked only when every variant trains the same loss)."""
    return tuple(c for c, _, _ in report_columns() if BY_NAME[base_name(c)].own_scale)


def headline_metrics(task: str) -> list[tuple[str, str]]:
    """(test metric, what it tells) after the primary metric in a sweep's headline, for `task`."""
    return [(f"test_{m.name}", m.headline) for m in METRICS if m.headline and task in m.tasks]


def task_of_metric(metric: str) -> str:
    """The task a primary metric says: a language model's when only language models log it (bpc, perplexity)."""
    row = BY_NAME.get(base_name(metric))
    return LANGUAGE_MODEL if row is not None and row.tasks == {LANGUAGE_MODEL} else CLASSIFICATION


def summary_metrics() -> tuple[str, ...]:
    """The test metrics the end-of-run line may name, in its order (it prints the first five a run has)."""
    return tuple(f"test_{m.name}" for m in sorted((m for m in METRICS if m.summary), key=lambda m: m.summary))


def posthoc_names() -> tuple[str, ...]:
    """The metrics scored again after post-hoc logit adjustment (`test_<name>_posthoc`)."""
    return tuple(m.name for m in METRICS if m.posthoc)


def calibrated_names() -> tuple[str, ...]:
    """The metrics scored again after temperature scaling (`test_<name>_calibrated`)."""
    return tuple(m.name for m in METRICS if m.calibrated)


def objective(metrics: Mapping[str, float]) -> float:
    """What a sweep job returns to its sweeper: the first of OBJECTIVE that `metrics` holds (NaN with neither)."""
    return float(next((metrics[k] for k in OBJECTIVE if k in metrics), math.nan))


def split_undefined(metrics: Mapping[str, float]) -> tuple[dict[str, float], dict[str, str]]:
    """(the values to log, {name: why} of the undefined ones): a non-finite value of a metric that a split can
    leave undefined (`undefined_when`) is not a bad value: it is not logged, and `undefined_note` says why."""
    kept: dict[str, float] = {}
    undefined: dict[str, str] = {}
    for name, value in metrics.items():
        row = BY_NAME.get(base_name(name))
        if row is not None and row.undefined_when and not math.isfinite(float(value)):
            undefined[name] = row.undefined_when
        else:
            kept[name] = value
    return kept, undefined


def undefined_note(undefined: Mapping[str, str]) -> str:
    """One line naming the undefined metrics, grouped by why: what a run prints once and keeps as a tag."""
    by_reason: dict[str, list[str]] = {}
    for name, why in undefined.items():
        by_reason.setdefault(why, []).append(name)
    return "not logged, undefined: " + "; ".join(f"{', '.join(names)} ({why})" for why, names in by_reason.items())


# MLflow takes letters of any script, digits and `_-. :/` in a metric name; `/` and `:` are made `_` here too
# (a class "n/a" would open a folder of metrics, and Windows refuses `:`), as is every other character.
UNSAFE_IN_NAME = re.compile(r"[^\w\-. ]")


def class_metric_names(class_names: Sequence[str]) -> list[str]:
    """One metric-name part per class (`test_recall_<part>`), unique whatever the names.

    Characters MLflow refuses become `_`; classes whose names then coincide (`a,b` and `a;b` are both `a_b`) each
    get their class id (`a_b_0`, `a_b_1`), so no class's metric overwrites another's.
    """
    safe = [UNSAFE_IN_NAME.sub("_", str(name)).strip() or "_" for name in class_names]
    counts: dict[str, int] = {}
    for part in safe:
        counts[part] = counts.get(part, 0) + 1
    parts = [f"{part}_{c}" if counts[part] > 1 else part for c, part in enumerate(safe)]
    if len(set(parts)) < len(parts):  # a suffixed name met another class's own ("a_b" + id 1 and a class "a_b_1")
        parts = [f"{part}_{c}" for c, part in enumerate(safe)]  # the id after the last `_` tells them apart
    return parts

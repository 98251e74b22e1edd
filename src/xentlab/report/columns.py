"""The report's columns, their sections, and the records it is built from (a comparison, a report)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from xentlab.metric_table import loss_columns, report_columns
from xentlab.report.statistics import Difference, direction

# (column, source, section), from the metric table: source is a final metric, "best:val_loss" (min over epochs),
# "epochs" (epochs logged), or "wall_time_s" (end - start of the run). samples_per_s is the last epoch's (steady
# state: the first epoch also traces the graph), read from the run itself: only val_loss needs its history.
COLUMNS = report_columns()
COLUMN_NAMES = [c for c, _, _ in COLUMNS]
# The report's value tables in order; a section no run logged a value of is left out (long_tail on balanced data).
TABLE_SECTIONS = (("validation", "Validation"), ("test", "Test"),
                  ("long_tail", "Long tail: shot groups and post-hoc logit adjustment"), ("cost", "Cost"))
# Values of the training objective itself: on one scale only when every variant trains the same loss.
LOSS_COLUMNS = loss_columns()
# Quality metrics ranked against the baseline; the loss columns join them when the loss scales agree.
RANKED = [c for c in COLUMN_NAMES if direction(c) and c not in LOSS_COLUMNS]
HISTORY_METRIC = "val_loss"  # the one history read per run: best_val_loss, epochs and the learning curves
PAGE_SIZE = 1000  # runs per search_runs page (MLflow's default page)
RELIABILITY_ARTIFACT = "evaluation/reliability.json"
MAX_RELIABILITY_VARIANTS = 10  # curves overlaid on one chart: more are unreadable
SWEEP_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")  # what SweepRun makes (12 hex digits), or "latest"
SEED_OVERRIDE = re.compile(r"(^|,)trainer\.seed=[^,]*")
FOLD_OVERRIDE = re.compile(r"(^|,)data\.fold=[^,]*")  # k-fold: the fold is a repetition, as the seed
POSTHOC_VARIANT = " + post-hoc"  # the baseline's runs scored by their test_<metric>_posthoc (query.posthoc_values)
OVERRIDE_SPLIT = re.compile(r",(?=[+~]*[\w.\-/@]+=)")  # commas that start a new key=value (not inside a list)
ADD_SEEDS = ('`make sweep SWEEP=seeds ARGS="<the varying overrides>"` (5 seeds), or add `trainer.seed=0,1,2` '
             "to the sweep's overrides")


@dataclass
class Comparison:
    """One variant against the baseline on one metric."""

    variant: str
    metric: str
    diff: Difference
    p_holm: float
    verdict: str
    pairs: str = "seeds"  # what a pair of the paired test is: "seeds", or "seed/fold pairs" in k-fold sweeps


@dataclass
class Report:
    """A sweep's comparison report: what every renderer (Markdown, HTML, the parent's headline) reads.

    Attributes:
        sweep_id: the sweep's id (tag xentlab.sweep_id).
        parent_run_id: the sweep's parent run.
        baseline: the variant the others are compared with.
        rows: one dict per variant (baseline first): "variant", "n", and per column its mean and `<column>_std`.
        comparisons: every variant but the baseline against it, per ranked metric.
        markdown: the report as Markdown (the terminal's).
        files: the files written (report.md, CSVs, charts, report.html).
        metric: the primary metric (the verdict column).
        baseline_note: how the baseline was chosen.
        ranked: the metrics tested against the baseline.
        losses_note: why the loss columns are not ranked, when they are not.
        title: one line: sweep id, runs, variants.
        overrides: {variant: its overrides} (`+setup=balanced`), where the runs say them.
        followup: Markdown lines after the tables (report.followup): the jobs that did not finish, the seeds each
            "not shown" difference needs and the command that adds them.
        unfinished: {variant: "diverged", "failed" or "killed"} for the variants with runs that did not finish.
        verdict_line: a sequential sweep's verdict in one line (report.sweep_designs), which opens the headline.
        design_lines: the sections of a tuned or sequential sweep (report.sweep_designs), after the tables.
    """

    sweep_id: str
    parent_run_id: str
    baseline: str
    rows: list[dict]
    comparisons: list[Comparison]
    markdown: str
    files: list[Path] = field(default_factory=list)
    metric: str = "val_nll"
    baseline_note: str = ""
    ranked: list[str] = field(default_factory=list)
    losses_note: str | None = None
    title: str = ""
    overrides: dict[str, str] = field(default_factory=dict)
    followup: list[str] = field(default_factory=list)
    unfinished: dict[str, str] = field(default_factory=dict)
    verdict_line: str | None = None
    design_lines: list[str] = field(default_factory=list)

    def comparison(self, variant: str, metric: str) -> Comparison | None:
        """The comparison of `variant` with the baseline on `metric`, if it was tested."""
        return next((c for c in self.comparisons if c.variant == variant and c.metric == metric), None)

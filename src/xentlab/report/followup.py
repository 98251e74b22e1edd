"""What to do after reading a sweep's report: the jobs that did not finish, and the seeds each "not shown" difference
needs (report.power) with the one command that adds them to the same sweep.

Sections of Markdown lines, appended to the report by report.compare.
"""

from __future__ import annotations

import math
import re
import shlex

from xentlab.report.columns import Comparison
from xentlab.report.power import MAX_SEEDS, POWER, seeds_needed
from xentlab.report.statistics import ALPHA
from xentlab.tracking.store import ERROR_TAG, SWEEP_JOB_TAG

NOT_SHOWN = ("no difference", "not shown")  # the verdict of a tested difference that did not reach significance
SEED_KEY = "trainer.seed"
PRESET = re.compile(r"^\+?sweep=(\w+)$")


def failed_jobs_section(children: list) -> list[str]:
    """Lines listing the sweep's children that ended FAILED or KILLED, with their `xentlab.error`; [] when none."""
    failed = [r for r in children if r.info.status in ("FAILED", "KILLED")]
    if not failed:
        return []
    lines = ["", f"#### Jobs that did not finish ({len(failed)}: left out of the tables above)", ""]
    for run in failed:
        name = run.data.tags.get(SWEEP_JOB_TAG) or run.info.run_name or run.info.run_id
        error = (run.data.tags.get(ERROR_TAG) or "no message").splitlines()[0][:300].replace("|", "\\|")
        lines.append(f"- `{name}` {run.info.status} (run {run.info.run_id}): {error}")
    lines.append("- Run the same sweep command again: FINISHED jobs are reused, these run again.")
    return lines


def extend_command(overrides: list[str], seeds_done: list[str], total: int) -> str:
    """The command that continues the same sweep with `total` seeds: the sweep's own overrides with the seed axis
    grown (the seeds already run kept, the smallest unused ones added). `+sweep=P` becomes `make sweep SWEEP=P`."""
    done = sorted({int(s) for s in seeds_done if str(s).lstrip("-").isdigit()})
    seeds = list(done)
    candidate = 0
    while len(seeds) < total:
        if candidate not in done:
            seeds.append(candidate)
        candidate += 1
    axis = f"{SEED_KEY}={','.join(str(s) for s in sorted(seeds))}"
    rest = [o for o in overrides if o.partition("=")[0].lstrip("+~") != SEED_KEY]
    preset = next((PRESET.match(o).group(1) for o in rest if PRESET.match(o)), None)
    if preset:
        args = " ".join([*(o for o in rest if not PRESET.match(o)), axis])
        return f'make sweep SWEEP={preset} ARGS="{args}"'
    return " ".join(["xentlab-train", "-m", *(shlex.quote(o) for o in rest), shlex.quote(axis)])


def seeds_needed_section(comparisons: list[Comparison], metrics: list[str], overrides: list[str],
                         seeds_done: list[str], alpha: float = ALPHA, pairs_per_seed: int = 1) -> list[str]:
    """For each "not shown" comparison on `metrics`: the seeds (pairs) that would detect its observed Δ with 80%
    power at alpha / m (Holm's strictest step over the m tested variants of the metric), and the command that
    extends the sweep to the largest such number (`pairs_per_seed` pairs a seed: the folds of a k-fold sweep).
    [] when every difference was shown or untested."""
    lines: list[str] = []
    settles: dict[str, dict[int, list[str]]] = {}  # metric -> seeds -> the variants that many seeds would settle
    for metric in metrics:
        family = [c for c in comparisons if c.metric == metric]
        m = sum(1 for c in family if c.diff.tested and math.isfinite(c.diff.p))
        for c in family:
            if c.verdict not in NOT_SHOWN or not c.diff.tested:
                continue
            n = seeds_needed(c.diff, alpha / max(m, 1))
            unit = "pairs (seeds run by both)" if c.diff.test == "paired" else "seeds a side (Welch)"
            if n is None:
                advice = ("Δ is exactly 0: more seeds cannot show a difference" if c.diff.mean == 0 else
                          f"> {MAX_SEEDS} seeds: the effect is too small to chase")
            else:
                advice = f"{n} {unit} would detect Δ {c.diff.mean:+.4f} with {POWER:.0%} power"
                settles.setdefault(metric, {}).setdefault(-(-n // pairs_per_seed), []).append(c.variant)  # rounded up
            lines.append(f"- `{c.variant}` on {metric} (now {c.diff.n}): {advice}")
    if not lines:
        return []
    head = ["", "#### Seeds needed for what is not shown", "",
            f"Planned at alpha {alpha} / m (Holm's strictest step over the m tested variants of a metric), taking "
            "the observed Δ and spread as true: a guide, not a promise."]
    # The commands follow the first metric that has advice (the primary one, else its test twin).
    metric, plan = next(((m, settles[m]) for m in metrics if m in settles), (None, {}))
    tail = ["", "Extend this sweep (the same parent: FINISHED jobs are reused, only new seeds run):"] if plan else []
    for total in sorted(plan)[:1] + sorted(plan)[1:][-2:]:  # the smallest, and at most the two largest
        variants = ", ".join(v for n, vs in sorted(plan.items()) if n <= total for v in vs)
        tail += ["", f"{total} seeds ({variants} on {metric}):", "",
                 f"    {extend_command(overrides, seeds_done, total)}"]
    return head + lines + tail

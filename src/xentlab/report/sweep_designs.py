"""The report of a sweep that chose its jobs by looking at results.

- A tuned sweep (xentlab.cli.tuned): only its evaluation runs are compared (its trials are its tuning); the report
  states the budget, each variant's search space and chosen values, and charts the tuning curves.
- A sequential sweep (xentlab.cli.until_decided): the verdicts on the primary metric are those of report.sequential,
  replayed over the same runs; the plain t-tests, which do not hold their error rate after repeated looks, are
  never shown as its verdict. The parent's description opens with the sequential verdict in one line.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from xentlab.report.columns import Comparison
from xentlab.report.render import format_p
from xentlab.report.sequential import DECIDED, Decision, Design, decide
from xentlab.report.statistics import Difference, direction
from xentlab.tracking.store import SEQUENTIAL_TAG, STAGE_TAG, TUNING_TAG


def compared_runs(children: list) -> list:
    """The runs a report compares: all but a tuned sweep's trials."""
    return [r for r in children if r.data.tags.get(STAGE_TAG) != "tuning"]


# ---------------------------------------------------------------------------------------------- tuned
def tuning_summary(parent) -> dict | None:
    """What the tuned sweep recorded on its parent (budget, spaces, choices, curves), or None."""
    text = parent.data.tags.get(TUNING_TAG)
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def _values(chosen: dict | None) -> str:
    if not chosen:
        return "none (every trial failed)"
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(chosen.items()))


def budget_line(summary: dict) -> str:
    """"8 trials per variant, tpe sampler (seed 0), tuning seed(s) 1000, chosen on the final val_nll; ..."."""
    return (f"{summary['trials']} trials per variant, {summary['sampler']} sampler (seed {summary['seed']}), tuning "
            f"seed(s) {','.join(summary['tuning_seeds'])}, chosen on the final {summary['objective']}; the chosen "
            f"configurations compared over evaluation seeds {','.join(summary['evaluation_seeds'])}")


def tuning_section(summary: dict, out_dir: Path) -> tuple[list[str], list[Path]]:
    """Markdown lines (budget, per variant its space, chosen values and best tuning value) and the tuning-curve
    chart."""
    from xentlab.report.charts import plot_tuning_curves

    lines = ["", "#### Tuning (the same budget for every variant)", "", f"- Budget: {budget_line(summary)}.",
             "- Only the evaluation runs are compared above; the trials are the tuning. tuning_curves.png: best "
             f"{summary['objective']} so far per trial (a curve still falling at the last trial: more trials may "
             "change the verdict).", "",
             f"| variant | search space | chosen | best tuning {summary['objective']} |", "|---|---|---|---|"]
    for name, v in summary["variants"].items():
        space = "; ".join(f"{k} {spec}" for k, spec in v["space"].items())
        best = f"{v['best']:.4f}" if v.get("best") is not None else "-"
        lines.append(f"| {name} | {space} | {_values(v.get('chosen'))} | {best} |")
    out_dir.mkdir(parents=True, exist_ok=True)
    chart = plot_tuning_curves({n: v["curve"] for n, v in summary["variants"].items()}, summary["objective"],
                               out_dir / "tuning_curves.png", summary["trials"])
    return lines, [chart]


# ---------------------------------------------------------------------------------------------- sequential
def sequential_design(parent) -> Design | None:
    """The design a sequential sweep recorded on its parent, or None."""
    text = parent.data.tags.get(SEQUENTIAL_TAG)
    if not text:
        return None
    d = json.loads(text)
    return Design(int(d["seed_batch"]), int(d["max_seeds"]), float(d["alpha"]))


def _comparison(d: Decision, metric: str) -> Comparison:
    diff = Difference(d.diff.mean, d.ci_low, d.ci_high, d.diff.p, "paired", d.diff.n, d.diff.n, d.diff.sd)
    return Comparison(d.variant, metric, diff, float("nan"), d.status if d.status in DECIDED else "no difference")


def _phrase(d: Decision) -> str:
    where = f"at look {d.look} ({d.seeds} seeds; alpha spent {d.spent:.2g} of {d.level:.3g})"
    if d.status in DECIDED:
        return f"`{d.variant}` {d.status} {where}, Δ {d.diff.mean:+.4f} [{d.ci_low:+.4f}, {d.ci_high:+.4f}]"
    if d.status == "futile":
        return f"`{d.variant}` stopped for futility {where}"
    if d.status == "not shown":
        return f"`{d.variant}` not shown with the maximum {d.seeds} seeds"
    return f"`{d.variant}` still open after look {d.look} ({d.seeds} seeds)"


def sequential_view(by_seed: dict[str, list[tuple[str, dict]]], baseline: str, metric: str, design: Design
                    ) -> tuple[list[Comparison], list[str], str]:
    """(the primary metric's comparisons as the sequential rule decides them, the report's section, the one line
    for the parent's description)."""
    values = {v: {key: vals[metric] for key, vals in runs if math.isfinite(vals[metric])}
              for v, runs in by_seed.items()}
    decisions = decide(values, baseline, design, direction(metric) or "min")
    one_line = (f"Sequential ({design.line()}) against `{baseline}` on `{metric}`: "
                + ("; ".join(_phrase(d) for d in decisions) or "no comparison reached its first look") + ".")
    lines = ["", "#### Sequential verdicts (seeds until decided)", "",
             f"- Design: {design.line()}; looks at {', '.join(str(n) for n in design.looks())} seeds. These are the "
             "sweep's verdicts: the plain t-tests would not hold their 5% after repeated looks, so none is shown.",
             "- A comparison stops when its p-value at a look is below that look's boundary (decided), when even a "
             "difference one standard error larger than observed would need more than max_seeds (futility), or at "
             "max_seeds. The interval is the repeated confidence interval at the look it stopped.", "",
             f"| variant | decision | look | seeds | alpha share | alpha spent | boundary (p below) | p | "
             f"Δ {metric} [repeated CI] |", "|---|---|---|---|---|---|---|---|---|"]
    for d in decisions:
        lines.append(f"| {d.variant} | {d.status} | {d.look} | {d.seeds} | {d.level:.4g} | {d.spent:.3g} | "
                     f"{d.nominal:.3g} | {format_p(d.diff.p)} | {d.diff.mean:+.4f} [{d.ci_low:+.4f}, "
                     f"{d.ci_high:+.4f}] |")
    return [_comparison(d, metric) for d in decisions], lines, one_line

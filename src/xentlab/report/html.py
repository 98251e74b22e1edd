"""`report.html`: the comparison report as one self-contained page for the MLflow artifact viewer.

Inline CSS, the charts inline as base64 PNG, no script and no reference to anything outside the file, so it
renders offline and inside the viewer's sandboxed frame. The verdict table comes first and stays narrow; the
value tables are split into blocks of a few columns, each scrollable on its own.

The page is a list of sections (`SECTIONS`): functions `(report, charts) -> HTML fragment`, where charts maps a
chart's file name to its path. A new part of the report is one more function in that list.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Callable
from pathlib import Path

from xentlab.report.charts import VERDICT_COLOURS, delta_points
from xentlab.report.columns import TABLE_SECTIONS, Report
from xentlab.report.headline import headline_metrics, summary_line
from xentlab.report.render import bold_cells, format_cell, format_delta, format_p, shown_columns, verdict_text

COLUMNS_PER_TABLE = 5  # metric columns per value table: narrow enough for the viewer without scrolling
STYLE = """
body { font: 14px/1.45 -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; color: #1f2328;
       margin: 16px; max-width: 1100px; }
h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 24px 0 8px; }
p.summary { font-size: 15px; margin: 8px 0 12px; }
table { border-collapse: collapse; margin: 4px 0 12px; }
th, td { border: 1px solid #d0d7de; padding: 4px 8px; text-align: left; white-space: nowrap; }
th { background: #f6f8fa; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.scroll { overflow-x: auto; max-width: 100%; }
.blocks { display: flex; flex-wrap: wrap; gap: 8px 24px; align-items: flex-start; }
.verdict { font-weight: 600; }
img { max-width: 100%; height: auto; border: 1px solid #eaeef2; margin: 4px 0 12px; }
code { background: #f6f8fa; padding: 0 3px; border-radius: 3px; }
li { margin: 3px 0; } .muted { color: #57606a; }
"""

Section = Callable[[Report, dict[str, Path]], str]


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def inline_markdown(text: str) -> str:
    """`code` and **bold** of the report's Markdown as HTML (the rest escaped)."""
    out = _e(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", out)


def _verdict_cell(c) -> str:
    colour = VERDICT_COLOURS.get(c.verdict, "#1f2328") if c else "#1f2328"
    return f'<td class="verdict" style="color:{colour}">{_e(verdict_text(c))}</td>'


def verdict_table(report: Report, metric: str) -> str:
    """Variant, n, Δ [95% CI], Holm p, verdict on `metric`; the baseline first with its mean."""
    head = (f"<tr><th>variant</th><th>n</th><th>{_e(metric)}</th><th>Δ {_e(metric)} [95% CI]</th>"
            "<th>p (Holm)</th><th>verdict</th></tr>")
    body = []
    bold = bold_cells(report.comparisons, report.baseline, [r["variant"] for r in report.rows])
    for row in report.rows:
        v = row["variant"]
        c = report.comparison(v, metric)
        if c is None and v != report.baseline:
            continue
        name = f"{_e(v)} <span class=muted>(baseline)</span>" if v == report.baseline else _e(v)
        value = inline_markdown(format_cell(row, metric, (v, metric) in bold))
        cells = (f'<td class="num">{_e(format_delta(c))}</td><td class="num">{_e(format_p(c.p_holm))}</td>'
                 + _verdict_cell(c)) if c else "<td></td><td></td><td></td>"
        body.append(f'<tr><td>{name}</td><td class="num">{row["n"]}</td><td class="num">{value}</td>{cells}</tr>')
    return f'<div class="scroll"><table>{head}{"".join(body)}</table></div>'


def verdict_section(report: Report, charts: dict[str, Path]) -> str:
    """The answer: the summary sentence and the primary metric's verdict table."""
    return (f"<h1>{_e(report.title)}</h1><p class=summary>{inline_markdown(summary_line(report))}</p>"
            f"<p class=muted>Baseline <code>{_e(report.baseline)}</code> ({_e(report.baseline_note)}).</p>"
            + verdict_table(report, report.metric))


def charts_section(report: Report, charts: dict[str, Path]) -> str:
    """Every chart, inline (base64 PNG), the primary one first."""
    order = sorted(charts, key=lambda name: (not name.endswith("_vs_baseline.png"), name))
    images = []
    for name in order:
        data = base64.b64encode(charts[name].read_bytes()).decode()
        images.append(f'<div><img alt="{_e(name)}" src="data:image/png;base64,{data}"></div>')
    if not delta_points(report):
        images.insert(0, f"<p class=muted><code>{_e(report.metric)}</code> is not ranked: no difference chart.</p>")
    return "<h2>Charts</h2>" + "".join(images)


def secondary_section(report: Report, charts: dict[str, Path]) -> str:
    """The headline's other metrics (calibration, minority classes, or held-out bpc), one narrow table each."""
    tables = [f"<div><b>{_e(m)}</b> <span class=muted>({_e(why)})</span>{verdict_table(report, m)}</div>"
              for m, why in headline_metrics(report)[1:]]
    return "<h2>Other verdicts</h2><div class=blocks>" + "".join(tables) + "</div>" if tables else ""


def tables_section(report: Report, charts: dict[str, Path]) -> str:
    """Every metric's mean ± std per variant, section by section, in blocks of COLUMNS_PER_TABLE columns."""
    bold = bold_cells(report.comparisons, report.baseline, [r["variant"] for r in report.rows])
    parts = ["<h2>Every metric</h2><p class=muted>Mean ± sample std over the seeds; <b>bold</b>: significantly "
             "better than the baseline (Holm); -: not logged.</p>"]
    for section, _ in TABLE_SECTIONS:
        columns = shown_columns(report.rows, section)
        for start in range(0, len(columns), COLUMNS_PER_TABLE):
            chunk = columns[start : start + COLUMNS_PER_TABLE]
            head = "<tr><th>variant</th><th>n</th>" + "".join(f"<th>{_e(c)}</th>" for c in chunk) + "</tr>"
            body = "".join(
                f"<tr><td>{_e(r['variant'])}</td><td class=num>{r['n']}</td>"
                + "".join(f"<td class=num>{inline_markdown(format_cell(r, c, (r['variant'], c) in bold))}</td>"
                          for c in chunk) + "</tr>" for r in report.rows)
            parts.append(f"<div class=scroll><table>{head}{body}</table></div>")
    return "".join(parts)


def reading_section(report: Report, charts: dict[str, Path]) -> str:
    """"How to read it", as the Markdown report says it, and each variant's overrides."""
    notes = report.markdown.split("How to read it:", 1)[-1].split("\n#### ", 1)[0].strip().splitlines()
    items = "".join(f"<li>{inline_markdown(line.removeprefix('- '))}</li>" for line in notes if line.strip())
    named = [(v, o) for v, o in report.overrides.items() if o != v]
    legend = ("<h2>Variants</h2><ul>" + "".join(f"<li><code>{_e(v)}</code>: <code>{_e(o)}</code></li>"
                                                for v, o in named) + "</ul>") if named else ""
    return f"<h2>How to read it</h2><ul>{items}</ul>{legend}"


def followup_section(report: Report, charts: dict[str, Path]) -> str:
    """The jobs that did not finish and the seeds each "not shown" difference needs (report.followup): headings,
    items, and the command to run as a code block."""
    parts: list[str] = []
    items: list[str] = []
    rows: list[list[str]] = []  # a Markdown table (a tuned or sequential sweep's section): header first
    for line in [*report.followup, ""]:
        if line.startswith("- "):
            items.append(f"<li>{inline_markdown(line[2:])}</li>")
            continue
        if line.startswith("|"):
            if not line.startswith("|---"):
                rows.append([cell.strip() for cell in line.strip().strip("|").split(" | ")])
            continue
        if rows:
            head, *body = rows
            parts.append("<table><tr>" + "".join(f"<th>{_e(c)}</th>" for c in head) + "</tr>" + "".join(
                "<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in body) + "</table>")
            rows = []
        if items:
            parts.append(f"<ul>{''.join(items)}</ul>")
            items = []
        if line.startswith("#### "):
            parts.append(f"<h2>{inline_markdown(line[5:])}</h2>")
        elif line.startswith("    "):
            parts.append(f"<pre><code>{_e(line.strip())}</code></pre>")
        elif line.strip():
            parts.append(f"<p>{inline_markdown(line)}</p>")
    return "".join(parts)


SECTIONS: list[Section] = [verdict_section, secondary_section, charts_section, tables_section, reading_section,
                           followup_section]


def render_html(report: Report, charts: dict[str, Path], sections: list[Section] | None = None) -> str:
    """The whole page: every section of `sections` (default SECTIONS) in order."""
    body = "\n".join(part for section in (sections or SECTIONS) if (part := section(report, charts)))
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(report.title)}</title>'
            f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n")


def write_html(report: Report, out: Path) -> Path:
    """Writes `report.html` beside the charts listed in `report.files`."""
    charts = {f.name: f for f in report.files if f.suffix == ".png"}
    path = out / "report.html"
    path.write_text(render_html(report, charts), encoding="utf-8")
    return path

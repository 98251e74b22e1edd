"""Metrics on their way to the run: an undefined one (NaN where the metric table says a split can leave it
undefined, such as `val_auc` on a validation split of one class) is not a bad value, so it is not logged; the run
says once why, on stderr and as the tag xentlab.undefined_metrics."""

from __future__ import annotations

import sys

from xentlab.metric_table import split_undefined, undefined_note
from xentlab.tracking.store import UNDEFINED_TAG

MAX_TAG = 5000  # characters: MLflow keeps tag values up to 8,000
_told: dict[str, dict[str, str]] = {}  # per run id: the undefined metrics already said, with why


def log_defined(outbox, metrics: dict[str, float], step: int = 0) -> dict[str, float]:
    """Logs the defined values of `metrics` through `outbox` (xentlab.tracking.outbox) and returns them; says the
    undefined ones the first time each appears in the run."""
    defined, undefined = split_undefined(metrics)
    told = _told.setdefault(outbox.run_id, {})
    new = {name: why for name, why in undefined.items() if name not in told}
    if new:
        told.update(new)
        print(f"note: {undefined_note(new)}", file=sys.stderr, flush=True)
        outbox.set_tag(UNDEFINED_TAG, undefined_note(told)[:MAX_TAG])
    if defined:
        outbox.log_metrics(defined, step=step)
    return defined

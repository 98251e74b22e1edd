"""Reading a sweep from the store: its parent, children (all pages), histories in bulk, reliability bins."""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from xentlab.errors import ReportError
from xentlab.report.columns import COLUMNS, PAGE_SIZE, RELIABILITY_ARTIFACT, SWEEP_ID
from xentlab.tracking.store import (
    RELIABILITY_TAG,
    ROLE_TAG,
    SUPERSEDED_TAG,
    SWEEP_JOB_TAG,
    SWEEP_TAG,
    VARIANT_OVERRIDES_TAG,
    VARIANT_TAG,
    member_tag,
)


# ---------------------------------------------------------------------------------------------- reading MLflow
def fetch_children(client: MlflowClient, experiment_id: str, parent_run_id: str, page_size: int = PAGE_SIZE) -> list:
    """Every current child run of `parent_run_id` (not superseded by a later run of its job), oldest first, page
    after page; then the runs of other sweeps this sweep reused (tracking.store.member_tag), read as its own: their
    variant and job tags are those of this sweep."""
    runs = _search_all(client, experiment_id, f"tags.`mlflow.parentRunId` = '{parent_run_id}'", page_size)
    tag = member_tag(parent_run_id)
    for run in _search_all(client, experiment_id, f"tags.`{tag}` LIKE '%'", page_size):
        entry = json.loads(run.data.tags[tag])
        run.data.tags.update({VARIANT_TAG: entry["variant"], VARIANT_OVERRIDES_TAG: entry["variant_overrides"],
                              SWEEP_JOB_TAG: entry["job"]})
        runs.append(run)
    return runs


def _search_all(client: MlflowClient, experiment_id: str, flt: str, page_size: int) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], flt, order_by=["attributes.start_time ASC"],
                                  max_results=page_size, page_token=token)
        runs.extend(r for r in page if SUPERSEDED_TAG not in r.data.tags)
        token = page.token
        if not token:
            return runs


def _workers(uri: str) -> int:
    # A server answers requests in parallel; SQLite gains a little from overlapping Python and I/O.
    return 8 if uri.startswith(("http://", "https://")) else 4


BULK_RUNS, BULK_LIMIT = 100, 25000  # MLflow's bulk history read: at most 100 runs and 25,000 values a request


def _bulk_histories(client: MlflowClient, run_ids: list[str], metric: str) -> list[tuple[str, int, float]] | None:
    """(run id, step, value) of up to BULK_RUNS runs in one request, or None where the store has no bulk read.

    MLflow's client reads one run's history per request; its SQL store and its server (the endpoint the UI
    uses) both read a metric for many runs at once. Their results equal get_metric_history's.
    """
    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    if hasattr(store, "get_metric_history_bulk"):  # SQL store (sqlite:///, postgresql://, ...)
        found = store.get_metric_history_bulk(run_ids, metric, BULK_LIMIT)
        return [(m.run_id, m.step, m.value) for m in found]
    if hasattr(store, "get_host_creds"):  # a tracking server
        from mlflow.utils.rest_utils import http_request

        response = http_request(store.get_host_creds(), "/ajax-api/2.0/mlflow/metrics/get-history-bulk", "GET",
                                params={"run_id": run_ids, "metric_key": metric, "max_results": BULK_LIMIT})
        if response.status_code != 200:
            return None
        return [(m["run_id"], int(m.get("step", 0)), float(m["value"])) for m in response.json().get("metrics", [])]
    return None


def read_histories(client: MlflowClient, run_ids: list[str], metric: str, workers: int = 4
                   ) -> dict[str, list[tuple[int, float]]]:
    """{run id: [(step, value), ...] sorted by step} of one metric.

    One bulk request per 100 runs where the store offers it; runs a bulk answer may have cut (it hit the value
    limit) and stores without one are read one run per request, `workers` at a time.
    """
    histories: dict[str, list[tuple[int, float]]] = {run_id: [] for run_id in run_ids}
    single: list[str] = []
    for start in range(0, len(run_ids), BULK_RUNS):
        chunk = run_ids[start : start + BULK_RUNS]
        found = _bulk_histories(client, chunk, metric)
        if found is None or len(found) >= BULK_LIMIT:
            single += chunk
            continue
        for run_id, step, value in found:
            histories[run_id].append((step, value))

    def one(run_id: str) -> list[tuple[int, float]]:
        return [(m.step, m.value) for m in client.get_metric_history(run_id, metric)]

    with ThreadPoolExecutor(max_workers=workers) as pool:
        histories.update(zip(single, pool.map(one, single), strict=True))
    return {run_id: sorted((step, stored_value(value)) for step, value in values)
            for run_id, values in histories.items()}


def stored_value(value: float) -> float:
    """A metric value as it was logged: MLflow's SQL stores keep +-inf as +-1.797e308 (the largest float)."""
    return math.copysign(math.inf, value) if abs(value) >= sys.float_info.max else value


def run_values(run, history: list[tuple[int, float]]) -> dict[str, float]:
    """The value of every report column for one run (NaN where the run has no such metric).

    Args:
        run: an MLflow Run.
        history: its val_loss history as (step, value), from `read_histories`.
    """
    metrics = run.data.metrics
    values: dict[str, float] = {}
    for column, source, _ in COLUMNS:
        if source == "epochs":
            # The last validated epoch is the last epoch (trainer.validate_every may skip some before it).
            values[column] = float(max(s for s, _ in history) + 1) if history else float("nan")
        elif source == "wall_time_s":
            end = run.info.end_time or run.info.start_time
            values[column] = (end - run.info.start_time) / 1000.0
        elif source == "best:val_loss":
            values[column] = min(v for _, v in history) if history else float("nan")
        else:
            values[column] = stored_value(float(metrics.get(source, float("nan"))))
    return values


def posthoc_values(run, columns: list[str]) -> dict[str, float] | None:
    """The report columns of a run as post-hoc logit adjustment scores it: each test column from its
    `<column>_posthoc` metric, NaN elsewhere (validation, costs). None unless the run logged post-hoc metrics of a
    long-tailed training split (test shot accuracies of at least two groups): on a balanced split the adjusted
    predictions are the model's own and a row of them says nothing new."""
    metrics = run.data.metrics
    groups = [g for g in ("many", "medium", "few") if f"test_{g}_shot_accuracy" in metrics]
    if len(groups) < 2 or "test_balanced_accuracy_posthoc" not in metrics:
        return None
    return {c: float(metrics.get(f"{c}_posthoc", float("nan"))) if c.startswith("test_") else float("nan")
            for c in columns}


def loss_scale(params: dict[str, str]) -> tuple:
    """What sets the scale of a run's loss values: every loss.* param but from_logits (same value either way)."""
    return tuple(sorted((k, v) for k, v in params.items() if k.startswith("loss.") and k != "loss.from_logits"))


RELIABILITY_SAMPLE = 5  # runs per variant read from files when they lack the xentlab.reliability tag


def _from_tag(text: str) -> dict | None:
    try:
        table = json.loads(text)
        bins = int(table["num_bins"])
        return {**table, "edges": np.linspace(0.0, 1.0, bins + 1).tolist()}
    except (ValueError, KeyError, TypeError):
        return None


def _read_file(client: MlflowClient, run) -> dict | None:
    """A run's reliability.json: straight from disk when its artifacts are local files, else downloaded."""
    uri = run.info.artifact_uri or ""
    try:
        if uri.startswith("file:"):
            path = Path(url2pathname(urlsplit(uri).path)) / RELIABILITY_ARTIFACT
            return json.loads(path.read_text()) if path.is_file() else None
        with tempfile.TemporaryDirectory() as tmp:
            return json.loads(Path(client.download_artifacts(run.info.run_id, RELIABILITY_ARTIFACT, tmp)).read_text())
    except (MlflowException, OSError, ValueError):
        return None


def read_reliability(client: MlflowClient, runs_by_variant: dict[str, list], workers: int = 4
                     ) -> tuple[dict[str, dict], bool]:
    """({run id: reliability bins}, whether files were sampled) for the runs that logged them.

    Every run's bins come from its `xentlab.reliability` tag, already fetched with the run. Runs logged before that
    tag existed are read from their `reliability.json`, at most RELIABILITY_SAMPLE per variant (the first launched;
    a bounded sample, so a 1,000-run sweep costs at most that many reads per variant shown); runs that logged no
    plots (`tracking.log_plots=False`) are not looked for.
    """
    found: dict[str, dict] = {}
    to_read = []
    for runs in runs_by_variant.values():
        untagged = []
        for run in runs:
            table = _from_tag(run.data.tags[RELIABILITY_TAG]) if RELIABILITY_TAG in run.data.tags else None
            if table is not None:
                found[run.info.run_id] = table
            elif run.data.params.get("tracking.log_plots", "True") != "False":
                untagged.append(run)
        to_read += untagged[:RELIABILITY_SAMPLE]
    sampled = any(len([r for r in runs if r.info.run_id not in found]) > RELIABILITY_SAMPLE
                  for runs in runs_by_variant.values()) and bool(to_read)
    quiet = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}  # one bar per run, even for a missing file
    saved = {k: os.environ.get(k) for k in quiet}
    os.environ.update(quiet)
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            read = dict(zip((r.info.run_id for r in to_read), pool.map(lambda r: _read_file(client, r), to_read),
                            strict=True))
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    found.update({k: v for k, v in read.items() if v is not None})
    return found, sampled


def pool_reliability(diagrams: list[dict]) -> dict | None:
    """One diagram from several runs' (same bins): per-bin accuracy and confidence weighted by the counts."""
    if not diagrams:
        return None
    count = np.sum([np.asarray(d["count"], dtype="float64") for d in diagrams], axis=0)

    def weighted(key: str) -> list[float | None]:
        num = np.sum([np.nan_to_num(np.array(d[key], dtype="float64")) * np.asarray(d["count"]) for d in diagrams],
                     axis=0)
        return [float(n / c) if c > 0 else None for n, c in zip(num, count, strict=True)]

    return {"edges": diagrams[0]["edges"], "count": count.astype(int).tolist(),
            "accuracy": weighted("accuracy"), "confidence": weighted("confidence"),
            "ece": float(np.mean([d["ece"] for d in diagrams]))}



def find_parent(client: MlflowClient, experiment_ids: list[str], sweep: str) -> str:
    """The parent run id of sweep `sweep`: a sweep id (tag xentlab.sweep_id), "latest", or the run id of the parent
    (what the MLflow UI shows) or of one of its children.

    Raises:
        ReportError: `sweep` is not an id, or names no sweep in these experiments.
    """
    if not SWEEP_ID.match(sweep):
        raise ReportError(f"--sweep must be 'latest', a sweep id or a run id (letters, digits, '_', '-', '.'; the "
                          f"tag {SWEEP_TAG} of a parent run, e.g. 3f9c2a1b7d4e), got {sweep!r}")
    flt = f"tags.`{ROLE_TAG}` = 'sweep'"
    if sweep != "latest":
        flt += f" and tags.`{SWEEP_TAG}` = '{sweep}'"
    found = client.search_runs(experiment_ids, flt, order_by=["attributes.start_time DESC"], max_results=1)
    if found:
        return found[0].info.run_id
    run = _run_or_none(client, sweep) if sweep != "latest" else None
    if run is not None and run.info.experiment_id in experiment_ids:
        if run.data.tags.get(ROLE_TAG) == "sweep":
            return run.info.run_id
        parent = run.data.tags.get("mlflow.parentRunId")
        if parent and (up := _run_or_none(client, parent)) is not None and up.data.tags.get(ROLE_TAG) == "sweep":
            return parent
    raise ReportError(f"no sweep {sweep!r} in experiments {experiment_ids} (a sweep id, or the run id of a "
                      "sweep's parent run); run `make sweep` first, or pass --experiment")


def _run_or_none(client: MlflowClient, run_id: str):
    try:
        return client.get_run(run_id)
    except MlflowException:
        return None

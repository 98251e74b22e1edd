"""Tracking that survives a server outage, and `xentlab-sync JOB_DIR` to send what it kept.

Every call a run makes once training has started (epoch metrics, test metrics, artifacts, the model, the final
status) goes through an `Outbox`. While the tracking store answers, calls go straight to it. When a call fails
and a short probe confirms the server is gone, or a SQL store is busy (locked by another process: retried with
backoff for up to `store_wait_s()` first), that call and every later one are appended to
`<job dir>/outbox/journal.jsonl` (files copied beside it) and training goes on. At each epoch end one probe of at
most PROBE_TIMEOUT_S seconds asks whether the store is back; if it is, the journal is replayed in order. A job
whose SQLite store is still busy at its end waits for it (up to `store_wait_s()`); what is still pending then is
sent by `xentlab-sync JOB_DIR`. Errors the store answers (a bad value, a permission, a damaged file) are not
outages: they propagate and fail the run.

Epoch metrics and heartbeats may go asynchronously (`synchronous=False`: MLflow's own async logging, written by its
worker threads while training goes on). `settle()` waits for them: what met an outage is kept as above, an error
the store answered is raised there. Every synchronous call, the end of the run included, settles first, so the
store sees the calls in order and nothing queued is lost.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from xentlab.tracking.store import (
    TrackingUnreachable,
    mask_text,
    probe_server,
    sqlite_free,
    sqlite_path,
    store_fault,
    store_wait_s,
)

OUTBOX = "outbox"
PROBE_TIMEOUT_S = 2.0
ASYNC_PROBE_S = 0.5  # a SQLite store locked for longer at an asynchronous call: the record is kept at once


class Outbox:
    """The calls of one run, sent live or kept in `<job_dir>/outbox` until the server answers again."""

    def __init__(self, uri: str, run_id: str, job_dir: str | Path) -> None:
        self.uri, self.run_id = uri, run_id
        self.folder = Path(job_dir) / OUTBOX
        self.client = MlflowClient(uri)
        self._in_flight: list[tuple[dict[str, Any], bool, Any]] = []  # (record, keep, MLflow's RunOperations)

    # ------------------------------------------------------------------------------------------ the calls
    def log_metrics(self, metrics: dict[str, float], step: int = 0, synchronous: bool = True) -> None:
        """synchronous=False: queued for MLflow's worker threads (see `settle`)."""
        now = int(time.time() * 1000)
        op = {"op": "metrics", "step": step, "timestamp": now, "metrics": {k: float(v) for k, v in metrics.items()}}
        if synchronous:
            self._send(op)
        else:
            self._send_async(op)

    def set_tag(self, key: str, value: str, keep: bool = True, synchronous: bool = True) -> None:
        """keep=False: dropped during an outage (a heartbeat is worthless later)."""
        op = {"op": "tag", "key": key, "value": value}
        if not synchronous:
            self._send_async(op, keep=keep)
        elif keep:
            self._send(op)
        elif not self.pending:
            self._try_live(op, patience_s=0.0)

    def log_text(self, text: str, artifact_file: str) -> None:
        self._send({"op": "text", "text": text, "artifact_file": artifact_file})

    def log_artifacts(self, local_dir: str | Path, artifact_path: str) -> None:
        self._send({"op": "artifacts", "path": str(local_dir), "artifact_path": artifact_path})

    def log_keras_model(self, model, **kwargs: Any) -> None:
        """`mlflow.keras.log_model` live; during an outage the saved MLflow model folder is kept and later
        sent as the run's `model/` artifacts (load it with `mlflow.keras.load_model("runs:/<id>/model")`)."""
        if self.retry():
            try:
                mlflow.keras.log_model(model, name="model", **kwargs)
                return
            except Exception as err:  # noqa: BLE001 - only an outage is kept; anything else re-raised
                self._raise_unless_outage(err)
        folder = self._files(self._count()) / "model"
        mlflow.keras.save_model(model, str(folder), **kwargs)
        self._append({"op": "artifacts", "path": str(folder), "artifact_path": "model"}, staged=True)

    def end(self, status: str) -> None:
        """Terminates the run with `status`; during an outage the status waits in the journal. A SQLite store that
        is still busy is waited for (up to `store_wait_s()`), so the run itself sends what it kept."""
        try:
            self.settle()
        except Exception as err:  # noqa: BLE001 - the status must still go out; the run says what went wrong
            print(f"warning: a tracking record of run {self.run_id} was not logged: {mask_text(str(err))[:500]}",
                  file=sys.stderr, flush=True)
        self._send({"op": "end", "status": status, "timestamp": int(time.time() * 1000)})
        deadline, delay = time.monotonic() + store_wait_s(), 0.5
        while self.pending and sqlite_path(self.uri) is not None and time.monotonic() < deadline:
            time.sleep(delay)
            delay = min(2 * delay, 4.0)
            self.retry()

    # ------------------------------------------------------------------------------------------ the journal
    @property
    def journal(self) -> Path:
        return self.folder / "journal.jsonl"

    def _count(self) -> int:
        return len(self.journal.read_text().splitlines()) if self.journal.is_file() else 0

    def _sent(self) -> int:
        marker = self.folder / "sent"
        return int(marker.read_text()) if marker.is_file() else 0

    @property
    def pending(self) -> int:
        """Records kept and not yet sent."""
        return self._count() - self._sent()

    def _files(self, seq: int) -> Path:
        return self.folder / "files" / str(seq)

    def _append(self, op: dict[str, Any], staged: bool = False) -> None:
        seq = self._count()
        if op["op"] == "artifacts" and not staged:  # the source is a temporary folder: keep a copy
            target = self._files(seq) / "artifacts"
            shutil.copytree(op["path"], target)
            op = {**op, "path": str(target)}
        if seq == 0:
            self.folder.mkdir(parents=True, exist_ok=True)
            # The URI as given (xentlab-sync must reach the same server); Hydra's .hydra/config.yaml beside it
            # holds it too. Only what is printed or sent to the server is masked.
            (self.folder / "run.json").write_text(json.dumps({"uri": self.uri, "run_id": self.run_id}))
            db = sqlite_path(self.uri)
            state = (f"tracking store {db} is locked by another process" if db else
                     f"tracking server {mask_text(self.uri)} does not answer")
            print(f"{state}: training goes on, tracking records are kept in {self.folder} and sent when it is "
                  f"back (or by `xentlab-sync {self.folder.parent}`)", file=sys.stderr, flush=True)
        with self.journal.open("a") as f:
            f.write(json.dumps(op) + "\n")

    def _mark_sent(self, count: int) -> None:
        marker = self.folder / "sent"
        tmp = marker.with_suffix(".tmp")
        tmp.write_text(str(count))
        tmp.replace(marker)

    # ------------------------------------------------------------------------------------------ sending
    def _raise_unless_outage(self, err: BaseException) -> None:
        """Returns when `err` is an outage (a busy SQL store, or a server that does not answer a probe); re-raises
        anything else."""
        if store_fault(err) == "busy":
            return
        if not self.uri.startswith(("http://", "https://")):
            raise err
        try:
            probe_server(self.uri, PROBE_TIMEOUT_S)
        except TrackingUnreachable:
            return
        raise err  # the server answers: a real error

    def _reachable(self, probe_s: float = PROBE_TIMEOUT_S) -> bool:
        """One short probe: the server answers, or a SQLite store can be written."""
        db = sqlite_path(self.uri)
        if db is not None:
            return sqlite_free(db, probe_s)
        try:
            probe_server(self.uri, probe_s)
        except TrackingUnreachable:
            return False
        return True

    def _try_live(self, op: dict[str, Any], patience_s: float) -> bool:
        """Sends `op` now; a busy SQL store is retried with backoff for up to `patience_s`. False: an outage."""
        deadline, delay = time.monotonic() + patience_s, 0.5
        db = sqlite_path(self.uri)
        while True:
            # A SQLite store is asked first: MLflow would wait 20 s on a lock before failing.
            if db is None or sqlite_free(db, PROBE_TIMEOUT_S):
                try:
                    apply(self.client, self.run_id, op)
                    return True
                except Exception as err:  # noqa: BLE001 - only an outage is kept; anything else re-raised
                    self._raise_unless_outage(err)
                    if db is None and store_fault(err) != "busy":
                        return False  # a server that is gone: no point in asking again at once
            if time.monotonic() + delay > deadline:
                return False
            time.sleep(delay)
            delay = min(2 * delay, 4.0)

    def _send(self, op: dict[str, Any]) -> None:
        # Live only once everything kept or queued before it has gone out, so the store sees the calls in order.
        self.settle()
        if not (self.retry() and self._try_live(op, patience_s=store_wait_s())):
            self._append(op)

    def _send_async(self, op: dict[str, Any], keep: bool = True) -> None:
        """Queues `op` with MLflow's async logging; during an outage (kept records, a locked SQLite store) it is
        kept at once instead (keep=False: dropped)."""
        self._harvest(wait=False)
        # A heartbeat during an outage is worthless later; one queued behind another of its key could land first
        # (MLflow's worker threads write in parallel) and turn the tag back: the newer is sent next time instead.
        if not keep and (self.pending or any(o.get("key") == op.get("key") for o, _, _ in self._in_flight)):
            return
        db = sqlite_path(self.uri)
        if self.retry(ASYNC_PROBE_S if db else PROBE_TIMEOUT_S) and (db is None or sqlite_free(db, ASYNC_PROBE_S)):
            self._in_flight.append((op, keep, apply(self.client, self.run_id, op, synchronous=False)))
        elif keep:
            self._append(op)

    def settle(self) -> None:
        """Waits for every record queued asynchronously: written, kept (an outage) or raised (an error the store
        answered)."""
        self._harvest(wait=True)

    def _harvest(self, wait: bool) -> None:
        """Looks at the queued records (all of them, waiting, with `wait`; else those done) and keeps the ones an
        outage stopped."""
        still = []
        for op, keep, operations in self._in_flight:
            # The futures themselves: RunOperations.wait() turns the store's error into text (no busy/outage test).
            futures = operations._operation_futures
            if not wait and not all(f.done() for f in futures):
                still.append((op, keep, operations))
                continue
            for future in futures:
                try:
                    future.result()
                except Exception as err:  # noqa: BLE001 - only an outage is kept; anything else re-raised
                    self._in_flight = []
                    self._raise_unless_outage(err)
                    if keep:
                        self._append(op)
        self._in_flight = still

    def retry(self, probe_s: float = PROBE_TIMEOUT_S) -> bool:
        """Sends the journal if the store answers a probe of `probe_s`; True when nothing is pending afterwards."""
        if not self.pending:
            return True
        if not self._reachable(probe_s):
            return False
        try:
            self.flush()
        except Exception as err:  # noqa: BLE001 - gone again mid-replay: the rest stays kept
            self._raise_unless_outage(err)
            return False
        return True

    def flush(self) -> int:
        """Replays the kept records in order, marking each as sent; returns how many were sent."""
        lines = self.journal.read_text().splitlines() if self.journal.is_file() else []
        start = self._sent()
        for seq in range(start, len(lines)):
            apply(self.client, self.run_id, json.loads(lines[seq]))
            self._mark_sent(seq + 1)
        if len(lines) > start:
            print(f"sent {len(lines) - start} kept tracking records to run {self.run_id}", flush=True)
        return len(lines) - start


def apply(client: MlflowClient, run_id: str, op: dict[str, Any], synchronous: bool = True) -> Any:
    """Performs one outbox record against the tracking store; synchronous=False (metrics and tags only) returns
    MLflow's RunOperations."""
    kind = op["op"]
    if kind == "metrics":
        return client.log_batch(run_id, metrics=[
            Metric(key, value, op["timestamp"], op["step"]) for key, value in op["metrics"].items()
        ], synchronous=synchronous)
    if kind == "tag":
        return client.set_tag(run_id, op["key"], op["value"], synchronous=synchronous)
    if not synchronous:
        raise ValueError(f"outbox record {kind!r} is only sent synchronously")
    if kind == "text":
        client.log_text(run_id, op["text"], op["artifact_file"])
    elif kind == "artifacts":
        client.log_artifacts(run_id, op["path"], op["artifact_path"])
    elif kind == "end":
        run = client.get_run(run_id)
        if run.info.end_time and run.info.end_time > op["timestamp"]:
            return  # a later job (a resume) has ended the run since: its status stands
        end_run(client, run_id, op["status"], op["timestamp"])
    else:
        raise ValueError(f"unknown outbox record {kind!r}")


def end_run(client: MlflowClient, run_id: str, status: str, end_time: int) -> None:
    """Sets the run's final status and end time, as `MlflowClient.set_terminated` does without first stopping
    MLflow's async logging. Stopping it waits for its idle worker thread, which reads its queue with a 1 s timeout:
    0.5-1 s at the end of every run, for nothing once the outbox has settled every record it queued. The async
    logging stays ready for the next run of the process, and MLflow stops it at exit."""
    from mlflow.entities import RunStatus

    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    if store is None:  # another MLflow: its own way
        client.set_terminated(run_id, status, end_time=end_time)
        return
    store.update_run_info(run_id, run_status=RunStatus.from_string(status), end_time=end_time, run_name=None)

"""The tracking store: where it is (an absolute URI), its experiments, and the `xentlab.*` tag names.

Every module that reads or writes runs imports its names from here, so no two of them import each other.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import logging
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import mlflow
from mlflow.tracking import MlflowClient

from xentlab.errors import ExpectedError
from xentlab.masking import MASK, SECRET_NAME, mask_text, mask_uri, mask_value  # noqa: F401  (re-exported)

# Tags xentlab puts on runs (one spelling, one owner).
ERROR_TAG = "xentlab.error"  # the message of a FAILED or KILLED run
SWEEP_TAG = "xentlab.sweep_id"  # parent and children of one multirun sweep
ROLE_TAG = "xentlab.role"  # "sweep" on a sweep's parent run
BASELINE_TAG = "xentlab.baseline"  # on a sweep's parent run: the variant the report compares the others with
JOB_TAG = "xentlab.job_key"  # one training job (config + store): what resume matches on
HOST_TAG = "xentlab.host"
NODE_TAG = "xentlab.node"  # where a job ran: the host, and the Ray node under Ray (several may share a host)
PID_TAG = "xentlab.pid"
HEARTBEAT_TAG = "xentlab.heartbeat"
WARNING_TAG = "xentlab.warning"  # something in the config or data that is almost surely not what was meant
VARIANT_TAG = "xentlab.variant"  # on a sweep's child: the variant's short name (tracking.naming), for Group-by
VARIANT_OVERRIDES_TAG = "xentlab.variant_overrides"  # the same variant as its overrides (`+setup=balanced`)
VERDICT_TAG = "xentlab.verdict"  # on a sweep's parent: the primary metric's verdict per variant, one line each
SWEEP_KEY_TAG = "xentlab.sweep_key"  # on a sweep parent: its identity (tracking.sweeps); a rerun continues it
SWEEP_JOB_TAG = "xentlab.sweep_job"  # on a sweep's child: its job's varying overrides (the same in every attempt)
SUPERSEDED_TAG = "xentlab.superseded_by"  # on a sweep's child that a later run of its job replaced: that run's id
FAILED_JOBS_TAG = "xentlab.failed_jobs"  # on a FAILED sweep parent: how many of its jobs did not finish
# On a FINISHED child of one sweep that another sweep reused (same job, same data): `xentlab.in_sweep.<parent run
# id>` = {"variant", "variant_overrides", "job"} in that sweep, as JSON. Its report reads the run as its own child.
MEMBER_TAG_PREFIX = "xentlab.in_sweep."
STAGE_TAG = "xentlab.stage"  # on a tuned sweep's child: "tuning" (a trial) or "evaluation" (a tuned variant's seed)
TRIAL_TAG = "xentlab.trial"  # on a tuning child: its trial number within its variant's study
TUNING_TAG = "xentlab.tuning"  # on a tuned sweep's parent: budget, search spaces, chosen values, curves (JSON)
SEQUENTIAL_TAG = "xentlab.sequential"  # on a sequential sweep's parent: its design (JSON; report.sequential)
# On a run that logged evaluation/reliability.json: the same bins in compact JSON ({"num_bins", "count", "accuracy",
# "confidence", "ece"}; the edges are equal-width), so one search returns them for a whole sweep's report.
RELIABILITY_TAG = "xentlab.reliability"
POSTHOC_TAG = "xentlab.posthoc"  # why post-hoc logit adjustment did not apply to a run (text, a class never seen)
UNDEFINED_TAG = "xentlab.undefined_metrics"  # the metrics a run left out as undefined, and why (tracking.metric_log)


def member_tag(parent_run_id: str) -> str:
    """The tag that makes a run of another sweep a member of the sweep whose parent is `parent_run_id`."""
    return MEMBER_TAG_PREFIX + parent_run_id


# MLflow prints "View run <name> at: <server URI>/..." whenever a run on a server ends, the URI as given, so with
# its password. Every xentlab command that talks to a store imports this module: none of them lets MLflow print
# it (each prints its own masked line instead). An explicit setting in the environment wins.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


class _HandledStoreErrors(logging.Filter):
    """MLflow logs every SQL error of its store with a traceback before raising it; xentlab handles them (a busy
    store is waited for or its records kept, a damaged one is named), so the traceback is only noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("SQLAlchemy database error")


logging.getLogger("mlflow.store.db.utils").addFilter(_HandledStoreErrors())


def resolve_tracking_uri(uri: str | None, root: str | os.PathLike) -> str:
    """Returns an absolute tracking URI.

    None -> $MLFLOW_TRACKING_URI, else sqlite:///<root>/outputs/mlflow.db. A relative sqlite path or a plain
    folder is made absolute against `root` (the launch directory), so Hydra job folders never get stray stores.
    """
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    root = Path(root).resolve()
    if not uri:
        return f"sqlite:///{root / 'outputs' / 'mlflow.db'}"
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///"):])
        return f"sqlite:///{path if path.is_absolute() else (root / path).resolve()}"
    if "://" not in uri:
        return (root / uri).resolve().as_uri()
    return uri


def default_artifact_location(uri: str, experiment: str) -> str | None:
    """Artifacts of a local SQLite store go to outputs/mlartifacts/<experiment folder> beside it; servers
    choose their own.

    The folder is made from the experiment name but always stays inside mlartifacts/: characters other than
    letters, digits, `-`, `_` and `.` become `_` (no `/`, no `..`), and a renamed folder gets a hash of the
    name so two names never share one.
    """
    if not uri.startswith("sqlite:///"):
        return None
    root = Path(uri[len("sqlite:///"):]).parent / "mlartifacts"
    folder = re.sub(r"[^\w.-]+", "_", experiment).strip("._") or "experiment"
    if folder != experiment:
        folder += "-" + hashlib.sha1(experiment.encode()).hexdigest()[:8]
    return (root / folder).as_uri()


def ui_url(uri: str, experiment_id: str, run_id: str | None = None, base: str = "http://127.0.0.1:5000") -> str:
    """Where to look at a run (or, without run_id, at an experiment's runs table) in the MLflow UI: the server's
    own pages for an http(s) store (credentials masked), else `base`, the UI `make ui` serves over a local store.

    The links carry `workflowType=machine_learning`: the MLflow 3 UI otherwise starts on its GenAI pages (a
    choice kept in the browser, not on the server, so the link is the one way to land on the runs).
    """
    root = mask_uri(uri).rstrip("/") if uri.startswith(("http://", "https://")) else base.rstrip("/")
    page = f"runs/{run_id}" if run_id else "runs"
    return f"{root}/#/experiments/{experiment_id}/{page}?workflowType=machine_learning"


class TrackingUnreachable(ExpectedError, ConnectionError):
    """The tracking server does not answer."""


def probe_server(uri: str, timeout_s: float = 5.0) -> None:
    """Fails within `timeout_s` when an http(s) tracking server does not answer (MLflow's own client retries
    for minutes before giving up)."""
    import urllib.error
    import urllib.request

    if not uri.startswith(("http://", "https://")):
        return
    parts = urlsplit(uri)
    # urllib refuses user:password@ in a URL: send the credentials as a basic-auth header, as MLflow does.
    bare = urlunsplit(parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")))
    request = urllib.request.Request(bare.rstrip("/") + "/health")
    if parts.username is not None:
        token = base64.b64encode(f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        urllib.request.urlopen(request, timeout=timeout_s).close()
    except (urllib.error.URLError, OSError) as err:
        raise TrackingUnreachable(
            f"tracking server {mask_uri(uri)} did not answer within {timeout_s:.0f} s ({err}); start it "
            f"(e.g. `mlflow server --host 127.0.0.1`) or point tracking.uri elsewhere (null = outputs/mlflow.db)"
        ) from err


def setup_experiment(uri: str, experiment: str) -> str:
    """Points MLflow at `uri` and returns the id of `experiment`, creating it (with artifact location) if new.

    Raises:
        TrackingUnreachable: a server that does not answer.
        StoreBusy: a SQLite store locked by another process for longer than `store_wait_s()`.
        StoreDamaged: a SQLite store file that is not a complete database.
    """
    probe_server(uri)
    wait_for_sqlite(uri, store_wait_s())
    with store_errors(uri):
        return _find_or_create_experiment(uri, experiment)


def _find_or_create_experiment(uri: str, experiment: str) -> str:
    """The id of `experiment` in the store at `uri`, created if new (store errors as MLflow raises them)."""
    if uri.startswith(("http://", "https://")):
        # MLflow's defaults retry a lost server for minutes at every call; a short policy lets the outbox
        # (xentlab.tracking.outbox) take over within seconds. Explicit settings in the environment win.
        for name, value in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2"), ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1"),
                            ("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")):
            os.environ.setdefault(name, value)
    mlflow.set_tracking_uri(uri)
    with _store_lock(uri):  # several jobs starting on a fresh store must not race on its schema creation
        client = MlflowClient(uri)
        found = client.get_experiment_by_name(experiment)
        if found is None:
            try:
                experiment_id = client.create_experiment(
                    experiment, artifact_location=default_artifact_location(uri, experiment),
                    tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND},
                )
            except mlflow.exceptions.MlflowException:  # created meanwhile by a job on another host
                experiment_id = client.get_experiment_by_name(experiment).experiment_id
            return experiment_id
    if EXPERIMENT_KIND_TAG not in found.tags:  # made by an older xentlab or by hand
        client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return found.experiment_id


# The MLflow 3 UI opens an experiment on its GenAI pages unless it is marked as model training.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


@contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """For a SQLite store: checks its folder can be written (MLflow would retry for minutes, then say only
    "unable to open database file") and holds an exclusive lock beside it while the store is opened."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    db = Path(uri[len("sqlite:///"):])
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
        lock = open(db.with_name(db.name + ".lock"), "a")  # noqa: SIM115
    except OSError as err:
        raise StoreNotWritable(
            f"the tracking store {db} cannot be created or written ({err.strerror}: {db.parent}); make the "
            f"folder writable, or point tracking.uri at another store (e.g. tracking.uri=sqlite:///$HOME/mlflow.db)"
        ) from err
    if (db.exists() and not os.access(db, os.W_OK)) or not os.access(db.parent, os.W_OK):
        lock.close()
        raise StoreNotWritable(
            f"the tracking store {db} is not writable (folder {db.parent}); make it writable, or point "
            f"tracking.uri at another store (e.g. tracking.uri=sqlite:///$HOME/mlflow.db)"
        )
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class StoreNotWritable(ExpectedError, PermissionError):
    """The tracking store's file or folder cannot be written."""


# ---------------------------------------------------------------------------------------------- a busy or damaged store
STORE_WAIT_ENV = "XENTLAB_STORE_WAIT_S"  # how long a locked store is waited for (tests set a short budget)
STORE_WAIT_S = 30.0
SQLITE_HEADER = b"SQLite format 3\x00"
_BUSY = re.compile(r"database (?:table )?is locked|database is busy|timed out|timeout", re.IGNORECASE)
_DAMAGED = re.compile(r"file is not a database|disk image is malformed|file is encrypted", re.IGNORECASE)


class StoreBusy(ExpectedError, TimeoutError):
    """The tracking store stayed locked by another process."""


class StoreDamaged(ExpectedError, RuntimeError):
    """The tracking store's file is not a complete database."""


def store_wait_s() -> float:
    """Seconds a locked store is waited for (retried with backoff) before the records are kept or the job stops."""
    return float(os.environ.get(STORE_WAIT_ENV) or STORE_WAIT_S)


def sqlite_path(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def store_fault(err: BaseException) -> str | None:
    """"busy" for a transient error of a SQL store (locked, busy, timed out), "damaged" for a store file that is
    not a database, None for anything else (a permanent error, or not the store's)."""
    import sqlite3

    from sqlalchemy.exc import DBAPIError

    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, (sqlite3.Error, DBAPIError)):
            if _BUSY.search(str(seen)):
                return "busy"
            if _DAMAGED.search(str(seen)):
                return "damaged"
        seen = seen.__cause__ or seen.__context__
    return None


def _fault_error(uri: str, fault: str, detail: str) -> ExpectedError:
    db = sqlite_path(uri)
    where = f"the tracking store {db or mask_text(uri)}"
    if fault == "busy":
        find = f"`fuser {db}` shows it" if db else "the database's own tools show it"
        return StoreBusy(
            f"{where} is locked by another process ({detail}); {find} (an open sqlite3 shell, a backup, a sync "
            f"tool). Let it finish and start again, or point tracking.uri at another store "
            f"(waited {store_wait_s():.0f} s; ${STORE_WAIT_ENV} sets how long)")
    return StoreDamaged(
        f"{where} is not a complete SQLite database ({detail}): cut short (a full disk, a copy that did not "
        f"finish) or another kind of file. Move it aside (mv {db} {db}.damaged) for a new store, restore it from a "
        f"backup, or point tracking.uri at another store")


@contextmanager
def store_errors(uri: str) -> Iterator[None]:
    """Turns a busy or damaged store's errors (MLflow wraps them in tracebacks of SQL) into StoreBusy and
    StoreDamaged, which name the store and the fix."""
    try:
        yield
    except ExpectedError:
        raise
    except Exception as err:
        fault = store_fault(err)
        if fault is None:
            raise
        cause = err.__cause__ or err
        raise _fault_error(uri, fault, str(getattr(cause, "orig", cause)).splitlines()[0]) from err


def sqlite_damage(db: Path) -> str | None:
    """What is wrong with a SQLite file, from its 100-byte header alone (None: nothing seen): not a database, or
    shorter than the page count its header records (a truncated copy)."""
    size = db.stat().st_size
    if size == 0:
        return None  # SQLite makes an empty file a new database
    with db.open("rb") as f:
        header = f.read(100)
    if not header.startswith(SQLITE_HEADER) or len(header) < 100:
        return "file is not a database"
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    # The header's page count is valid when its "version valid for" equals the change counter.
    if header[92:96] == header[24:28] and pages and size < pages * page_size:
        return f"the file holds {size} bytes, its header records {pages} pages of {page_size} bytes"
    return None


def sqlite_free(db: Path, timeout_s: float) -> bool:
    """True when a write lock on the SQLite store `db` can be taken within `timeout_s` (taken and released)."""
    import sqlite3

    if not db.is_file():
        return True  # nothing to wait for (and connecting would create the file)
    try:
        conn = sqlite3.connect(db, timeout=timeout_s)
    except sqlite3.Error:
        return True  # cannot be opened at all: MLflow's own call says why
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.rollback()
        return True
    except sqlite3.OperationalError as err:
        if _BUSY.search(str(err)):
            return False
        return True
    except sqlite3.Error:
        return True
    finally:
        conn.close()


def wait_for_sqlite(uri: str, budget_s: float) -> None:
    """For an existing SQLite store: refuses a damaged file, and waits up to `budget_s` (with backoff) for a
    lock another process holds. MLflow would wait 20 s and then print a traceback of SQL."""
    db = sqlite_path(uri)
    if db is None or not db.is_file():
        return
    damage = sqlite_damage(db)
    if damage:
        raise _fault_error(uri, "damaged", damage)
    deadline, delay = time.monotonic() + budget_s, 0.25
    while not sqlite_free(db, min(2.0, max(budget_s, 0.1))):
        if time.monotonic() >= deadline:
            raise _fault_error(uri, "busy", "a write lock could not be taken")
        time.sleep(delay)
        delay = min(delay * 2, 4.0)


def log_input(dataset, context: str, attempts: int = 4) -> None:
    """mlflow.log_input, again when another run inserted the same dataset at the same moment: MLflow looks for the
    dataset, then inserts it, so jobs starting together race on its row (PostgreSQL, MySQL, and SQLite too: the
    look-up does not lock); the call is one transaction, and the next attempt finds the row and links it."""
    from mlflow.exceptions import MlflowException

    for attempt in range(attempts):
        try:
            mlflow.log_input(dataset, context=context)
            return
        except MlflowException as err:
            text = str(err)
            raced = ("dataset_pk" in text or "UNIQUE constraint failed: datasets." in text
                     or ("Duplicate entry" in text and "datasets" in text))
            if not raced or attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))

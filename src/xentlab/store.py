"""The tracking store: where it is (an absolute URI), its experiments, and the `xentlab.*` tag names.

Every module that reads or writes runs imports its names from here, so no two of them import each other.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import mlflow
from mlflow.tracking import MlflowClient

# Tags xentlab puts on runs (one spelling, one owner).
ERROR_TAG = "xentlab.error"  # the message of a FAILED or KILLED run
SWEEP_TAG = "xentlab.sweep_id"  # parent and children of one multirun sweep
ROLE_TAG = "xentlab.role"  # "sweep" on a sweep's parent run
BASELINE_TAG = "xentlab.baseline"  # on a sweep's parent run: the variant the report compares the others with
JOB_TAG = "xentlab.job_key"  # one training job (config + store): what resume matches on
HOST_TAG = "xentlab.host"
PID_TAG = "xentlab.pid"
HEARTBEAT_TAG = "xentlab.heartbeat"

ERROR_TAG = "xentlab.error"
SECRET_NAME = re.compile(r"password|passwd|token|secret|key|credential", re.IGNORECASE)
MASK = "***"


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
    """Artifacts of a local SQLite store go to outputs/mlartifacts beside it; servers choose their own."""
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri[len("sqlite:///"):])
    return (db.parent / "mlartifacts" / experiment).as_uri()


class TrackingUnreachable(ConnectionError):
    """The tracking server does not answer."""


def probe_server(uri: str, timeout_s: float = 5.0) -> None:
    """Fails within `timeout_s` when an http(s) tracking server does not answer (MLflow's own client retries
    for minutes before giving up)."""
    import urllib.error
    import urllib.request

    if not uri.startswith(("http://", "https://")):
        return
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s).close()
    except (urllib.error.URLError, OSError) as err:
        raise TrackingUnreachable(
            f"tracking server {mask_uri(uri)} did not answer within {timeout_s:.0f} s ({err}); start it "
            f"(e.g. `mlflow server --host 127.0.0.1`) or point tracking.uri elsewhere (null = outputs/mlflow.db)"
        ) from err


def setup_experiment(uri: str, experiment: str) -> str:
    """Points MLflow at `uri` and returns the id of `experiment`, creating it (with artifact location) if new."""
    probe_server(uri)
    if uri.startswith(("http://", "https://")):
        # MLflow's defaults retry a lost server for minutes at every call; a short policy lets the outbox
        # (xentlab.outbox) take over within seconds. Explicit settings in the environment win.
        for name, value in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2"), ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1"),
                            ("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")):
            os.environ.setdefault(name, value)
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(experiment, artifact_location=default_artifact_location(uri, experiment))
    except mlflow.exceptions.MlflowException:  # created meanwhile by a parallel job
        return client.get_experiment_by_name(experiment).experiment_id


def mask_uri(value: str) -> str:
    """Hides the password of credentials inside a URI (scheme://user:password@host)."""
    try:
        parts = urlsplit(value)
    except ValueError:
        return value
    if parts.password is None:
        return value
    netloc = f"{parts.username}:{MASK}@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))



"""`xentlab-compare`: the comparison report of a sweep, printed and logged to its parent run.

Errors about the input (no store, no such sweep, baseline or metric) are printed as xentlab-train prints them: one
block naming what was wrong and how to fix it, exit status 2; a bug keeps its traceback (exit status 1).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

from mlflow.tracking import MlflowClient

from xentlab.cli.console import command
from xentlab.errors import ReportError
from xentlab.report.columns import COLUMN_NAMES, SWEEP_ID
from xentlab.report.compare import write_report
from xentlab.report.query import find_parent
from xentlab.tracking.store import SWEEP_TAG, mask_uri, probe_server, resolve_tracking_uri


def open_store(uri: str, explicit: bool) -> MlflowClient:
    """A client on an existing store: a read-only command never creates one (a missing SQLite file, a server
    that does not answer: fails within seconds, saying where it looked and how to point elsewhere)."""
    db = None
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
    elif uri.startswith("file:"):  # a folder store (mlruns/)
        db = Path(url2pathname(urlsplit(uri).path))
    if db is not None and not db.exists():
        source = "--tracking-uri" if explicit else (
            "$MLFLOW_TRACKING_URI" if os.environ.get("MLFLOW_TRACKING_URI") else "the default, outputs/mlflow.db "
            "under the current folder")
        raise ReportError(
            f"no tracking store at {db} (from {source}). Run it from the folder that holds outputs/ (where `make "
            "sweep` ran), or pass --tracking-uri sqlite:////abs/path/mlflow.db or --tracking-uri http://HOST:5000 "
            "(or set MLFLOW_TRACKING_URI)")
    probe_server(uri)  # TrackingUnreachable: an expected error naming the server
    return MlflowClient(uri)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="xentlab-compare", description=main.__doc__)
    parser.add_argument("--experiment", default="xentlab")
    parser.add_argument("--sweep", default="latest",
                        help="a sweep id (tag xentlab.sweep_id), the run id of its parent run, or 'latest'")
    parser.add_argument("--metric", default=None,
                        help="primary metric (default val_nll: one scale for every loss; val_bpc for language "
                        f"models): one of {COLUMN_NAMES}. Another metric is reported beside the sweep's verdict "
                        "(report/<metric>/, tag xentlab.verdict.<metric>), never over it")
    parser.add_argument("--baseline", default=None,
                        help="the variant the others are compared with, as in the report (e.g. loss=crossentropy; "
                        "overrides in any order); default: the sweep preset's, else the first variant launched")
    parser.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI or outputs/mlflow.db")
    parser.add_argument("--out", default=None, help="folder for the files (default: outputs/reports/<sweep id>)")
    args = parser.parse_args(argv)
    if args.metric is not None and args.metric not in COLUMN_NAMES:
        parser.error(f"--metric must be one of {COLUMN_NAMES}, got {args.metric!r}")
    if not SWEEP_ID.match(args.sweep):
        parser.error(f"--sweep must be 'latest', a sweep id or a run id (letters, digits, '_', '-', '.'; the tag "
                     f"{SWEEP_TAG} of a parent run, e.g. 3f9c2a1b7d4e), got {args.sweep!r}")
    return args


@command
def main(argv: list[str] | None = None) -> None:
    """`xentlab-compare [--experiment E] [--sweep ID|RUN_ID|latest] [--metric val_nll] [--baseline VARIANT]`:
    prints the report, logs it to the sweep's parent run (files, headline, differences) and prints the run's link."""
    compare(parse_args(argv))


def compare(args: argparse.Namespace) -> None:
    uri = resolve_tracking_uri(args.tracking_uri, os.getcwd())
    client = open_store(uri, explicit=args.tracking_uri is not None)
    experiment = client.get_experiment_by_name(args.experiment)
    if experiment is None:
        raise ReportError(f"no experiment {args.experiment!r} in {mask_uri(uri)}; pass --experiment NAME")
    parent = find_parent(client, [experiment.experiment_id], args.sweep)
    sweep_id = client.get_run(parent).data.tags[SWEEP_TAG]
    out = Path(args.out or Path("outputs") / "reports" / sweep_id)
    report = write_report(uri, parent_run_id=parent, out_dir=out, metric=args.metric, baseline=args.baseline)
    print(report.markdown)
    print(f"\nwritten: {', '.join(str(f) for f in report.files)} (also logged to parent run {parent})")
    from xentlab.cli.sweep import print_parent_link

    print_parent_link(client, uri, parent)


if __name__ == "__main__":
    main()

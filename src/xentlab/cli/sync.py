"""`xentlab-sync JOB_DIR...`: sends the tracking records a job kept while the server was unreachable."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from xentlab.cli.console import command
from xentlab.errors import ExpectedError
from xentlab.tracking.outbox import OUTBOX, Outbox
from xentlab.tracking.store import ERROR_TAG, probe_server, store_errors, store_wait_s, wait_for_sqlite


class JobFolderMissing(ExpectedError, FileNotFoundError):
    """A folder passed to xentlab-sync that does not exist."""


def find_outboxes(paths: list[str]) -> list[Path]:
    """Job folders holding an outbox: each path itself, or any folder below it (a sweep folder)."""
    found: list[Path] = []
    for path in map(Path, paths):
        if not path.exists():
            raise JobFolderMissing(f"{path} does not exist: pass a job folder (outputs/runs/...) or a sweep folder")
        found += [p.parent.parent for p in sorted(path.glob(f"**/{OUTBOX}/run.json"))]
    return found


@command
def sync_main(argv: list[str] | None = None) -> int:
    """`xentlab-sync JOB_DIR...`: sends the tracking records a job kept while the server was unreachable."""
    parser = argparse.ArgumentParser(prog="xentlab-sync", description=sync_main.__doc__)
    parser.add_argument("job_dirs", nargs="+", metavar="JOB_DIR", help="job folder(s), or a sweep folder above them")
    parser.add_argument("--tracking-uri", default=None,
                        help="send to this store instead of the one the job used (e.g. the server moved)")
    args = parser.parse_args(argv)
    jobs = find_outboxes(args.job_dirs)
    if not jobs:
        print("xentlab-sync: no kept tracking records under " + ", ".join(args.job_dirs))
        return 0
    failed = 0
    for job in jobs:
        info = json.loads((job / OUTBOX / "run.json").read_text())
        uri = args.tracking_uri or info["uri"]
        outbox = Outbox(uri, info["run_id"], job)
        if not outbox.pending:
            print(f"{job}: nothing pending (run {info['run_id']})")
            continue
        try:
            probe_server(uri, 10.0)
            wait_for_sqlite(uri, store_wait_s())
            with store_errors(uri):
                sent = outbox.flush()
        except ExpectedError as err:  # the store unreachable, busy, ...: report per job, go on with the others
            failed += 1
            print(f"{job}: {outbox.pending} records still pending: {type(err).__name__}: {err}", file=sys.stderr)
            continue
        run = outbox.client.get_run(info["run_id"])
        error = run.data.tags.get(ERROR_TAG, "")
        print(f"{job}: sent {sent} records to run {info['run_id']} ({run.info.status}{': ' + error if error else ''})")
    return 1 if failed else 0


def main() -> None:
    sys.exit(sync_main())

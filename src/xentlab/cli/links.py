"""`python -m xentlab.cli.links`: what `make ui` prints before it serves the store, the pages to open.

The latest sweep's parent run (its description holds the verdict) and each experiment's runs table, as deep links
in MLflow's Model-training view (`workflowType=machine_learning`): MLflow 3.x has no server setting for that view,
its UI keeps the choice in the browser and starts on the GenAI pages, so a link that says it is the one way in.
Reads the store only: a missing SQLite file is reported, never created.
"""

from __future__ import annotations

import argparse
import os
from datetime import datetime
from pathlib import Path

from xentlab.cli.console import command
from xentlab.tracking.store import ROLE_TAG, SWEEP_TAG, mask_uri, resolve_tracking_uri, ui_url


def ui_base(host: str, port: int | str) -> str:
    """The address a browser on this machine opens for `mlflow ui --host HOST --port PORT`."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # a wildcard bind is reached on loopback
    return f"http://{shown}:{port}"


def sweep_runs_url(uri: str, experiment_id: str, sweep_id: str, base: str) -> str:
    """The runs table filtered to one sweep (its parent and children: tag xentlab.sweep_id), oldest first, so the
    baseline (launched first) leads and MLflow's charts, which draw the first runs only, include it."""
    from urllib.parse import quote

    search = quote(f"tags.`{SWEEP_TAG}` = '{sweep_id}'", safe="")
    return (f"{ui_url(uri, experiment_id, None, base)}&searchFilter={search}"
            "&orderByKey=attributes.start_time&orderByAsc=true")


def links(uri: str, base: str) -> list[str]:
    """The lines to print: the latest sweep's parent run, then each experiment's runs table."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiments = [e for e in client.search_experiments() if e.name != "Default" or e.experiment_id != "0"]
    if not experiments:
        return [f"no experiment in {mask_uri(uri)} yet: `make train` or `make sweep` first; then open "
                f"{base}/#/experiments?workflowType=machine_learning"]
    lines = []
    ids = [e.experiment_id for e in experiments]
    sweeps = client.search_runs(ids, f"tags.`{ROLE_TAG}` = 'sweep'", order_by=["attributes.start_time DESC"],
                                max_results=1)
    if sweeps:
        run = sweeps[0]
        started = datetime.fromtimestamp(run.info.start_time / 1000).strftime("%Y-%m-%d %H:%M")
        lines.append(f"latest sweep {run.data.tags.get(SWEEP_TAG, '?')} ({run.info.status}, started {started}), "
                     "its verdict on the Overview:")
        lines.append(f"  {ui_url(uri, run.info.experiment_id, run.info.run_id, base)}")
        sweep_id = run.data.tags.get(SWEEP_TAG, "")
        lines.append("its runs alone (Group by: xentlab.variant gives one group per variant):")
        lines.append(f"  {sweep_runs_url(uri, run.info.experiment_id, sweep_id, base)}")
    for experiment in experiments:
        lines.append(f"every run of experiment {experiment.name}:")
        lines.append(f"  {ui_url(uri, experiment.experiment_id, None, base)}")
    return lines


@command
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m xentlab.cli.links", description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI or outputs/mlflow.db")
    parser.add_argument("--host", default="127.0.0.1", help="the host `mlflow ui` binds")
    parser.add_argument("--port", default="5000", help="the port `mlflow ui` listens on")
    args = parser.parse_args(argv)
    uri = resolve_tracking_uri(args.tracking_uri, os.getcwd())
    base = ui_base(args.host, args.port)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        print(f"no tracking store at {uri[len('sqlite:///'):]} yet: `make train` or `make sweep` first; the UI "
              f"will be at {base}/#/experiments?workflowType=machine_learning", flush=True)
        return
    for line in links(uri, base):
        print(line, flush=True)


if __name__ == "__main__":
    main()

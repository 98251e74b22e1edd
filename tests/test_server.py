"""The team server for real: `make server` starts PostgreSQL (run by a non-root user) and `mlflow server
--serve-artifacts` over it, exactly as the README gives it; sweeps log to it, three at once from three folders, and
what they logged survives `make server-stop` and the next `make server`. The fast case checks the command line only."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import REPO, free_port, run_cli
from xentlab.cli.server import answers

# Tiny jobs (mlp on 64 digits, 2 epochs so every epoch can be counted), nothing heavy logged.
JOB = ["model=mlp", "data=digits", "data.limit=64", "trainer.epochs=2", "trainer.batch_size=32",
       "tracking.log_model=false", "tracking.log_plots=false", "tracking.system_metrics=false"]
EPOCH_METRICS = ("loss", "val_loss", "val_accuracy", "val_nll")
# Three people's sweeps, 16 jobs each, on different grids (three sweep identities, three parents).
SWEEPS = {"alice": ["loss=crossentropy,focal", "labels=sparse,one_hot", "loss.from_logits=true,false",
                    "trainer.seed=0,1"],
          "bob": ["optimizer=adam,sgd,rmsprop,adadelta", "trainer.seed=0,1,2,3"],
          "carol": ["weighting=none,balanced,inverse_sqrt,effective_number", "trainer.seed=0,1,2,3"]}


def make(target: str, server_dir: Path, port: int, timeout: float = 600) -> subprocess.CompletedProcess:
    """`make TARGET` in the repository, as the README gives it, with the test's folder and port."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "MFLAGS"))}
    result = subprocess.run(["make", "-s", "-C", str(REPO), target, f"SERVER_DIR={server_dir}", f"PORT={port}"],
                            capture_output=True, text=True, timeout=timeout, env=env)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return result


@contextmanager
def team_server():
    """`make server` on a free port in a folder the database user can reach (pytest's own tmp folders are closed
    to other users): yields (its tracking URI, its folder, its port); `make server-stop` and the folder removed
    after."""
    folder, port = Path(tempfile.mkdtemp(prefix="xentlab-server-")), free_port()
    folder.chmod(0o755)
    try:
        started = make("server", folder / "server", port)
        uri = f"http://127.0.0.1:{port}"
        assert f"tracking.uri={uri}" in started.stdout and f"UI: {uri}/#/experiments" in started.stdout
        yield uri, folder / "server", port
    finally:
        if (folder / "server").exists():
            subprocess.run(["make", "-s", "-C", str(REPO), "server-stop", f"SERVER_DIR={folder / 'server'}"],
                           capture_output=True, timeout=120)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def server():
    with team_server() as started:
        yield started


def sweep(uri: str, cwd: Path, grid: list[str]) -> subprocess.CompletedProcess:
    cwd.mkdir(parents=True, exist_ok=True)
    return run_cli(["-m", *JOB, *grid, f"tracking.uri={uri}"], cwd=cwd, timeout=1500)


def sweep_runs(uri: str) -> tuple[dict, dict]:
    """Parents by sweep id, and children by parent run id, every run of the experiment."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("xentlab")
    runs = client.search_runs([experiment.experiment_id], max_results=5000) if experiment else []
    parents = {r.data.tags["xentlab.sweep_id"]: r for r in runs if r.data.tags.get("xentlab.role") == "sweep"}
    children: dict[str, list] = {}
    for r in runs:
        if "mlflow.parentRunId" in r.data.tags:
            children.setdefault(r.data.tags["mlflow.parentRunId"], []).append(r)
    return parents, children


def assert_complete_sweep(uri: str, parent, children: list, jobs: int, tmp_path: Path) -> None:
    """The parent FINISHED over exactly its jobs: one FINISHED child each, every epoch logged once, the report
    counting exactly these children."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    assert parent.info.status == "FINISHED", parent.data.tags.get("xentlab.error")
    assert len(children) == jobs and all(c.info.status == "FINISHED" for c in children)
    assert len({c.data.tags["xentlab.job_key"] for c in children}) == jobs  # no job twice
    assert {c.data.tags["xentlab.sweep_id"] for c in children} == {parent.data.tags["xentlab.sweep_id"]}
    for child in children:
        for key in EPOCH_METRICS:
            steps = sorted(m.step for m in client.get_metric_history(child.info.run_id, key))
            assert steps == [0, 1], (child.info.run_name, key, steps)
    path = client.download_artifacts(parent.info.run_id, "report/report.csv", str(tmp_path / parent.info.run_id))
    rows = list(csv.DictReader(Path(path).open()))
    assert sum(int(r["n"]) for r in rows) == jobs
    assert {r["variant"] for r in rows} == {c.data.tags["xentlab.variant"] for c in children}


# ------------------------------------------------------------------------------------------------ the fast check
def test_server_command_line_runs_postgres_as_a_user_and_serves_artifacts(tmp_path, capsys):
    from xentlab.cli.server import main

    main(["start", "--dry-run", "--dir", str(tmp_path / "srv"), "--port", "5123"])
    steps = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines() if ": " in line)
    assert {"initdb", "postgres", "createdb", "mlflow", "postgres_stop"} <= set(steps)
    mlflow = steps["mlflow"]
    assert "--serve-artifacts" in mlflow and f"--artifacts-destination {tmp_path / 'srv' / 'artifacts'}" in mlflow
    assert "--host 127.0.0.1 --port 5123" in mlflow
    assert f"/mlflow?host={tmp_path / 'srv' / 'socket'}" in mlflow and "postgresql+psycopg2://" in mlflow
    assert "-c listen_addresses= " in steps["postgres"]  # no TCP port: the socket only
    if os.geteuid() == 0:  # PostgreSQL refuses root: its commands run as its own user
        assert all(steps[s].startswith("runuser -u postgres -- ") for s in ("initdb", "postgres", "postgres_stop"))
    make_n = subprocess.run(["make", "-n", "-C", str(REPO), "server", "PORT=5123", "HOST=0.0.0.0"],
                            capture_output=True, text=True, timeout=60)
    assert "-m xentlab.cli.server start --dir outputs/server --host 0.0.0.0 --port 5123" in make_n.stdout


def test_answers_only_where_a_server_answers_its_health_endpoint():
    class Health(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the handler's name is http.server's)
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    with ThreadingHTTPServer(("127.0.0.1", 0), Health) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}"
        assert answers(url)
        assert not answers(f"{url}/elsewhere")  # /elsewhere/health: 404
        server.shutdown()
    assert not answers(url)  # nothing listens there any more


# ------------------------------------------------------------------------------------------------ the real server
@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_a_sweep_survives_server_stop_and_start(server, tmp_path):
    uri, server_dir, port = server
    first = sweep(uri, tmp_path / "first", ["loss=crossentropy,focal"])
    assert first.returncode == 0, (first.stdout + first.stderr)[-3000:]
    stopped = make("server-stop", server_dir, port)
    assert "MLflow server stopped" in stopped.stdout and "PostgreSQL stopped" in stopped.stdout
    assert not answers(uri) and not (server_dir / "socket" / ".s.PGSQL.5432").exists()
    restarted = make("server", server_dir, port)
    assert "cluster created" not in restarted.stdout and "database mlflow created" not in restarted.stdout
    second = sweep(uri, tmp_path / "second", ["optimizer=adam,sgd"])
    assert second.returncode == 0, (second.stdout + second.stderr)[-3000:]
    parents, children = sweep_runs(uri)
    assert len(parents) == 2
    for parent in parents.values():
        assert_complete_sweep(uri, parent, children[parent.info.run_id], 2, tmp_path)
    # Artifacts went through the server into its folder, not into the client's.
    assert list((server_dir / "artifacts").rglob("report.csv")) and not (tmp_path / "first" / "mlartifacts").exists()


@pytest.mark.slow
@pytest.mark.timeout(2400)  # 48 jobs on 2 shared cores: about 15 min when other work loads the machine
def test_three_concurrent_sweeps_lose_and_mix_nothing(server, tmp_path):
    uri, _, _ = server
    with ThreadPoolExecutor(len(SWEEPS)) as pool:  # three processes started together, each from its own folder
        results = dict(zip(SWEEPS, pool.map(lambda who: sweep(uri, tmp_path / who, SWEEPS[who]), SWEEPS),
                           strict=True))
    for who, result in results.items():
        assert result.returncode == 0, (who, (result.stdout + result.stderr)[-3000:])
        assert "16 jobs: 16 trained, 0 reused, 0 failed" in result.stdout, result.stdout[-2000:]
        text = (result.stdout + result.stderr).lower()
        assert "locked" not in text and "outbox" not in text and "kept in" not in text, (who, text[-2000:])
    parents, children = sweep_runs(uri)
    assert len(parents) == 3 and sum(len(c) for c in children.values()) == 48
    for parent in parents.values():
        assert_complete_sweep(uri, parent, children[parent.info.run_id], 16, tmp_path)

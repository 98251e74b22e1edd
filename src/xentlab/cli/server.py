"""`python -m xentlab.cli.server start|stop|status` (`make server`, `make server-stop`): a team's MLflow tracking
server on PostgreSQL, started from nothing under one folder (default `outputs/server/`).

start: a PostgreSQL cluster in DIR/pgdata (made by `initdb` the first time), run by a non-root user (`postgres`
when the command runs as root: PostgreSQL refuses root) and reached only through a Unix socket in DIR/socket (no
TCP port to guard); its database `mlflow`; then `mlflow server` over it with `--serve-artifacts` (artifacts in
DIR/artifacts: clients need no shared disk) on HOST:PORT. It prints the `tracking.uri` to use and the UI link.
stop: the MLflow server, then PostgreSQL (a fast shutdown: committed data stay). The data survive a stop and a start.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from xentlab.cli.console import command
from xentlab.errors import ExpectedError

DATABASE = "mlflow"
PG_PORT = 5432  # only names the socket file (.s.PGSQL.5432): the cluster listens on no TCP port
INSTALL = "apt-get update && apt-get install -y postgresql (`make server` does it when PostgreSQL is missing)"
SOCKET_PATH_MAX = 107  # a Unix socket's path, in bytes (sun_path)


class ServerError(ExpectedError, RuntimeError):
    """The team server cannot start or stop: what went wrong and how to fix it."""


@dataclass(frozen=True)
class Layout:
    """Where one server keeps everything: the database cluster, its socket, the artifacts, logs and pid file."""

    root: Path

    @property
    def pgdata(self) -> Path:
        return self.root / "pgdata"

    @property
    def socket_dir(self) -> Path:
        return self.root / "socket"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def pid_file(self) -> Path:
        return self.root / "mlflow.pid"

    @property
    def mlflow_log(self) -> Path:
        return self.root / "mlflow.log"

    @property
    def postgres_log(self) -> Path:
        return self.root / "postgres.log"


def postgres_bindir() -> Path:
    """The newest PostgreSQL's programs (Debian keeps them in /usr/lib/postgresql/<version>/bin)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if not found:
        raise ServerError(f"PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb); install Debian's "
                          f"package: {INSTALL}")
    return found[-1].parent


def database_user() -> str:
    """Who runs PostgreSQL: this user, or `postgres` (the Debian package's system user) when this is root."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid()).pw_name
    try:
        return pwd.getpwnam("postgres").pw_name
    except KeyError:
        raise ServerError("running as root and there is no `postgres` user to run PostgreSQL (it refuses root); "
                          f"Debian's package creates it: {INSTALL}") from None


def as_user(user: str, command: list[str]) -> list[str]:
    """`command` run as `user` (through runuser when this process is root and the user is another)."""
    if os.geteuid() == 0 and user != "root":
        return ["runuser", "-u", user, "--", *command]
    return command


def backend_uri(layout: Layout, user: str) -> str:
    """The SQLAlchemy URI of the server's database, through the cluster's Unix socket."""
    return f"postgresql+psycopg2://{user}@/{DATABASE}?host={layout.socket_dir}&port={PG_PORT}"


def tracking_uri(host: str, port: int) -> str:
    """What clients pass as tracking.uri (a wildcard bind is shown as this machine's name)."""
    shown = socket.gethostname() if host in ("0.0.0.0", "::", "") else host
    return f"http://{shown}:{port}"


def _allowed_hosts(host: str, port: int) -> list[str]:
    """On a wildcard bind, the names clients use (this machine's) join MLflow's default Host headers (localhost):
    its guard against DNS rebinding refuses the others."""
    if host not in ("0.0.0.0", "::", ""):
        return []
    names = dict.fromkeys(("localhost", "127.0.0.1", socket.gethostname(), socket.getfqdn()))
    return ["--allowed-hosts", ",".join(f"{n},{n}:{port}" for n in names)]


def commands(layout: Layout, host: str, port: int, user: str, bindir: Path, workers: int) -> dict[str, list[str]]:
    """Every command `start` and `stop` run, by step (what `--dry-run` prints)."""
    pg_options = f"-c listen_addresses= -k {shlex.quote(str(layout.socket_dir))} -p {PG_PORT}"  # no TCP: a socket
    socket_args = ["-h", str(layout.socket_dir), "-p", str(PG_PORT), "-U", user]
    return {
        "initdb": as_user(user, [str(bindir / "initdb"), "-D", str(layout.pgdata), "-U", user, "--auth=trust",
                                 "-E", "UTF8", "--no-locale"]),
        "postgres": as_user(user, [str(bindir / "pg_ctl"), "start", "-D", str(layout.pgdata), "-l",
                                   str(layout.postgres_log), "-w", "-t", "60", "-o", pg_options]),
        "has_database": [str(bindir / "psql"), *socket_args, "-d", "postgres", "-tAc",
                         f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"],
        "createdb": [str(bindir / "createdb"), *socket_args, DATABASE],
        "mlflow": [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri(layout, user),
                   "--serve-artifacts", "--artifacts-destination", str(layout.artifacts), "--host", host,
                   "--port", str(port), "--workers", str(workers), *_allowed_hosts(host, port)],
        "postgres_status": as_user(user, [str(bindir / "pg_ctl"), "status", "-D", str(layout.pgdata)]),
        "postgres_stop": as_user(user, [str(bindir / "pg_ctl"), "stop", "-D", str(layout.pgdata), "-m", "fast",
                                        "-w", "-t", "60"]),
    }


def _run(command: list[str], what: str) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise ServerError(f"{what} failed (exit {result.returncode}): {shlex.join(command)}\n"
                          f"{(result.stdout + result.stderr).strip()[-2000:]}")
    return result


def _prepare_folders(layout: Layout, user: str) -> None:
    """The server's folders; the cluster's and the socket's belong to the database user (0700), who must be able to
    reach them."""
    for folder in (layout.root, layout.artifacts):
        folder.mkdir(parents=True, exist_ok=True)
    layout.postgres_log.touch()
    for path in (layout.pgdata, layout.socket_dir, layout.postgres_log):
        if path.suffix != ".log":
            path.mkdir(mode=0o700, exist_ok=True)
        if os.geteuid() == 0:
            entry = pwd.getpwnam(user)
            os.chown(path, entry.pw_uid, entry.pw_gid)
    if len(str(layout.socket_dir / f".s.PGSQL.{PG_PORT}").encode()) > SOCKET_PATH_MAX:
        raise ServerError(f"the server folder {layout.root} is too deep for a Unix socket path (at most "
                          f"{SOCKET_PATH_MAX} bytes); pick a shorter one (make server SERVER_DIR=...)")
    if subprocess.run(as_user(user, ["test", "-w", str(layout.pgdata)])).returncode != 0:
        blocked = next((p for p in reversed(layout.pgdata.parents) if p.stat().st_mode & 0o001 == 0), layout.root)
        raise ServerError(f"the database user {user!r} cannot reach {layout.pgdata} ({blocked} is closed to other "
                          f"users, mode {oct(blocked.stat().st_mode & 0o777)}); pick a folder it can reach "
                          f"(make server SERVER_DIR=...) or open it: chmod o+x {blocked}")


def start_postgres(layout: Layout, steps: dict[str, list[str]]) -> str:
    """Initialises the cluster once, starts it unless it runs, creates the database once; what it did."""
    done = []
    if not (layout.pgdata / "PG_VERSION").is_file():
        _run(steps["initdb"], "initdb (a new PostgreSQL cluster)")
        done.append("cluster created")
    if subprocess.run(steps["postgres_status"], capture_output=True).returncode == 0:
        done.append("already running")
    else:
        _run(steps["postgres"], f"PostgreSQL (log: {layout.postgres_log})")
        done.append("started")
    if _run(steps["has_database"], "the database check").stdout.strip() != "1":
        _run(steps["createdb"], f"createdb {DATABASE}")
        done.append(f"database {DATABASE} created")
    return ", ".join(done)


def answers(url: str) -> bool:
    """Whether an MLflow server answers at `url` (its /health endpoint, within 2 s)."""
    try:
        urllib.request.urlopen(f"{url}/health", timeout=2).close()
        return True
    except OSError:
        return False


def _server_pid(layout: Layout) -> int | None:
    """The running MLflow server's process id from the pid file; None when it is not running."""
    try:
        pid = int(layout.pid_file.read_text().split()[0])
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError, IndexError):
        return None


def start_mlflow(layout: Layout, host: str, port: int, command: list[str], wait_s: float = 600) -> str:
    """Starts `mlflow server` in its own session (it outlives this command) and waits for /health (a fresh
    database: MLflow creates its tables first, minutes on a loaded machine)."""
    local = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::', '') else host}:{port}"
    if _server_pid(layout) is not None and answers(local):
        return "already running"
    with socket.socket() as probe:
        probe.settimeout(1)
        if probe.connect_ex((local.split("//")[1].rsplit(":", 1)[0], port)) == 0:
            raise ServerError(f"port {port} on {host} is taken by another program; pick another: "
                              f"make server PORT={port + 1}")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    with open(layout.mlflow_log, "ab") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env, cwd=layout.root)
    layout.pid_file.write_text(f"{proc.pid} {host} {port}\n")
    deadline = time.time() + wait_s
    while time.time() < deadline:
        if answers(local):
            return "started"
        if proc.poll() is not None:
            layout.pid_file.unlink(missing_ok=True)
            tail = layout.mlflow_log.read_text(errors="replace")[-2000:]
            raise ServerError(f"mlflow server exited with {proc.returncode} (log: {layout.mlflow_log}):\n{tail}")
        time.sleep(0.5)
    stop_mlflow(layout)
    raise ServerError(f"mlflow server did not answer {local}/health within {wait_s:.0f} s (log: {layout.mlflow_log})")


def stop_mlflow(layout: Layout, wait_s: float = 30) -> bool:
    """Stops the MLflow server and its workers (its whole process group); whether one was running."""
    pid = _server_pid(layout)
    if pid is None:
        layout.pid_file.unlink(missing_ok=True)
        return False
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.time() + wait_s
        while time.time() < deadline and _server_pid(layout) is not None:
            time.sleep(0.2)
        if _server_pid(layout) is None:
            break
    layout.pid_file.unlink(missing_ok=True)
    return True


def start(layout: Layout, host: str, port: int, workers: int) -> list[str]:
    """Starts PostgreSQL and the MLflow server (each unless it runs); the lines to print."""
    user, bindir = database_user(), postgres_bindir()
    steps = commands(layout, host, port, user, bindir, workers)
    _prepare_folders(layout, user)
    database = start_postgres(layout, steps)
    server = start_mlflow(layout, host, port, steps["mlflow"])
    uri = tracking_uri(host, port)
    return [f"PostgreSQL {bindir.parent.name} ({database}): cluster {layout.pgdata}, run by {user}, socket "
            f"{layout.socket_dir} only, database {DATABASE}",
            f"MLflow server ({server}): {uri}, artifacts served from {layout.artifacts} (log {layout.mlflow_log})",
            f"tracking.uri={uri}",
            f'  make sweep ARGS="tracking.uri={uri}"   (or export MLFLOW_TRACKING_URI={uri})',
            f"UI: {uri}/#/experiments?workflowType=machine_learning",
            "stop both with make server-stop (the data stay for the next make server)"]


def stop(layout: Layout) -> list[str]:
    """Stops the MLflow server, then PostgreSQL; the lines to print."""
    lines = ["MLflow server stopped" if stop_mlflow(layout) else "MLflow server was not running"]
    if not (layout.pgdata / "PG_VERSION").is_file():
        return [*lines, f"no PostgreSQL cluster in {layout.pgdata}"]
    steps = commands(layout, "127.0.0.1", 0, database_user(), postgres_bindir(), 1)
    if subprocess.run(steps["postgres_status"], capture_output=True).returncode != 0:
        return [*lines, "PostgreSQL was not running"]
    _run(steps["postgres_stop"], "stopping PostgreSQL")
    return [*lines, f"PostgreSQL stopped (data kept in {layout.pgdata})"]


def status(layout: Layout) -> list[str]:
    """Whether each part runs."""
    pid = _server_pid(layout)
    server = f"MLflow server running (pid {pid}: {layout.pid_file.read_text().strip()})" if pid else \
        "MLflow server not running"
    if not (layout.pgdata / "PG_VERSION").is_file():
        return [server, f"no PostgreSQL cluster in {layout.pgdata}"]
    steps = commands(layout, "127.0.0.1", 0, database_user(), postgres_bindir(), 1)
    running = subprocess.run(steps["postgres_status"], capture_output=True).returncode == 0
    return [server, f"PostgreSQL {'running' if running else 'not running'} ({layout.pgdata})"]


def _planned_user_and_bindir() -> tuple[str, Path]:
    """The database user and PostgreSQL's programs for --dry-run, as they will be once `make server` installed
    PostgreSQL (Debian's 15, its `postgres` user) when they are not there yet."""
    try:
        bindir = postgres_bindir()
    except ServerError:
        bindir = Path("/usr/lib/postgresql/15/bin")
    try:
        return database_user(), bindir
    except ServerError:
        return "postgres", bindir


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m xentlab.cli.server", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("start", "stop", "status"))
    parser.add_argument("--dir", default="outputs/server", help="where the cluster, artifacts and logs live")
    parser.add_argument("--host", default="127.0.0.1", help="the address the MLflow server binds (0.0.0.0: all)")
    parser.add_argument("--port", type=int, default=5000, help="the MLflow server's port")
    parser.add_argument("--workers", type=int, default=2, help="the MLflow server's worker processes")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    return parser.parse_args(argv)


@command
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    layout = Layout(Path(args.dir).resolve())
    if args.dry_run:
        user, bindir = _planned_user_and_bindir()
        for step, line in commands(layout, args.host, args.port, user, bindir, args.workers).items():
            print(f"{step}: {shlex.join(line)}")
        print(f"tracking.uri={tracking_uri(args.host, args.port)}")
        return
    lines = {"start": lambda: start(layout, args.host, args.port, args.workers), "stop": lambda: stop(layout),
             "status": lambda: status(layout)}[args.action]()
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()

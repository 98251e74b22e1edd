"""`python -m xentlab.cli.ray_cluster start|stop|kill-node` (`make ray-cluster NODES=2`, `make ray-cluster-stop`):
a Ray cluster of a head and worker nodes on this machine, each its own raylet, as `ray start` makes them on real
hosts (`ray start --head --port 6379` on the head, `ray start --address HEAD:6379` on every other host).

Run with the Python of the Ray venv (`.venv/ray`). Each node keeps its files in its own folder,
`/tmp/xentlab-ray-<port>/<index>` (index 0 is the head; short, for Ray's socket paths), which names its processes:
`stop` ends exactly those (never another Ray on the machine), `kill-node` kills one node at once as a lost host.
Every address is 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from pathlib import Path

import psutil

from xentlab.cli.console import command
from xentlab.errors import ExpectedError

NODE_IP = "127.0.0.1"
OBJECT_STORE_BYTES = 100_000_000  # per node; Ray's default (30% of memory) is far more than tiny sweeps need


class RayClusterError(ExpectedError, RuntimeError):
    """The cluster cannot start or stop: what went wrong and how to fix it."""


def root(port: int) -> Path:
    return Path(f"/tmp/xentlab-ray-{port}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((NODE_IP, 0))
        return sock.getsockname()[1]


def node_command(index: int, port: int, cpus: int) -> list[str]:
    """`ray start` for node `index` (0: the head) of the cluster whose head listens on `port`."""
    ray = str(Path(sys.executable).parent / "ray")
    role = ["--head", f"--port={port}", "--include-dashboard=false"] if index == 0 else \
        [f"--address={NODE_IP}:{port}"]
    # Raylets sharing a host need their own dashboard-agent port (Ray's default is one fixed port).
    return [ray, "start", *role, f"--node-ip-address={NODE_IP}", f"--num-cpus={cpus}",
            f"--object-store-memory={OBJECT_STORE_BYTES}", f"--temp-dir={root(port) / str(index)}",
            f"--dashboard-agent-listen-port={_free_port()}", "--disable-usage-stats"]


def node_processes(port: int, index: int | None = None) -> list[psutil.Process]:
    """The processes of one node (or of every node) of the cluster on `port`: those whose command line names the
    node's folder, and their descendants (workers, agents)."""
    folder = str(root(port) if index is None else root(port) / str(index))
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["cmdline"]):
        if any(arg.endswith(folder) or f"{folder}/" in arg for arg in proc.info["cmdline"] or []):
            found[proc.pid] = proc
            try:
                found.update({child.pid: child for child in proc.children(recursive=True)})
            except psutil.NoSuchProcess:
                pass
    return list(found.values())


def _end(procs: list[psutil.Process], wait_s: float) -> int:
    """SIGTERM, then SIGKILL what is left after `wait_s` (wait_s=0: SIGKILL at once); how many there were."""
    for proc in procs:
        try:
            proc.terminate() if wait_s else proc.kill()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=wait_s or 5)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=10)
    return len(procs)


def start(nodes: int, port: int, cpus: int) -> list[str]:
    """Starts the head, then the worker nodes; the lines to print."""
    if nodes < 1:
        raise RayClusterError(f"NODES={nodes}: a cluster needs at least its head node (NODES=1 or more)")
    if node_processes(port):
        raise RayClusterError(f"a cluster already runs on port {port} ({root(port)}): make ray-cluster-stop first, "
                              f"or start another with RAY_PORT={port + 1}")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    root(port).mkdir(parents=True, exist_ok=True)
    for index in range(nodes):  # jobs run in their raylet's folder: Hydra's job folders go there, not in the repo
        result = subprocess.run(node_command(index, port, cpus), capture_output=True, text=True, env=env,
                                timeout=300, cwd=root(port))
        if result.returncode != 0:
            _end(node_processes(port), 10)
            raise RayClusterError(f"`ray start` of node {index} failed (exit {result.returncode}):\n"
                                  f"{(result.stdout + result.stderr).strip()[-2000:]}")
    address = f"{NODE_IP}:{port}"
    return [f"Ray cluster: head {address} + {nodes - 1} worker node(s), {cpus} CPU(s) each (folders {root(port)}/N)",
            "sweep on it (each job's node is in its run's tag xentlab.node):",
            f'  make sweep SWEEP=ray ARGS="hydra.launcher.ray.init.address={address} '
            f'hydra.launcher.ray.remote.num_cpus=1 tracking.uri=http://127.0.0.1:5000"',
            "stop it with make ray-cluster-stop"]


def stop(port: int) -> list[str]:
    """Stops the worker nodes, then the head (each: SIGTERM, SIGKILL after 10 s)."""
    indices = sorted((int(p.name) for p in root(port).glob("[0-9]*")), reverse=True)
    ended = sum(_end(node_processes(port, index), 10) for index in indices)
    ended += _end(node_processes(port), 10)  # anything left
    return [f"Ray cluster on port {port}: {ended} process(es) stopped" if ended else
            f"no Ray cluster runs on port {port}"]


def kill_node(port: int, index: int) -> list[str]:
    """Kills node `index` at once (SIGKILL), as when its host dies."""
    procs = node_processes(port, index)
    if not procs:
        raise RayClusterError(f"node {index} of the cluster on port {port} is not running")
    return [f"node {index}: {_end(procs, 0)} process(es) killed"]


@command
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m xentlab.cli.ray_cluster", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("start", "stop", "kill-node"))
    parser.add_argument("--nodes", type=int, default=2, help="nodes to start, the head included")
    parser.add_argument("--port", type=int, default=6379, help="the head's port (GCS)")
    parser.add_argument("--cpus", type=int, default=1, help="CPUs each node offers to jobs")
    parser.add_argument("--node", type=int, default=1, help="kill-node: which node (0 is the head)")
    args = parser.parse_args(argv)
    lines = {"start": lambda: start(args.nodes, args.port, args.cpus), "stop": lambda: stop(args.port),
             "kill-node": lambda: kill_node(args.port, args.node)}[args.action]()
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()

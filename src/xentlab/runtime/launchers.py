"""Launcher helpers: each parallel job's share of the cores (ThreadSplit), and checks before a sweep hands its jobs
to a cluster launcher (RayAddressCheck).

Ray's own `ray.init(address=...)` waits forever on an address where nothing answers (it retries the GCS connection
every 30 s and prints warnings), so the `ray` sweep preset checks the address first with this callback:

    hydra:
      callbacks:
        ray_address:
          _target_: xentlab.runtime.launchers.RayAddressCheck
          address: ${hydra.launcher.ray.init.address}

The check runs when Hydra builds its callbacks, before the sweep's parent run exists: an unreachable cluster
leaves nothing behind in the store.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from xentlab.errors import ExpectedError

ADDRESS_KEY = "hydra.launcher.ray.init.address"
RAY_CURRENT_CLUSTER = Path("/tmp/ray/ray_current_cluster")  # written by `ray start --head` on this machine
DEFAULT_PORT = 6379  # a Ray head node's GCS port
CLIENT_PORT = 10001  # Ray Client's port (ray://HOST)
FIX = (f"start the cluster (`ray start --head` prints its address) and pass it: {ADDRESS_KEY}=HOST:6379 "
       f"(or ray://HOST:10001); or {ADDRESS_KEY}=local to start a Ray runtime on this machine for this sweep only")


class RayAddressError(ExpectedError, ConnectionError):
    """The sweep's Ray cluster cannot be reached."""


def _discovered_address() -> tuple[str, str] | None:
    """Where Ray looks when no address is given: RAY_ADDRESS, then the file `ray start --head` leaves here."""
    if os.environ.get("RAY_ADDRESS", "").strip():
        return os.environ["RAY_ADDRESS"].strip(), "RAY_ADDRESS"
    if RAY_CURRENT_CLUSTER.is_file() and RAY_CURRENT_CLUSTER.read_text().strip():
        return RAY_CURRENT_CLUSTER.read_text().strip(), str(RAY_CURRENT_CLUSTER)
    return None


def resolve_ray_address(address: str | None) -> tuple[str, int, str] | None:
    """The (host, port, how it was found) that `ray.init(address=...)` would connect to; None when Ray starts a
    runtime of its own.

    As in `ray.init`: `local` always starts one; `auto` joins the cluster named by RAY_ADDRESS or by the file
    `ray start --head` leaves on this machine; null (no address) joins that cluster when there is one, else starts
    a runtime.

    Raises:
        RayAddressError: `auto` with no cluster started on this machine, or an address without a usable port.
    """
    text = "" if address is None else str(address).strip()
    if text in ("", "None", "null", "auto"):
        found = _discovered_address()
        if found is None and text == "auto":
            raise RayAddressError(f"{ADDRESS_KEY}=auto found no Ray cluster: RAY_ADDRESS is not set and no "
                                  f"`ray start --head` ran on this machine ({RAY_CURRENT_CLUSTER} is missing); "
                                  f"{FIX}")
        if found is None:
            return None
        text, origin = found
    elif text == "local":
        return None
    else:
        origin = ADDRESS_KEY
    default_port = CLIENT_PORT if text.startswith("ray://") else DEFAULT_PORT
    hostport = text.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep:
        host, port = hostport, str(default_port)
    if not port.isdigit():
        raise RayAddressError(f"{ADDRESS_KEY}={address!r} is not HOST:PORT (the port must be a number); {FIX}")
    return host.strip("[]"), int(port), origin


def check_ray_address(address: str | None, timeout_s: float = 5.0) -> None:
    """Fails within `timeout_s` when nothing answers at the Ray address (a TCP connection to its port).

    Raises:
        RayAddressError: names the address, what was tried and how to fix it.
    """
    target = resolve_ray_address(address)
    if target is None:
        return
    host, port, origin = target
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as err:
        reason = "timed out" if isinstance(err, TimeoutError) else (err.strerror or type(err).__name__)
        given = "null" if address is None else str(address)
        shown = given if given == f"{host}:{port}" else f"{given} -> {host}:{port} (from {origin})"
        raise RayAddressError(f"{ADDRESS_KEY}={shown} did not answer within {timeout_s:g} s ({reason}): "
                              f"no Ray cluster listens there; {FIX}") from None


class RayAddressCheck(Callback):
    """Hydra callback of the `ray` preset: checks the Ray address once, when Hydra builds its callbacks.

    Args:
        address: `hydra.launcher.ray.init.address` (`local`: a runtime of its own, nothing to check).
        timeout_s: how long to wait for an answer.
    """

    def __init__(self, address: Any = None, timeout_s: float = 5.0) -> None:
        check_ray_address(None if address is None else str(address), timeout_s)
        self.address = address


def jobs_at_once(n_jobs: int | None) -> int:
    """How many jobs a joblib launcher runs at once: `n_jobs`, joblib's negatives counted from the cores (-1: one
    per core)."""
    import joblib

    return max(1, joblib.effective_n_jobs(-1 if n_jobs is None else int(n_jobs)))


def split_tf_threads(jobs: int) -> int:
    """Gives this process's TensorFlow its share of the cores, `cores // jobs` intra-op and inter-op threads (at
    least 1): jobs side by side then do not each start a thread per core and fight over them. Returns the share.

    TensorFlow takes the setting before its runtime starts; a process that already ran a job (joblib reuses its
    workers) keeps the share the first job set, the same one."""
    import joblib
    import tensorflow as tf

    threads = max(1, joblib.cpu_count() // max(1, jobs))
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # the runtime has started (an earlier job of this worker): its share stands
        pass
    return threads


class ThreadSplit(Callback):
    """Hydra callback of the presets that run jobs in parallel processes (joblib launcher): before each job, its
    process's TensorFlow gets `cores // jobs at once` threads (split_tf_threads), from `hydra.launcher.n_jobs`.

        hydra:
          callbacks:
            thread_split:
              _target_: xentlab.runtime.launchers.ThreadSplit
    """

    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        launcher = config.hydra.launcher
        if "n_jobs" in launcher:  # the joblib launcher; any other runs jobs as it always did
            split_tf_threads(jobs_at_once(launcher.n_jobs))

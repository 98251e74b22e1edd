"""tf.distribute strategy and the one table of the per-hardware policy: precision, XLA, steps_per_execution and
static batch shapes.

Call `build_strategy` first: model, optimizer and metrics must then be created inside `hardware.strategy.scope()`.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, fields, replace
from typing import Any

import tensorflow as tf

from xentlab.choices import Precision, StrategyName
from xentlab.errors import ConfigError, ExpectedError

STRATEGIES = StrategyName.names()
PRECISIONS = tuple(p for p in Precision.names() if p != "auto")


@dataclass(frozen=True)
class HardwarePolicy:
    """How one kind of hardware trains: the values `strategy.precision`, `strategy.jit_compile`,
    `strategy.steps_per_execution` and `strategy.drop_remainder` take unless the config sets them."""

    precision: str
    jit_compile: bool
    steps_per_execution: int  # train steps per tf.function call
    drop_remainder: bool  # drop the last partial batch: static batch shapes

    def params(self) -> dict[str, str]:
        return {f"hardware.{f.name}": str(getattr(self, f.name)) for f in fields(self)}


# The one owner of the hardware policy. strategy=NAME and strategy=auto (through the kind it picks) both read it;
# conf/strategy/*.yaml only name the hardware and its own knobs (devices, TPU address).
HARDWARE_POLICY: dict[str, HardwarePolicy] = {
    # XLA measured about 8x slower than plain TF for the seed CNN on CPU.
    "cpu": HardwarePolicy("float32", jit_compile=False, steps_per_execution=1, drop_remainder=False),
    "multi_cpu": HardwarePolicy("float32", jit_compile=False, steps_per_execution=1, drop_remainder=False),
    # Mixed float16 (the head stays float32) and XLA.
    "gpu": HardwarePolicy("mixed_float16", jit_compile=True, steps_per_execution=1, drop_remainder=False),
    "multi_gpu": HardwarePolicy("mixed_float16", jit_compile=True, steps_per_execution=1, drop_remainder=False),
    # bfloat16, XLA (always on TPU), static shapes, several steps per host call.
    "tpu": HardwarePolicy("mixed_bfloat16", jit_compile=True, steps_per_execution=32, drop_remainder=True),
    # The custom loop splits a partial last batch over the workers and keeps the single-device mean loss, so no
    # example needs dropping (xentlab.runtime.multi_worker).
    "multi_worker": HardwarePolicy("float32", jit_compile=False, steps_per_execution=1, drop_remainder=False),
}
POLICY_KEYS = tuple(f.name for f in fields(HardwarePolicy))


def resolve_policy(kind: str, strategy: dict[str, Any]) -> HardwarePolicy:
    """The policy of hardware `kind` (HARDWARE_POLICY), with every value the `strategy` config sets explicitly
    (None, and precision auto, mean: what the hardware does best).

    Raises:
        ConfigError: For an unknown precision or steps_per_execution < 1.
    """
    chosen = {k: strategy[k] for k in POLICY_KEYS if strategy.get(k) not in (None, "auto")}
    if "precision" in chosen and chosen["precision"] not in PRECISIONS:
        raise ConfigError(f"strategy.precision must be one of {PRECISIONS} or auto, got {chosen['precision']!r}")
    if chosen.get("steps_per_execution", 1) < 1:
        raise ConfigError(f"strategy.steps_per_execution must be >= 1, got {chosen['steps_per_execution']}; "
                          f"e.g. strategy.steps_per_execution=1, or null for the hardware's value")
    return replace(HARDWARE_POLICY[kind], **chosen)


@dataclass(frozen=True)
class VisibleHardware:
    """What this host offers, read without starting TensorFlow's runtime (a CPU split must come before)."""

    gpus: int
    tpu: bool


def visible_hardware() -> VisibleHardware:
    return VisibleHardware(gpus=len(tf.config.list_physical_devices("GPU")), tpu=_has_local_tpu())


def pick_kind(name: str, visible: VisibleHardware) -> str:
    """The hardware `strategy.name` means here: itself, or for auto a TPU on this host, else all local GPUs, else
    the CPU."""
    if name != "auto":
        return name
    return "tpu" if visible.tpu else "multi_gpu" if visible.gpus > 1 else "gpu" if visible.gpus else "cpu"


class HardwareError(ExpectedError, RuntimeError):
    """The hardware asked for is not there."""


@dataclass
class Hardware:
    """The strategy built for the hardware picked: what the plan and the builders read about the devices."""

    strategy: tf.distribute.Strategy
    kind: str  # the hardware actually used: cpu, multi_cpu, gpu, multi_gpu, tpu, multi_worker
    devices: list[str]

    @property
    def replicas(self) -> int:
        return self.strategy.num_replicas_in_sync

    def params(self) -> dict[str, str]:
        """What MLflow records about the hardware (the policy adds its own: HardwarePolicy.params)."""
        return {"hardware.strategy": self.kind, "hardware.replicas": str(self.replicas),
                "hardware.devices": ",".join(self.devices)}


def _device_names(kind: str) -> list[str]:
    return [d.name for d in tf.config.list_logical_devices(kind)]


def _all_devices() -> str:
    return ", ".join(d.name for d in tf.config.list_logical_devices()) or "none"


def _require_gpus(name: str, needed: int) -> list[str]:
    gpus = _device_names("GPU")
    if len(gpus) < needed:
        raise HardwareError(
            f"strategy={name} needs {needed} GPU(s), found {len(gpus)}; devices found: {_all_devices()}. "
            f"Use strategy=cpu (or strategy=auto, which picks what is there)" + (
                ". nvidia-smi is present, so the driver is there but TensorFlow has no usable CUDA libraries: "
                "install them with `make install GPU=1` (pip install -e '.[gpu]', tensorflow[and-cuda])"
                if shutil.which("nvidia-smi") else "")
        )
    return gpus


def split_cpu(logical_devices: int) -> None:
    """Splits the CPU into `logical_devices` logical devices (before TF starts), to run MirroredStrategy
    on a machine without accelerators."""
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(logical_devices)]
        )
    except RuntimeError as err:
        if len(tf.config.list_logical_devices("CPU")) != logical_devices:
            raise HardwareError(
                f"strategy=multi_cpu must split the CPU before TensorFlow starts, but it has started ({err}); "
                f"run it in a fresh process"
            ) from err


def _single_device(kind: str) -> tf.distribute.Strategy:
    """One device: TensorFlow's default strategy, which places ops on the first GPU if there is one, else on
    the CPU. Keras' fit takes its plain path under it; under OneDeviceStrategy it takes the distributed path:
    the seed CNN on digits ran at 0.27x the samples/s of the same loop (5,424 vs 20,087), and `make bench`
    put xentlab at 0.57x plain Keras before this choice, 1.29x after. For kind="CPU" on a machine
    with GPUs, the GPUs are hidden; if TensorFlow has already started, OneDeviceStrategy pins the CPU instead.
    """
    if kind == "CPU" and tf.config.list_physical_devices("GPU"):
        try:
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError:  # devices already initialised
            return tf.distribute.OneDeviceStrategy("/cpu:0")
    return tf.distribute.get_strategy()


def _has_local_tpu() -> bool:
    # A TPU VM exposes its chips as /dev/accel* (v2-v4) or /dev/vfio/* (v5+); looking costs microseconds,
    # where asking the TPU runtime on a machine without one can hang.
    from pathlib import Path

    return any(Path("/dev").glob("accel*")) or any(Path("/dev/vfio").glob("[0-9]*"))


def _tpu_strategy(address: str | None, timeout_s: float) -> tuple[tf.distribute.Strategy, list[str]]:
    import concurrent.futures

    local = address in (None, "", "local")
    if local and not _has_local_tpu():
        raise HardwareError(
            f"strategy=tpu found no TPU on this host (no /dev/accel* or /dev/vfio devices); devices found: "
            f"{_all_devices()}. On a TPU VM run there; for a remote TPU set strategy.tpu=grpc://ADDRESS:8470; "
            f"here use strategy=cpu or strategy=auto"
        )

    def connect():
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu="local" if local else address)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        strategy = pool.submit(connect).result(timeout=timeout_s)
    except concurrent.futures.TimeoutError as err:
        raise HardwareError(
            f"strategy=tpu: no answer from TPU {address or 'local'} within {timeout_s:.0f} s; check strategy.tpu"
        ) from err
    finally:
        pool.shutdown(wait=False)
    return strategy, _device_names("TPU")


TF_CONFIG_EXAMPLE = ('{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                     '"task": {"type": "worker", "index": 0}}')


def parse_tf_config(raw: str | None) -> dict:
    """The TF_CONFIG of a multi-worker job, checked: a cluster of host:port lists and this process's task in it.

    Raises:
        HardwareError: For a missing, unparsable or inconsistent TF_CONFIG, saying what is wrong and an example.
    """
    import json

    fix = f"set TF_CONFIG on every worker, e.g. {TF_CONFIG_EXAMPLE} (task.index differs per worker)"
    if not raw:
        raise HardwareError(f"strategy=multi_worker needs the TF_CONFIG environment variable; {fix}")
    try:
        config = json.loads(raw)
    except ValueError as err:
        raise HardwareError(f"TF_CONFIG is not valid JSON ({err}); received {raw[:200]!r}; {fix}") from err
    cluster = config.get("cluster") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not cluster:
        raise HardwareError(f"TF_CONFIG has no 'cluster' entry (a dict of job name -> host:port list); "
                            f"received {raw[:200]!r}; {fix}")
    for job, hosts in cluster.items():
        if not isinstance(hosts, list) or not hosts or not all(isinstance(h, str) and ":" in h for h in hosts):
            raise HardwareError(f"TF_CONFIG cluster.{job} must be a non-empty list of 'host:port' strings; "
                                f"received {hosts!r}; {fix}")
    task = config.get("task")
    kind = task.get("type") if isinstance(task, dict) else None
    index = task.get("index") if isinstance(task, dict) else None
    if kind not in cluster or not isinstance(index, int) or not 0 <= index < len(cluster[kind]):
        raise HardwareError(f"TF_CONFIG task must name this process in the cluster (type one of {sorted(cluster)}, "
                            f"index within its list); received task={task!r}; {fix}")
    return config


def _multi_worker_strategy() -> tuple[tf.distribute.Strategy, list[str]]:
    import logging
    import os
    import signal

    parse_tf_config(os.environ.get("TF_CONFIG"))
    # tf.distribute logs every collective at INFO ("Collective all_reduce tensors: ..."), many lines per step.
    logging.getLogger("tensorflow").setLevel(logging.WARNING)
    # TensorFlow's coordination service takes SIGTERM for its preemption notifier and swallows it: measured here,
    # a chief sent SIGTERM trained on, its run left RUNNING. Re-installing the handler Python had (the run's
    # KILLED handler on the chief, the default on the others) lets `kill` stop a worker again.
    previous = signal.getsignal(signal.SIGTERM)
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
    return strategy, _device_names("CPU") + _device_names("GPU")


def is_chief() -> bool:
    """True unless TF_CONFIG names this process a non-chief worker (only the chief logs to MLflow).

    Raises:
        HardwareError: For a TF_CONFIG that is set but malformed (parse_tf_config).
    """
    import os

    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return True
    config = parse_tf_config(raw)
    kind, index = config["task"]["type"], config["task"]["index"]
    if "chief" in config["cluster"]:
        return kind == "chief"
    return kind == "worker" and index == 0


def build_strategy(
    name: str,
    *,
    num_devices: int | None = None,
    tpu: str | None = None,
    tpu_timeout_s: float = 30.0,
    logical_devices: int = 2,
    visible: VisibleHardware | None = None,
    **_: object,
) -> Hardware:
    """Creates the strategy for `name` on this host's devices (the policy keys of the config are ignored here:
    `resolve_policy` reads them).

    Args:
        name: cpu, multi_cpu (MirroredStrategy over logical CPU devices, for testing), gpu, multi_gpu, tpu,
            multi_worker (MultiWorkerMirroredStrategy from TF_CONFIG), or auto (`pick_kind`).
        num_devices: multi_gpu only: how many GPUs (None = all).
        tpu: tpu only: address for TPUClusterResolver (None/"local" on a TPU VM).
        tpu_timeout_s: tpu only: how long to wait for a remote TPU.
        logical_devices: multi_cpu only: how many logical CPU devices.
        visible: what the host offers (default: `visible_hardware()`), read for auto only.

    Raises:
        HardwareError: When the hardware asked for is not there.
    """
    if name not in STRATEGIES:
        raise ConfigError(f"unknown strategy {name!r}; expected one of {STRATEGIES}")
    kind = pick_kind(name, visible or visible_hardware()) if name == "auto" else name
    if kind == "cpu":
        devices = ["/cpu:0"]
        strategy = _single_device("CPU")
    elif kind == "multi_cpu":
        split_cpu(logical_devices)
        devices = _device_names("CPU")[:logical_devices]
        strategy = tf.distribute.MirroredStrategy(devices)
    elif kind == "tpu":
        strategy, devices = _tpu_strategy(tpu, tpu_timeout_s)
    elif kind == "multi_worker":
        strategy, devices = _multi_worker_strategy()
    elif kind == "gpu":
        devices = _require_gpus(name, 1)[:1]
        strategy = _single_device("GPU")
    else:
        devices = _require_gpus(name, 2)[: num_devices or None]
        strategy = tf.distribute.MirroredStrategy(devices)
    return Hardware(strategy, kind, devices)


def set_precision(precision: str) -> None:
    """Keras' global dtype policy, before the model is built (the head stays float32: xentlab.core.models)."""
    import keras

    keras.mixed_precision.set_global_policy(precision)


def fresh_session(*, seed: int, deterministic: bool) -> None:
    """A clean Keras session for the next job (jobs in one process, sweeps and tests, must not share layers or
    names), seeded with `seed` (Python, NumPy, TensorFlow); with `deterministic`, TensorFlow's ops too."""
    import keras
    import tensorflow as tf

    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()

"""tf.distribute strategy and the per-hardware policy: precision, XLA and steps_per_execution.

Call `build_strategy` first: model, optimizer and metrics must then be created inside `plan.strategy.scope()`.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import tensorflow as tf

STRATEGIES = ("cpu", "gpu", "multi_gpu", "auto")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")

# What each kind of hardware defaults to when precision is "auto" (strategy=auto).
AUTO_PRECISION = {"cpu": "float32", "gpu": "mixed_float16", "multi_gpu": "mixed_float16"}


class HardwareError(RuntimeError):
    """The hardware asked for is not there."""


@dataclass
class HardwarePlan:
    strategy: tf.distribute.Strategy
    kind: str  # the strategy actually used: cpu, gpu, multi_gpu
    devices: list[str]
    precision: str
    jit_compile: bool
    steps_per_execution: int
    drop_remainder: bool

    @property
    def replicas(self) -> int:
        return self.strategy.num_replicas_in_sync

    def params(self) -> dict[str, str]:
        """What MLflow records about the hardware."""
        return {
            "hardware.strategy": self.kind,
            "hardware.replicas": str(self.replicas),
            "hardware.devices": ",".join(self.devices),
            "hardware.precision": self.precision,
            "hardware.jit_compile": str(self.jit_compile),
            "hardware.steps_per_execution": str(self.steps_per_execution),
        }


def _device_names(kind: str) -> list[str]:
    return [d.name for d in tf.config.list_logical_devices(kind)]


def _all_devices() -> str:
    return ", ".join(d.name for d in tf.config.list_logical_devices()) or "none"


def _require_gpus(name: str, needed: int) -> list[str]:
    gpus = _device_names("GPU")
    if len(gpus) < needed:
        raise HardwareError(
            f"strategy={name} needs {needed} GPU(s), found {len(gpus)}; devices found: {_all_devices()}. "
            f"Use strategy=cpu (or strategy=auto, which picks what is there)"
        )
    return gpus


def build_strategy(
    name: str,
    *,
    precision: str = "float32",
    jit_compile: bool = False,
    steps_per_execution: int = 1,
    drop_remainder: bool = False,
    num_devices: int | None = None,
    **_: object,
) -> HardwarePlan:
    """Creates the strategy for `name` and sets Keras' global dtype policy.

    Args:
        name: cpu, gpu, multi_gpu or auto (all local GPUs if any, else the CPU).
        precision: float32, mixed_float16, mixed_bfloat16, or auto (by hardware: AUTO_PRECISION).
        jit_compile: XLA compilation of the train step.
        steps_per_execution: train steps per tf.function call.
        drop_remainder: drop the last partial batch so every batch has a static shape.
        num_devices: multi_gpu only: how many GPUs (None = all).
    """
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; expected one of {STRATEGIES}")
    if steps_per_execution < 1:
        raise ValueError(f"strategy.steps_per_execution must be >= 1, got {steps_per_execution}")
    kind = name
    if name == "auto":
        gpus = _device_names("GPU")
        kind = "multi_gpu" if len(gpus) > 1 else "gpu" if gpus else "cpu"
    if kind == "cpu":
        devices = ["/cpu:0"]
        strategy = tf.distribute.OneDeviceStrategy(devices[0])
    elif kind == "gpu":
        devices = _require_gpus(name, 1)[:1]
        strategy = tf.distribute.OneDeviceStrategy(devices[0])
    else:
        devices = _require_gpus(name, 2)[: num_devices or None]
        strategy = tf.distribute.MirroredStrategy(devices)
    if precision == "auto":
        precision = AUTO_PRECISION[kind]
    if precision not in PRECISIONS:
        raise ValueError(f"strategy.precision must be one of {PRECISIONS} or auto, got {precision!r}")
    keras.mixed_precision.set_global_policy(precision)
    return HardwarePlan(strategy, kind, devices, precision, jit_compile, steps_per_execution, drop_remainder)

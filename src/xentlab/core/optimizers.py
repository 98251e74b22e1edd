"""Optimizer builder for the `optimizer=` group."""

from __future__ import annotations

import keras

from xentlab.errors import ConfigError

OPTIMIZERS = ("adadelta", "rmsprop", "adam", "sgd")


def build_optimizer(
    name: str, *, learning_rate: float, momentum: float = 0.0, clipnorm: float | None = None
) -> keras.optimizers.Optimizer:
    """Returns a fresh Keras optimizer; create it inside the strategy scope."""
    if learning_rate <= 0:
        raise ConfigError(f"optimizer.learning_rate must be > 0, got {learning_rate}")
    common = {"learning_rate": learning_rate, "clipnorm": clipnorm}
    if name == "adadelta":
        return keras.optimizers.Adadelta(**common)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(momentum=momentum, **common)
    if name == "adam":
        return keras.optimizers.Adam(**common)
    if name == "sgd":
        return keras.optimizers.SGD(momentum=momentum, **common)
    raise ConfigError(f"unknown optimizer {name!r}; expected one of {OPTIMIZERS}")

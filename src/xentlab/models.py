"""Model builders. Input shape and class count come from the data; the head activation from the loss.

The head is linear when the loss takes logits and softmax (or sigmoid for one binary unit) otherwise, and it
is always float32 so mixed-precision runs compute the loss on float32 outputs.
"""

from __future__ import annotations

from typing import Any, Callable

import keras
from keras import layers

SINGLE_UNIT_LOSSES = ("binary",)  # one sigmoid unit for 2-class data


def head_spec(*, loss: str, from_logits: bool, num_classes: int) -> tuple[int, str | None]:
    """Returns (units, activation) of the output layer for a loss and class count."""
    if loss in SINGLE_UNIT_LOSSES:
        return 1, None if from_logits else "sigmoid"
    if loss == "weighted_binary":
        return num_classes, None if from_logits else "sigmoid"
    return num_classes, None if from_logits else "softmax"


def _head(units: int, activation: str | None) -> layers.Dense:
    return layers.Dense(units, activation=activation, dtype="float32", name="head")


def mnist_cnn(
    input_shape: tuple[int, ...],
    units: int,
    activation: str | None,
    *,
    conv1_filters: int = 32,
    conv2_filters: int = 64,
    dense_units: int = 128,
    dropout_conv: float = 0.25,
    dropout_dense: float = 0.5,
    **_: Any,
) -> keras.Model:
    """The seed's CNN (channels last): Conv-Conv-MaxPool-Dropout-Flatten-Dense-Dropout-head."""
    if len(input_shape) != 3 or min(input_shape[:2]) < 6:
        raise ValueError(
            f"model=mnist_cnn needs images of shape (H, W, C) with H, W >= 6 (two 3x3 convs and a 2x2 pool), "
            f"got input shape {input_shape}; use model=mlp for flat features"
        )
    return keras.Sequential(
        [
            keras.Input(shape=input_shape, name="image"),
            layers.Conv2D(conv1_filters, (3, 3), activation="relu"),
            layers.Conv2D(conv2_filters, (3, 3), activation="relu"),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Dropout(dropout_conv),
            layers.Flatten(),
            layers.Dense(dense_units, activation="relu"),
            layers.Dropout(dropout_dense),
            _head(units, activation),
        ],
        name="mnist_cnn",
    )


def mlp(
    input_shape: tuple[int, ...],
    units: int,
    activation: str | None,
    *,
    hidden_units: list[int] = (256, 128),
    dropout: float = 0.2,
    **_: Any,
) -> keras.Model:
    """A multilayer perceptron on flattened inputs."""
    stack: list[layers.Layer] = [keras.Input(shape=input_shape, name="features"), layers.Flatten()]
    for width in hidden_units:
        stack += [layers.Dense(width, activation="relu"), layers.Dropout(dropout)]
    return keras.Sequential([*stack, _head(units, activation)], name="mlp")


MODELS: dict[str, Callable[..., keras.Model]] = {"mnist_cnn": mnist_cnn, "mlp": mlp}


def build_model(
    name: str,
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    loss: str = "crossentropy",
    from_logits: bool = False,
    **arch: Any,
) -> keras.Model:
    """Builds model `name` with a head that fits the loss (see head_spec) and architecture knobs `arch`."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {sorted(MODELS)}")
    units, activation = head_spec(loss=loss, from_logits=from_logits, num_classes=num_classes)
    return MODELS[name](tuple(input_shape), units, activation, **arch)

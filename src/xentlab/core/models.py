"""Model builders. Input shape and class count come from the data; the head activation from the loss.

The head is linear when the loss takes logits and softmax (or sigmoid for one binary unit) otherwise, and it
is always float32 so mixed-precision runs compute the loss on float32 outputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
from keras import layers

from xentlab.config.choices import Head, HeadLayout
from xentlab.core.losses import LOSS_TABLE, loss_spec
from xentlab.errors import ConfigError


def resolve_loss_kind(loss: str, head: str, num_classes: int) -> str:
    """The loss a head implies: cross-entropy on one sigmoid unit is binary cross-entropy.

    model.head=sigmoid1 with loss=crossentropy trains with loss=binary, so the seed's "2 softmax units vs
    1 sigmoid" comparison is the single override model.head=softmax2|sigmoid1. Which loss has a one-unit form,
    and which is a softmax loss, comes from `xentlab.core.losses.LOSS_TABLE`.
    """
    head = Head.parse(head, "model.head")
    if head is not Head.auto and num_classes != 2:
        raise ConfigError(
            f"model.head={head} is for 2-class data, the data has {num_classes} classes; set model.head=auto"
        )
    spec = loss_spec(loss)
    if head is Head.sigmoid1:
        if spec.one_unit_kind is None:
            one_unit = ", ".join(k for k, s in LOSS_TABLE.items() if s.one_unit_kind)
            raise ConfigError(
                f"model.head=sigmoid1 (one sigmoid unit) has no form of loss={loss}; use a loss that has one "
                f"({one_unit}), or set model.head=auto"
            )
        return spec.one_unit_kind
    if head is Head.softmax2 and (spec.single_unit or spec.activation != "softmax"):
        raise ConfigError(f"model.head=softmax2 needs a softmax loss, got loss={loss}; use loss=crossentropy")
    return loss


def head_spec(*, loss: str, from_logits: bool, num_classes: int) -> tuple[int, str | None]:
    """Returns (units, activation) of the output layer for a loss kind and class count (see LOSS_TABLE)."""
    spec = loss_spec(loss)
    return spec.head_units(num_classes), spec.head_activation(from_logits)


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
        raise ConfigError(
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


def char_lstm(
    input_shape: tuple[int, ...],
    units: int,
    activation: str | None,
    *,
    embedding_dim: int = 512,
    lstm_units: int = 512,
    num_layers: int = 2,
    vocab_size: int | None = None,
    batch_size: int | None = None,
    stateful: bool = False,
    **_: Any,
) -> keras.Model:
    """The seed's language model: Embedding, stacked LSTMs returning sequences, time-distributed head.

    Output (batch, seq_len, units). Generation builds a stateful copy (batch 5, seq_len 1) with the same
    weights; see xentlab.core.sampling.
    """
    source = keras.Input(shape=input_shape, batch_size=batch_size, dtype="int32", name="seed")
    h = layers.Embedding(vocab_size or units, embedding_dim, name="embedding")(source)
    for i in range(num_layers):
        h = layers.LSTM(lstm_units, return_sequences=True, stateful=stateful, name=f"lstm_{i + 1}")(h)
    out = layers.TimeDistributed(
        layers.Dense(units, activation=activation, dtype="float32"), dtype="float32", name="head"
    )(h)
    return keras.Model(source, out, name="char_lstm")


def multi_head(
    input_shape: tuple[int, ...],
    units: int,
    activation: str | None,
    *,
    num_heads: int = 1,
    vocab_size: int | None = None,
    embedding_dim: int = 32,
    hidden_units: int = 64,
    heads: str = HeadLayout.shared.value,
    **_: Any,
) -> keras.Model:
    """Token sequence -> `num_heads` classifications, output (batch, num_heads, units).

    heads="shared": one Dense(num_heads * units) reshaped to (num_heads, units), the seed's 18 -> (3, 6).
    heads="separate": one Dense(units) per head, stacked. Either way the sparse loss sees labels
    (batch, num_heads) and averages over every (example, head) element, i.e. the heads' losses added up and
    divided by num_heads.
    """
    heads = HeadLayout.parse(heads, "model.heads").value
    source = keras.Input(shape=input_shape, dtype="int32", name="tokens")
    h = layers.Embedding(vocab_size or 1000, embedding_dim, name="embedding")(source)
    h = layers.Flatten()(h)  # keeps token positions, so each head can read its own period
    h = layers.Dense(hidden_units, activation="relu")(h)
    if heads == "shared":
        logits = layers.Dense(num_heads * units, dtype="float32", name="heads")(h)
        logits = layers.Reshape((num_heads, units), dtype="float32")(logits)
    else:
        per_head = [
            layers.Reshape((1, units), dtype="float32")(layers.Dense(units, dtype="float32", name=f"head{i}")(h))
            for i in range(num_heads)
        ]
        logits = layers.Concatenate(axis=1, dtype="float32")(per_head) if num_heads > 1 else per_head[0]
    out = layers.Activation(activation or "linear", dtype="float32", name="head")(logits)
    return keras.Model(source, out, name=f"multi_head_{heads}")


MODELS: dict[str, Callable[..., keras.Model]] = {
    "mnist_cnn": mnist_cnn,
    "mlp": mlp,
    "char_lstm": char_lstm,
    "multi_head": multi_head,
}


def head_layer(model: keras.Model) -> layers.Layer:
    """The layer that applies the output activation (unwrapping TimeDistributed)."""
    last = model.layers[-1]
    return getattr(last, "layer", last)


def head_activation(model: keras.Model) -> str | None:
    """softmax, sigmoid, or None for a linear head."""
    name = getattr(getattr(head_layer(model), "activation", None), "__name__", None)
    return None if name in (None, "linear") else name


def build_model(
    name: str,
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    loss: str = "crossentropy",
    from_logits: bool = False,
    **arch: Any,
) -> keras.Model:
    """Builds model `name` with a head that fits the loss (see head_spec).

    Args:
        name: a key of MODELS.
        input_shape: one example's input shape (from the data).
        num_classes: classes per output position (from the data).
        loss: loss kind, for the head's width and activation.
        from_logits: linear head when true.
        **arch: the model's architecture knobs plus data facts some models need (vocab_size, num_heads).
    """
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; known: {sorted(MODELS)}")
    units, activation = head_spec(loss=loss, from_logits=from_logits, num_classes=num_classes)
    return MODELS[name](tuple(input_shape), units, activation, **arch)


@dataclass(frozen=True)
class Capabilities:
    """What a model does beyond classifying, so the runner asks the model instead of switching on its name.

    Attributes:
        separate_heads: labels (N, H) are H separate classifications (per-head metrics and figures), not H
            positions of one sequence.
        generates_text: a language model that samples text after training (xentlab.core.sampling).
    """

    separate_heads: bool = False
    generates_text: bool = False


CAPABILITIES: dict[str, Capabilities] = {
    "char_lstm": Capabilities(generates_text=True),
    "multi_head": Capabilities(separate_heads=True),
}


def capabilities(name: str) -> Capabilities:
    return CAPABILITIES.get(name, Capabilities())


def choose_model(*, input_shape: tuple[int, ...], integer_inputs: bool, label_shape: tuple[int, ...]) -> str:
    """model=auto: the model that fits the data's shapes.

    Token ids labelled per position (next-token text) -> char_lstm; token ids with several labels per example
    -> multi_head; images (H, W) or (H, W, C) -> mnist_cnn; flat feature vectors -> mlp.
    """
    input_shape, label_shape = tuple(input_shape), tuple(label_shape)
    if integer_inputs and label_shape and label_shape == input_shape:
        return "char_lstm"
    if integer_inputs and len(label_shape) == 1:
        return "multi_head"
    if not label_shape and len(input_shape) in (2, 3) and min(input_shape[:2]) >= 6:
        return "mnist_cnn"
    if not label_shape and len(input_shape) == 1:
        return "mlp"
    raise ConfigError(
        f"model=auto found no model for inputs of shape {input_shape} ({'token ids' if integer_inputs else 'numbers'}) "
        f"with labels of shape {label_shape} per example; pick one with model=mnist_cnn|mlp|char_lstm|multi_head"
    )

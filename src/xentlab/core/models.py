"""Model builders, the head a loss implies, and which model fits which data (the rules model=auto picks by).

The head is linear when the loss takes logits and softmax (or sigmoid for one binary unit) otherwise, and it
is always float32 so mixed-precision runs compute the loss on float32 outputs. The run decides both once, in its
pre-flight plan (xentlab.config.preflight); the builders take the decision as given. The seed models end in it
themselves; backbones (model=resnet, model=keras_app, a user's model=custom) get it from `with_head`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import keras
from keras import layers

from xentlab.choices import Head, HeadLayout
from xentlab.core.architectures import keras_app, resnet
from xentlab.core.losses import LOSS_TABLE, loss_spec
from xentlab.core.user_model import build_user_model, check_full_model, refuse_a_head_on_a_head
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


class HeadSpec(NamedTuple):
    """The output layer: its width and its activation (None: linear, the loss takes logits)."""

    units: int
    activation: str | None


def head_spec(*, loss: str, from_logits: bool, num_classes: int) -> HeadSpec:
    """The output layer for a loss kind and class count (the kind's LOSS_TABLE row)."""
    spec = loss_spec(loss)
    return HeadSpec(spec.head_units(num_classes), spec.head_activation(from_logits))


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
# Models that end in features: the head is added by `with_head`, the one place it is made for them.
BACKBONES: dict[str, Callable[..., keras.Model]] = {"resnet": resnet, "keras_app": keras_app}


def is_backbone(name: str, arch: dict[str, Any]) -> bool:
    """Whether model `name` with knobs `arch` gets its head from `with_head`: the named backbones and a user's
    model (`_target_` set)."""
    return name in BACKBONES or bool(arch.get("_target_"))


def with_head(backbone: keras.layers.Layer, head: HeadSpec, *, input_shape: tuple[int, ...],
              input_dtype: str = "float32", label_rank: int = 0, name: str = "model") -> keras.Model:
    """`backbone` (a model or layer mapping one input to features) followed by the head `head`, in float32.

    Features (batch, ..., d) with more axes than the labels need (one label per example: a feature map) are
    averaged over the extra ones (global average pooling); the head's Dense applies along the last axis, so
    per-position labels (batch, T) take features (batch, T, d).
    """
    inputs = keras.Input(shape=tuple(input_shape), dtype=input_dtype, name="inputs")
    features = backbone(inputs)
    if isinstance(features, (list, tuple, dict)):
        raise ConfigError(f"the backbone of model={name} returns {len(features)} outputs; xentlab adds one head: "
                          f"return one feature tensor")
    extra = len(features.shape) - 2 - label_rank
    if extra < 0:
        raise ConfigError(f"the backbone of model={name} outputs shape {tuple(features.shape)}; labels of rank "
                          f"{label_rank} need features (batch, {', '.join(['T'] * label_rank + ['d'])})")
    if extra:
        pool = {1: layers.GlobalAveragePooling1D, 2: layers.GlobalAveragePooling2D, 3: layers.GlobalAveragePooling3D}
        features = (pool[extra] if extra in pool and label_rank == 0 else layers.Flatten)(name="pool")(features)
    return keras.Model(inputs, _head(head.units, head.activation)(features), name=name)


def build_model(name: str, *, input_shape: tuple[int, ...], head: HeadSpec, **arch: Any) -> keras.Model:
    """Builds model `name` ending in the output layer `head` (see head_spec), computed in float32.

    Args:
        name: a key of MODELS or BACKBONES, or any name with `_target_` in `arch` (a user's model).
        input_shape: one example's input shape (from the data; `model_misfit` says whether the model takes it).
        head: units and activation of the output layer.
        **arch: the model's architecture knobs plus data facts some models need (vocab_size, num_heads; for
            backbones num_classes, input_dtype and label_rank).
    """
    if not is_backbone(name, arch):
        if name not in MODELS:
            raise ConfigError(f"unknown model {name!r}; known: {sorted(MODELS | BACKBONES)}, or set "
                              f"model._target_=package.module.function (model=custom)")
        return MODELS[name](tuple(input_shape), head.units, head.activation, **arch)
    facts = {k: arch.pop(k) for k in ("input_dtype", "label_rank") if k in arch}
    target = arch.get("_target_")
    if target is None:
        backbone = BACKBONES[name](tuple(input_shape), **arch)
        return with_head(backbone, head, input_shape=input_shape, name=name, **facts)
    built = build_user_model(target, input_shape=input_shape, num_classes=arch["num_classes"],
                             vocab_size=arch.get("vocab_size") if facts.get("input_dtype") == "int32" else None,
                             options=arch.get("options"))
    if not arch.get("full_model"):
        refuse_a_head_on_a_head(built, target)
        return with_head(built, head, input_shape=input_shape, name=name, **facts)
    if not isinstance(built, keras.Model):
        built = keras.Sequential([keras.Input(shape=tuple(input_shape), dtype=facts.get("input_dtype", "float32")),
                                  built])
    check_full_model(built, units=head.units, activation=head.activation, label_rank=facts.get("label_rank", 0),
                     target=target)
    if built.outputs[0].dtype != "float32":  # the loss is computed on float32 outputs, as for xentlab's heads
        return keras.Model(built.inputs, layers.Activation("linear", dtype="float32")(built.outputs[0]), name=name)
    return built


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


@dataclass(frozen=True)
class DataShapes:
    """What a model must fit: one example's input shape, token ids or numbers, one example's label shape."""

    input_shape: tuple[int, ...]
    integer_inputs: bool
    label_shape: tuple[int, ...]

    def describe(self) -> str:
        kind = "token ids" if self.integer_inputs else "numbers"
        return f"inputs of shape {self.input_shape} ({kind}) with labels of shape {self.label_shape} per example"


# Which data each model takes, in the order model=auto tries them: the one statement of these rules.
FITS: dict[str, tuple[str, Callable[[DataShapes], bool]]] = {
    "char_lstm": ("token ids labelled per position (labels shaped like the inputs)",
                  lambda d: d.integer_inputs and bool(d.label_shape) and d.label_shape == d.input_shape),
    "multi_head": ("token ids with several labels per example (labels of shape (heads,))",
                   lambda d: d.integer_inputs and len(d.label_shape) == 1),
    "mnist_cnn": ("images of shape (H, W, C) with H, W >= 6 (two 3x3 convs and a 2x2 pool), one label each",
                  lambda d: not d.label_shape and len(d.input_shape) == 3 and min(d.input_shape[:2]) >= 6),
    "mlp": ("one label per example (any input: it flattens them)", lambda d: not d.label_shape),
    "resnet": ("images of shape (H, W, C), one label each",
               lambda d: not d.label_shape and len(d.input_shape) == 3 and not d.integer_inputs),
    "keras_app": ("images of shape (H, W, C), one label each (smaller ones are resized up)",
                  lambda d: not d.label_shape and len(d.input_shape) == 3 and not d.integer_inputs),
}
AUTO_ORDER = ("char_lstm", "multi_head", "mnist_cnn", "mlp")  # the first that fits; mlp takes images too


def choose_model(data: DataShapes) -> str | None:
    """model=auto: the first model of AUTO_ORDER that fits the data's shapes (None when none does).

    Token ids labelled per position (next-token text) -> char_lstm; token ids with several labels per example
    -> multi_head; images (H, W, C) -> mnist_cnn; anything else with one label per example -> mlp.
    """
    return next((name for name in AUTO_ORDER if FITS[name][1](data)), None)


def model_misfit(name: str, data: DataShapes) -> str | None:
    """Why model `name` cannot take this data, with the model to use instead; None when it fits (a user's model
    takes what it declares: not checked here)."""
    if name not in FITS:
        return None
    needs, fits = FITS[name]
    if fits(data):
        return None
    other = choose_model(data)
    fix = f"use model={other} (or model=auto)" if other else "no model here fits them; check the data loader"
    return f"model={name} needs {needs}, got {data.describe()}; {fix}"

"""A user's own model (model=custom model._target_=package.module.function, or a config of the user's own with
`_target_`).

The function is called with the keyword arguments it declares among `input_shape` (one example's), `num_classes`,
`vocab_size` (token inputs) and the entries of model.options, and returns a Keras model or layer:

- a backbone (model.full_model=false, the default): its output is features, and xentlab adds the head the loss
  implies (`xentlab.core.models.with_head`), so every loss, label encoding and from_logits setting works unchanged;
- a full model (model.full_model=true): its last layer is checked against the head the loss needs, width and
  activation, before anything trains.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras

from xentlab.errors import ConfigError
from xentlab.hooks import call_with_declared, locate

PROBABILITIES = ("softmax", "sigmoid")


def build_user_model(target: str, *, input_shape: tuple[int, ...], num_classes: int, vocab_size: int | None = None,
                     options: Mapping[str, Any] | None = None) -> keras.layers.Layer:
    """Calls the user's function `target`; what it returns must be a Keras model or layer."""
    if options is not None and not isinstance(options, Mapping):
        raise ConfigError(f"model.options must be a mapping of argument names to values ({{units: 64}}), "
                          f"got {options!r}")
    fn = locate(target, key="model._target_", error=ConfigError)
    base = {"input_shape": tuple(input_shape), "num_classes": num_classes, "vocab_size": vocab_size}
    built = call_with_declared(fn, target, base, dict(options or {}), options_key="model.options", error=ConfigError)
    if not isinstance(built, keras.layers.Layer):
        raise ConfigError(f"model._target_={target} returned a {type(built).__name__}; expected a Keras model or "
                          f"layer (keras.Model, keras.Sequential, or a layer that maps inputs to features)")
    return built


def last_activation(model: keras.layers.Layer) -> str | None:
    """The activation of a model's last layer ("linear", "softmax", ...), looking inside nested models; None when
    the last layer has no `activation` (a custom layer)."""
    layer = model
    while isinstance(layer, keras.Model) and layer.layers:
        layer = layer.layers[-1]
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", None) if activation is not None else None


def refuse_a_head_on_a_head(backbone: keras.layers.Layer, target: str) -> None:
    """A backbone that already ends in probabilities would get a second head on top: refused, with both fixes."""
    activation = last_activation(backbone)
    if activation in PROBABILITIES:
        raise ConfigError(
            f"model._target_={target} returns a model whose last layer has a {activation}: it looks like a full "
            f"model, and xentlab would add its head on top of probabilities. Return the backbone (drop the last "
            f"layer: xentlab adds the head the loss needs), or set model.full_model=true to have your head checked"
        )


def check_full_model(model: keras.Model, *, units: int, activation: str | None, label_rank: int, target: str) -> None:
    """Refuses a full model whose output does not have the width, rank and activation the loss needs.

    Args:
        units: output width the loss needs (its HeadSpec).
        activation: the activation it needs; None: linear, the loss takes logits.
        label_rank: axes of one example's labels (0: one label per example).
    """
    if len(model.outputs) != 1:
        raise ConfigError(f"model._target_={target} has {len(model.outputs)} outputs; xentlab trains one: return a "
                          f"model with one output, or the backbone")
    shape = tuple(model.outputs[0].shape)
    wanted = (None, *["..."] * label_rank, units)
    if len(shape) != label_rank + 2 or shape[-1] != units:
        raise ConfigError(
            f"model._target_={target} outputs shape {shape}, the loss needs {wanted} ({units} output"
            f"{'s' if units != 1 else ''} per labelled position); end the model in Dense({units}), or return the "
            f"backbone and set model.full_model=false: xentlab adds the right head"
        )
    found, needed = last_activation(model), activation or "linear"
    if found is None or found == needed:
        return  # a custom last layer: its width is checked, its activation is the user's word
    if activation is None:
        raise ConfigError(
            f"the loss takes logits (loss.from_logits=true); model._target_={target}'s last layer has a {found}: "
            f"return the backbone (model.full_model=false), remove the {found}, or set loss.from_logits=false"
        )
    raise ConfigError(
        f"the loss takes {needed} probabilities (loss.from_logits=false); model._target_={target}'s last layer is "
        f"{found}: set loss.from_logits=true{' (its outputs are logits)' if found == 'linear' else ''}, end the "
        f"model in activation={needed!r}, or return the backbone (model.full_model=false)"
    )

"""Stateful sampling from a trained char LSTM (`xentlab-generate`), as in the seed: batch 5, one byte per step.

The trained model is non-stateful with windows of 100; generation rebuilds it from its config with input
(5, 1) and stateful LSTMs, copies the weights, resets the states and feeds its own samples back.
"""

from __future__ import annotations

import copy

import numpy as np

from xentlab.core.probabilities import check_from_logits, to_probabilities
from xentlab.errors import ConfigError

STREAMS = 5  # the seed predicts five characters at a time, one per independent stream


def stateful_copy(model, batch_size: int = STREAMS):
    """The same network with input (batch_size, 1) and stateful recurrent layers, holding `model`'s weights."""
    import keras

    config = copy.deepcopy(model.get_config())
    for layer in config["layers"]:
        layer.pop("build_config", None)  # recorded shapes hold the training batch and window; rebuild instead
        if layer["class_name"] == "InputLayer":
            layer["config"]["batch_shape"] = [batch_size, 1]
        if "stateful" in layer["config"]:
            layer["config"]["stateful"] = True
    twin = keras.Model.from_config(config)
    twin.set_weights(model.get_weights())
    return twin


def reset_states(model) -> None:
    """Keras 3 has no Model.reset_states: reset every stateful layer."""
    for layer in model.layers:
        if getattr(layer, "stateful", False):
            layer.reset_state()


def sampling_probabilities(outputs: np.ndarray, from_logits: bool, temperature: float) -> np.ndarray:
    """Next-byte distribution p^(1/T), renormalised, from one step's outputs (streams, K) (logits or probabilities).

    Whether `outputs` are logits is the model's (its loss.from_logits), never guessed from the values.
    """
    log_p = np.log(np.maximum(to_probabilities(outputs, from_logits), 1e-12))  # 1e-12: log 0 stays finite
    return to_probabilities(log_p / temperature, from_logits=True)


def generate(
    model, prompt: str, length: int = 200, temperature: float = 1.0, seed: int = 0, streams: int = STREAMS, *,
    from_logits: bool,
) -> list[str]:
    """Samples `streams` continuations of `prompt`, `length` bytes each.

    Args:
        model: a trained char LSTM (input: byte ids; output per position: 256 probabilities or logits).
        prompt: text to condition on (encoded as UTF-8 bytes, like the training data).
        length: bytes to generate per stream.
        temperature: > 0; below 1 sharpens the distribution, above 1 flattens it.
        seed: for the sampler, so a call is repeatable.
        streams: parallel streams (the stateful copy's batch size).
        from_logits: whether the model outputs logits (a linear head) or probabilities (softmax): the
            run's `loss.from_logits`.

    Raises:
        ValueError: For a temperature <= 0 or an empty prompt.
        TypeError: If from_logits is not a bool.
    """
    check_from_logits(from_logits)  # before the model is copied and warmed up
    if temperature <= 0:
        raise ConfigError(f"temperature must be > 0, got {temperature}")
    if not prompt:
        raise ConfigError("prompt must have at least one character")
    rng = np.random.default_rng(seed)
    twin = stateful_copy(model, streams)
    reset_states(twin)
    ids = np.frombuffer(prompt.encode("utf-8"), dtype=np.uint8).astype("int32")
    for token in ids[:-1]:  # warm the states up on the prompt
        twin.predict_on_batch(np.full((streams, 1), token, dtype="int32"))
    current = np.full((streams, 1), ids[-1], dtype="int32")
    out = np.zeros((streams, length), dtype=np.uint8)
    for step in range(length):
        p = sampling_probabilities(np.asarray(twin.predict_on_batch(current))[:, -1, :], from_logits, temperature)
        choice = np.array([rng.choice(p.shape[-1], p=row) for row in p])
        out[:, step] = choice
        current = choice.reshape(streams, 1).astype("int32")
    return [prompt + bytes(row).decode("utf-8", errors="replace") for row in out]

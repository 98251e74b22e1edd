"""Stateful sampling from a trained char LSTM (`xentlab-generate`), as in the seed: batch 5, one byte per step.

The trained model is non-stateful with windows of 100; generation rebuilds it from its config with input
(5, 1) and stateful LSTMs, copies the weights, resets the states and feeds its own samples back.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys

import numpy as np

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


def _probabilities(output: np.ndarray) -> np.ndarray:
    """Softmax over the last axis when `output` looks like logits (rows not summing to 1)."""
    if np.all(output >= 0) and np.allclose(output.sum(-1), 1.0, atol=1e-3):
        return output
    z = output - output.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def generate(
    model, prompt: str, length: int = 200, temperature: float = 1.0, seed: int = 0, streams: int = STREAMS
) -> list[str]:
    """Samples `streams` continuations of `prompt`, `length` bytes each.

    Args:
        model: a trained char LSTM (input: byte ids; output per position: 256 probabilities or logits).
        prompt: text to condition on (encoded as UTF-8 bytes, like the training data).
        length: bytes to generate per stream.
        temperature: > 0; below 1 sharpens the distribution, above 1 flattens it.
        seed: for the sampler, so a call is repeatable.
        streams: parallel streams (the stateful copy's batch size).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not prompt:
        raise ValueError("prompt must have at least one character")
    rng = np.random.default_rng(seed)
    twin = stateful_copy(model, streams)
    reset_states(twin)
    ids = np.frombuffer(prompt.encode("utf-8"), dtype=np.uint8).astype("int32")
    for token in ids[:-1]:  # warm the states up on the prompt
        twin.predict_on_batch(np.full((streams, 1), token, dtype="int32"))
    current = np.full((streams, 1), ids[-1], dtype="int32")
    out = np.zeros((streams, length), dtype=np.uint8)
    for step in range(length):
        probs = _probabilities(np.asarray(twin.predict_on_batch(current))[:, -1, :].astype("float64"))
        logits = np.log(np.maximum(probs, 1e-12)) / temperature
        p = np.exp(logits - logits.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        choice = np.array([rng.choice(p.shape[-1], p=row) for row in p])
        out[:, step] = choice
        current = choice.reshape(streams, 1).astype("int32")
    return [prompt + bytes(row).decode("utf-8", errors="replace") for row in out]


def main(argv: list[str] | None = None) -> None:
    """`xentlab-generate --run-id ID [--prompt P] [--length N] [--temperature T]`: prints five streams."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = argparse.ArgumentParser(prog="xentlab-generate", description=main.__doc__)
    parser.add_argument("--run-id", required=True, help="MLflow run whose logged model is a char LSTM")
    parser.add_argument("--prompt", default="ROMEO:")
    parser.add_argument("--length", type=int, default=200)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI or outputs/mlflow.db")
    args = parser.parse_args(argv)

    import mlflow

    import xentlab.losses  # noqa: F401  (registers the loss classes the saved model refers to)
    import xentlab.metrics  # noqa: F401
    from xentlab.store import resolve_tracking_uri

    mlflow.set_tracking_uri(resolve_tracking_uri(args.tracking_uri, os.getcwd()))
    try:
        model = mlflow.keras.load_model(f"runs:/{args.run_id}/model")  # Keras safe mode stays on
    except Exception as err:
        sys.exit(f"xentlab-generate: cannot load the model of run {args.run_id}: {type(err).__name__}: {err}")
    for i, text in enumerate(generate(model, args.prompt, args.length, args.temperature, args.seed)):
        print(f"--- stream {i}\n{text}")


if __name__ == "__main__":
    main()

"""Stateful sampling from a trained char LSTM (`xentlab-generate`), as in the seed: batch 5, one byte per step.

The trained model is non-stateful with windows of 100; generation rebuilds it from its config with input
(5, 1) and stateful LSTMs, copies the weights, resets the states and feeds its own samples back.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import sys

import numpy as np

from xentlab.probabilities import check_from_logits, to_probabilities

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
        p = sampling_probabilities(np.asarray(twin.predict_on_batch(current))[:, -1, :], from_logits, temperature)
        choice = np.array([rng.choice(p.shape[-1], p=row) for row in p])
        out[:, step] = choice
        current = choice.reshape(streams, 1).astype("int32")
    return [prompt + bytes(row).decode("utf-8", errors="replace") for row in out]


def run_from_logits(client, run_id: str) -> bool:
    """The run's logged `loss.from_logits` param as a bool: whether its model outputs logits.

    Raises:
        ValueError: If the run has no such param, or it is not a boolean.
    """
    value = client.get_run(run_id).data.params.get("loss.from_logits")
    if value is None or value.lower() not in ("true", "false"):
        raise ValueError(
            f"run {run_id} has loss.from_logits={value!r}; expected 'True' or 'False' (logged by xentlab-train). "
            f"Generate from a run trained by xentlab-train, which logs it."
        )
    return value.lower() == "true"


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
    # Checked before anything loads: each names the argument, the value and what is allowed.
    if args.length < 1:
        parser.error(f"--length must be a positive number of bytes per stream, got {args.length}; e.g. --length 200")
    if not math.isfinite(args.temperature) or args.temperature <= 0:
        parser.error(f"--temperature must be a finite number > 0 (1 samples the model as is, lower is greedier), "
                     f"got {args.temperature}; e.g. --temperature 0.8")
    if not args.prompt:
        parser.error("--prompt must not be empty: the model needs at least one byte to start from (--prompt ROMEO:)")

    import mlflow

    import xentlab.losses  # noqa: F401  (registers the loss classes the saved model refers to)
    import xentlab.metrics  # noqa: F401
    from xentlab.store import resolve_tracking_uri

    mlflow.set_tracking_uri(resolve_tracking_uri(args.tracking_uri, os.getcwd()))
    try:
        from_logits = run_from_logits(mlflow.MlflowClient(), args.run_id)
        model_name = mlflow.MlflowClient().get_run(args.run_id).data.params.get("model.resolved") or (
            mlflow.MlflowClient().get_run(args.run_id).data.params.get("model.name"))
        if model_name and model_name not in ("char_lstm",):
            sys.exit(f"xentlab-generate: run {args.run_id} trained model {model_name}, which does not generate text; "
                     f"pass the run id of a char_lstm run (e.g. +experiment=shakespeare_lstm)")
        model = mlflow.keras.load_model(f"runs:/{args.run_id}/model")  # Keras safe mode stays on
    except Exception as err:
        sys.exit(f"xentlab-generate: cannot load the model of run {args.run_id}: {type(err).__name__}: {err}")
    texts = generate(model, args.prompt, args.length, args.temperature, args.seed, from_logits=from_logits)
    for i, text in enumerate(texts):
        print(f"--- stream {i}\n{text}")


if __name__ == "__main__":
    main()

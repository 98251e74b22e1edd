"""`xentlab-generate --run-id ID`: five streams of text sampled from a trained char LSTM, as in the seed."""

from __future__ import annotations

import argparse
import math
import os
import sys

from xentlab.core.sampling import generate


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

    import xentlab.core.losses  # noqa: F401  (registers the loss classes the saved model refers to)
    import xentlab.core.metric_set  # noqa: F401  (registers every metric class a saved model refers to)
    from xentlab.tracking.store import resolve_tracking_uri

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

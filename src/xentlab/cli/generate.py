"""`xentlab-generate --run-id ID`: five streams of text sampled from a trained char LSTM, as in the seed."""

from __future__ import annotations

import argparse
import math
import os

from xentlab.cli.console import command
from xentlab.core.sampling import generate
from xentlab.errors import ConfigError, ExpectedError


class ModelNotLoadable(ExpectedError, RuntimeError):
    """The run's logged model cannot be read: no such run, or a run that logged no model."""


def run_from_logits(client, run_id: str) -> bool:
    """The run's logged `loss.from_logits` param as a bool: whether its model outputs logits.

    Raises:
        ConfigError: If the run has no such param, or it is not a boolean.
    """
    value = client.get_run(run_id).data.params.get("loss.from_logits")
    if value is None or value.lower() not in ("true", "false"):
        raise ConfigError(
            f"run {run_id} has loss.from_logits={value!r}; expected 'True' or 'False' (logged by xentlab-train). "
            f"Generate from a run trained by xentlab-train, which logs it."
        )
    return value.lower() == "true"


@command
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
    from mlflow.exceptions import MlflowException

    import xentlab.core.losses  # noqa: F401  (registers the loss classes the saved model refers to)
    import xentlab.core.metric_set  # noqa: F401  (registers every metric class a saved model refers to)
    from xentlab.tracking.store import resolve_tracking_uri

    mlflow.set_tracking_uri(resolve_tracking_uri(args.tracking_uri, os.getcwd()))
    try:
        params = mlflow.MlflowClient().get_run(args.run_id).data.params
        model_name = params.get("model.resolved") or params.get("model.name")
        if model_name and model_name not in ("char_lstm",):
            raise ConfigError(f"xentlab-generate: run {args.run_id} trained model {model_name}, which does not "
                              f"generate text; pass the run id of a char_lstm run (e.g. +experiment=shakespeare_lstm)")
        from_logits = run_from_logits(mlflow.MlflowClient(), args.run_id)
        model = mlflow.keras.load_model(f"runs:/{args.run_id}/model")  # Keras safe mode stays on
    except (MlflowException, OSError) as err:
        raise ModelNotLoadable(
            f"xentlab-generate: cannot load the model of run {args.run_id}: {type(err).__name__}: {err}. Pass the "
            f"id of a FINISHED char_lstm run of this store (--tracking-uri names another store)"
        ) from err
    texts = generate(model, args.prompt, args.length, args.temperature, args.seed, from_logits=from_logits)
    for i, text in enumerate(texts):
        print(f"--- stream {i}\n{text}")


if __name__ == "__main__":
    main()

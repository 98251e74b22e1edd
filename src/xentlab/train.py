"""`xentlab-train`: the only place that reads the whole config; it calls the builders and tracks the run."""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from xentlab.schema import register_configs

CONF_DIR = os.environ.get("XENTLAB_CONF_DIR") or str(Path(__file__).resolve().parents[2] / "conf")
CONTRACT_METRICS = ("loss", "accuracy", "auc", "nll")  # nll: the same scale for every loss variant


def main() -> None:
    """Console entry point: quiet TF's C++ logs, register the schemas, hand over to Hydra."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    register_configs()
    _hydra_entry()


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def _hydra_entry(cfg: DictConfig) -> float | None:
    return run(cfg)


def launch_dir() -> Path:
    """The directory the command was started from (Hydra may change the working directory)."""
    try:
        return Path(hydra.utils.get_original_cwd())
    except ValueError:  # called outside a Hydra app (tests calling run() directly)
        return Path.cwd()


def sweep_job() -> dict[str, Any] | None:
    """For a job of a multirun sweep: its parent run, sweep id and the overrides that vary; else None."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from xentlab.sweep import job_run_name, read_sweep_file

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    hc = HydraConfig.get()
    info = read_sweep_file(hc.sweep.dir)
    if info is None:
        return None
    return {**info, "name": job_run_name(list(hc.overrides.task), info["varying"]) or f"job{hc.job.num}"}


def run_tags(config: dict[str, Any], sweep: dict[str, Any] | None) -> dict[str, str]:
    """Parent-run link (explicit tracking.parent_run_id, else the sweep's) and the sweep id."""
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    from xentlab.store import SWEEP_TAG

    tags = {}
    parent = config["tracking"]["parent_run_id"] or (sweep or {}).get("parent_run_id")
    if parent:
        tags[MLFLOW_PARENT_RUN_ID] = parent
    if sweep:
        tags[SWEEP_TAG] = sweep["sweep_id"]
    return tags


def run_name(config: dict[str, Any], sweep: dict[str, Any] | None = None) -> str:
    """tracking.run_name if set; in a sweep the overrides that vary; else `<model>/<loss>/<labels>/<weighting>`."""
    if sweep:
        return sweep["name"]
    if config["tracking"]["run_name"]:
        return config["tracking"]["run_name"]
    return "/".join(
        [config["model"]["name"], config["loss"]["name"], config["labels"]["encoding"],
         config["weighting"]["scheme"]]
    )


def resolve_verbose(setting: str) -> int:
    """Keras' progress bar on a terminal, one line per epoch otherwise (logs, CI, sweeps)."""
    if setting == "auto":
        return 1 if sys.stdout.isatty() else 2
    if setting not in ("0", "1", "2"):
        raise ValueError(f"trainer.verbose must be auto, 0, 1 or 2, got {setting!r}")
    return int(setting)


@dataclass
class Prepared:
    """Everything built before training: hardware plan, checked data, datasets, compiled model."""

    plan: Any
    bundle: Any
    train_ds: Any
    val_ds: Any
    test_ds: Any
    model: Any
    class_weights: Any
    from_logits: bool


def build_loss_from_config(loss_cfg: dict[str, Any], *, encoding: str, ignore_class: int | None):
    """A user's own `loss._target_` callable, or one of xentlab.losses by `loss.name`."""
    from xentlab.losses import build_loss

    target = loss_cfg.get("_target_")
    if target:
        obj = hydra.utils.get_object(target)
        return obj() if isinstance(obj, type) else obj
    options = {k: v for k, v in loss_cfg.items() if k not in ("name", "_target_")}
    return build_loss(loss_cfg["name"], encoding=encoding, ignore_class=ignore_class, **options)


def prepare(config: dict[str, Any], initial_epoch: int = 0) -> Prepared:
    """Checks and builds everything in order: strategy, data, checks, datasets, then the model in scope.

    `initial_epoch` > 0 when resuming: the training set then starts at that epoch's shuffle order.
    """
    import keras
    import tensorflow as tf

    from xentlab import checks
    from xentlab.data import load_data
    from xentlab.labels import make_dataset
    from xentlab.metrics import build_metrics
    from xentlab.models import build_model, head_activation, head_layer, head_spec, resolve_loss_kind
    from xentlab.optimizers import build_optimizer
    from xentlab.strategy import build_strategy
    from xentlab.weighting import class_weights, label_counts

    trainer, labels, loss_cfg = config["trainer"], config["labels"], config["loss"]
    strategy_cfg = {k: v for k, v in config["strategy"].items() if k != "name"}
    plan = build_strategy(config["strategy"]["name"], **strategy_cfg)  # first: may configure devices
    keras.backend.clear_session()  # jobs in one process (sweeps, tests) must not share layers or names
    keras.utils.set_random_seed(trainer["seed"])
    if trainer["deterministic"]:
        tf.config.experimental.enable_op_determinism()

    data_cfg = {k: v for k, v in config["data"].items() if k != "name"}
    bundle = load_data(config["data"]["name"], **data_cfg)
    ignore_class, encoding = labels["ignore_class"], labels["encoding"]
    bundle = checks.check_bundle(bundle, ignore_class=ignore_class)
    loss_kind = resolve_loss_kind(loss_cfg["name"], config["model"]["head"], bundle.num_classes)
    checks.check_loss_and_labels(loss=loss_kind, encoding=encoding, num_classes=bundle.num_classes)
    checks.check_batch(batch_size=trainer["batch_size"], replicas=plan.replicas, train_size=len(bundle.x_train))

    weighting = config["weighting"]
    weights = class_weights(
        label_counts(bundle.y_train, bundle.num_classes, ignore_class), weighting["scheme"],
        beta=weighting["beta"], weights=weighting["weights"],
    )
    common = {
        "batch_size": trainer["batch_size"], "encoding": encoding, "num_classes": bundle.num_classes,
        "ignore_class": ignore_class, "drop_remainder": plan.drop_remainder,
    }
    train_ds = make_dataset(
        bundle.x_train, bundle.y_train, class_weights=weights, normalize=weighting["normalize"], shuffle=True,
        shuffle_buffer=trainer["shuffle_buffer"], seed=trainer["seed"],
        epochs=(initial_epoch, max(trainer["epochs"], initial_epoch)), **common,
    )
    # Validation and test losses stay unweighted, so variants with different weightings compare on one scale.
    val_ds = make_dataset(bundle.x_val, bundle.y_val, **common)
    test_ds = make_dataset(bundle.x_test, bundle.y_test, **common)

    from_logits = bool(loss_cfg["from_logits"])
    model_cfg = {k: v for k, v in config["model"].items() if k not in ("name", "head") and not k.startswith("sample_")}
    data_facts = {"vocab_size": bundle.meta.get("vocab_size", bundle.num_classes)}
    if bundle.y_train.ndim == 2:
        data_facts["num_heads"] = bundle.y_train.shape[1]
    with plan.strategy.scope():
        model = build_model(
            config["model"]["name"], input_shape=bundle.input_shape, num_classes=bundle.num_classes,
            loss=loss_kind, from_logits=from_logits, **data_facts, **model_cfg,
        )
        units, _ = head_spec(loss=loss_kind, from_logits=from_logits, num_classes=bundle.num_classes)
        checks.check_model_output(
            output_shape=tuple(model.output_shape), label_shape=bundle.y_train.shape[1:], units=units,
            num_classes=bundle.num_classes, head_activation=head_activation(model),
            head_dtype=head_layer(model).compute_dtype, from_logits=from_logits, single_unit=units == 1,
        )
        model.compile(
            optimizer=build_optimizer(config["optimizer"]["name"], **{
                k: v for k, v in config["optimizer"].items() if k != "name"}),
            loss=build_loss_from_config({**loss_cfg, "name": loss_kind}, encoding=encoding, ignore_class=ignore_class),
            metrics=build_metrics(
                bundle.num_classes, encoding=encoding, from_logits=from_logits, ignore_class=ignore_class,
                num_heads=data_facts.get("num_heads") if config["model"]["name"] == "multi_head" else None,
            ),
            jit_compile=plan.jit_compile,
            steps_per_execution=plan.steps_per_execution,
        )
    return Prepared(plan, bundle, train_ds, val_ds, test_ds, model, weights, from_logits)


def log_prepared(prepared: Prepared, config: dict[str, Any]) -> None:
    """Params and artifacts known before training: hardware, split sizes, class weights, resolved config."""
    import mlflow

    from xentlab.tracking import mask_config

    params = dict(prepared.plan.params())
    params.update({f"data.{split}_size": str(n) for split, n in prepared.bundle.sizes().items()})
    params["data.num_classes"] = str(prepared.bundle.num_classes)
    if prepared.class_weights is not None:
        weights = [round(float(w), 6) for w in prepared.class_weights]
        params["weighting.class_weights"] = json.dumps(weights)
        mlflow.log_dict(
            {"class_names": prepared.bundle.class_names, "class_weights": weights}, "class_weights.json"
        )
    mlflow.log_params(params)
    mlflow.log_text(OmegaConf.to_yaml(mask_config(config)), "config.yaml")
    try:
        overrides = hydra.core.hydra_config.HydraConfig.get().overrides.task
        mlflow.log_text(OmegaConf.to_yaml(list(overrides)), "overrides.yaml")
    except ValueError:  # not launched through Hydra
        pass


def train_and_evaluate(
    prepared: Prepared, config: dict[str, Any], outbox=None, checkpoint_dir: Path | None = None
) -> tuple[dict[str, float], dict]:
    """Fits with validation, logs per-epoch metrics, evaluates on the test split and logs `test_*`.

    Tracking goes through `outbox` (xentlab.outbox); with None (non-chief workers of a multi-worker run)
    nothing goes to MLflow. With a
    checkpoint_dir, every completed epoch is backed up there (weights, optimizer state, epoch counter) and a
    restarted job continues from it; the folder is removed when training completes.
    """
    from xentlab.labels import steps_per_epoch
    from xentlab.resume import resumable_backup
    from xentlab.tracking import EpochLogger, StopOnNonFiniteLoss

    trainer = config["trainer"]
    callbacks = [StopOnNonFiniteLoss()]
    if outbox is not None:
        callbacks.append(EpochLogger(samples_per_epoch=len(prepared.bundle.x_train), outbox=outbox))
    if checkpoint_dir is not None:
        # After the logger: an epoch logged but not yet backed up is re-run on resume and not logged twice.
        callbacks.append(resumable_backup(str(checkpoint_dir)))
    history = prepared.model.fit(
        prepared.train_ds,
        validation_data=prepared.val_ds,
        epochs=trainer["epochs"],
        steps_per_epoch=steps_per_epoch(
            len(prepared.bundle.x_train), trainer["batch_size"], prepared.plan.drop_remainder
        ),
        shuffle=False,  # the training dataset reshuffles itself every epoch
        verbose=resolve_verbose(str(trainer["verbose"])),
        callbacks=callbacks,
    )
    test = prepared.model.evaluate(prepared.test_ds, return_dict=True, verbose=0)
    test_metrics = {f"test_{name}": float(test[name]) for name in CONTRACT_METRICS if name in test}
    if outbox is not None:
        outbox.log_metrics(test_metrics)
    print("test: " + "  ".join(f"{k}={v:.4f}" for k, v in test_metrics.items()), flush=True)
    # What a sweeper optimises: the final val_nll, on one scale for every loss (a focal or smoothed val_loss is
    # not comparable across variants); val_loss for a model compiled without the nll metric.
    objective = history.history.get("val_nll", history.history["val_loss"])[-1]
    return {"val_loss": float(history.history["val_loss"][-1]), "objective": float(objective),
            **test_metrics}, history.history


def log_evaluation(prepared: Prepared, config: dict[str, Any], history: dict[str, list[float]], outbox) -> None:
    """Plots and the per-class report on the test split; per-class recall as `test_recall_<class>` metrics."""
    import tempfile

    import numpy as np

    from xentlab.plots import write_evaluation

    outputs = np.asarray(prepared.model.predict(prepared.bundle.x_test, batch_size=256, verbose=0))
    with tempfile.TemporaryDirectory() as tmp:
        write_evaluation(
            Path(tmp), y=prepared.bundle.y_test, outputs=outputs, from_logits=prepared.from_logits,
            class_names=prepared.bundle.class_names, ignore_class=config["labels"]["ignore_class"],
            history=history, multi_head=config["model"]["name"] == "multi_head",
        )
        report = json.loads((Path(tmp) / "per_class.json").read_text())
        outbox.log_artifacts(tmp, "evaluation")
    if prepared.bundle.num_classes <= 12:
        recalls = {}
        for head, classes in report.items():
            suffix = "" if head == "all" else f"_{head}"
            recalls.update({f"test_recall_{name}{suffix}": v["recall"] for name, v in classes.items()})
        outbox.log_metrics({re.sub(r"[^\w\-. /]", "_", k): v for k, v in recalls.items()})


def log_generated_text(prepared: Prepared, config: dict[str, Any], outbox) -> None:
    """For language models: five streams sampled from the stateful copy, as `generated.txt`."""
    from xentlab.generate import generate

    model_cfg = config["model"]
    streams = generate(
        prepared.model, model_cfg["sample_prompt"], model_cfg["sample_length"], model_cfg["sample_temperature"],
        seed=config["trainer"]["seed"],
    )
    text = "\n\n".join(f"--- stream {i}\n{t}" for i, t in enumerate(streams))
    outbox.log_text(text, "generated.txt")
    print(text, flush=True)


def log_model(prepared: Prepared, outbox) -> None:
    """The trained model with an input/output signature and pinned requirements (no slow inference)."""
    import keras
    import numpy as np
    import tensorflow as tf
    from mlflow.models import infer_signature

    sample = prepared.bundle.x_val[:4]
    signature = infer_signature(sample, np.asarray(prepared.model.predict(sample, verbose=0)))
    outbox.log_keras_model(
        prepared.model, signature=signature,
        pip_requirements=[f"tensorflow=={tf.__version__}", f"keras=={keras.__version__}"],
    )


def job_dir() -> Path:
    """Hydra's folder for this job (outputs/runs/... or outputs/multirun/.../N); outside Hydra the launch dir."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return launch_dir()


def completed_epochs(checkpoint_dir: Path) -> int:
    """Epochs a BackupAndRestore folder holds (0 when there is none)."""
    meta = checkpoint_dir / "training_metadata.json"
    return int(json.loads(meta.read_text())["epoch"]) if meta.is_file() else 0


def run(cfg: DictConfig) -> float | None:
    """Trains one job described by `cfg`; returns the final val_nll, what sweepers minimise (None for a
    dry run)."""
    import shutil

    import mlflow
    from mlflow.tracking import MlflowClient

    from xentlab import resume
    from xentlab.store import ERROR_TAG, resolve_tracking_uri, setup_experiment
    from xentlab.strategy import is_chief
    from xentlab.tracking import flatten_params, tracked_run

    config = OmegaConf.to_container(cfg, resolve=True)
    if config["strategy"]["name"] == "multi_worker" and not is_chief():
        # Other workers train their share of every step but never create MLflow runs.
        results, _ = train_and_evaluate(prepare(config), config)
        return results["objective"]
    if config["trainer"]["dry_run"]:
        prepared = prepare(config)
        prepared.model.summary()
        print(f"dry run: config and data valid; splits {prepared.bundle.sizes()}; nothing trained or logged")
        return None
    if config["trainer"]["resume"] not in ("auto", "never"):
        raise ValueError(f"trainer.resume must be auto or never, got {config['trainer']['resume']!r}")

    tracking = config["tracking"]
    uri = resolve_tracking_uri(tracking["uri"], launch_dir())
    experiment_id = setup_experiment(uri, tracking["experiment"])
    params = flatten_params(config)
    key = resume.job_key(params)
    checkpoint_dir = launch_dir() / "outputs" / "checkpoints" / key
    client = MlflowClient(uri)
    decision = resume.decide(
        client, experiment_id, key, checkpoint_dir,
        resume=config["trainer"]["resume"], stale_after_s=config["trainer"]["stale_after_s"],
    )
    if decision.busy:
        raise RuntimeError(decision.busy)
    for run_id, reason in decision.stale:
        client.set_tag(run_id, ERROR_TAG, reason)
        client.set_terminated(run_id, "FAILED")
    if decision.resume_run_id is None and checkpoint_dir.exists():
        shutil.rmtree(checkpoint_dir)  # a fresh start must not pick up an old backup
    elif decision.resume_run_id is not None:
        if ERROR_TAG in client.get_run(decision.resume_run_id).data.tags:
            client.delete_tag(decision.resume_run_id, ERROR_TAG)  # it is running again
        print(f"resuming run {decision.resume_run_id} after epoch {completed_epochs(checkpoint_dir)}", flush=True)

    resume.install_sigterm_handler()
    sweep = sweep_job()
    if tracking["system_metrics"]:
        mlflow.set_system_metrics_sampling_interval(tracking["system_metrics_interval_s"])
    with tracked_run(
        experiment_id=experiment_id, run_name=run_name(config, sweep), params=params, job_dir=job_dir(),
        tags={**run_tags(config, sweep), resume.JOB_TAG: key, **resume.owner_tags()},
        run_id=decision.resume_run_id, system_metrics=tracking["system_metrics"],
    ) as outbox:
        prepared = prepare(config, initial_epoch=completed_epochs(checkpoint_dir))
        log_prepared(prepared, config)
        results, history = train_and_evaluate(prepared, config, outbox, checkpoint_dir=checkpoint_dir)
        if tracking["log_plots"]:
            log_evaluation(prepared, config, history, outbox)
        if config["model"]["name"] == "char_lstm":
            log_generated_text(prepared, config, outbox)
        if tracking["log_model"]:
            log_model(prepared, outbox)
    if outbox.pending:
        print(f"warning: the tracking server did not come back; {outbox.pending} records of run {outbox.run_id} "
              f"are kept in {outbox.folder}: send them with `xentlab-sync {outbox.folder.parent}`",
              file=sys.stderr, flush=True)
    return results["objective"]


if __name__ == "__main__":
    main()

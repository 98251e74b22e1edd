"""`xentlab-train`: the composition root. It reads the whole config, calls the builders in order and hands each
step to the module that owns it; `run()` is the list of those steps."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from xentlab.cli.configs import CONFIG_MODULE
from xentlab.config.schema import register_configs


def main() -> None:
    """Console entry point: filter TensorFlow's native start-up noise, register the schemas, hand over to Hydra."""
    import sys

    from xentlab.cli.console import quiet_native_logs, stopped_in_one_line

    quiet_native_logs()
    register_configs()
    with stopped_in_one_line(sys.argv[1:]):
        _hydra_entry()


@hydra.main(version_base="1.3", config_path=f"pkg://{CONFIG_MODULE}", config_name="train")  # + --config-dir
def _hydra_entry(cfg: DictConfig) -> float | None:
    from xentlab.cli.console import reported_errors

    job = JobContext.from_hydra()
    objective = float("nan")  # what a failed sweep job returns: the sweep goes on (a sweeper records the failure)
    with reported_errors(debug=bool(cfg.trainer.debug), multirun=job.sweep is not None or job.multirun,
                         run_ref=job.run_ref, checkpoint=job.checkpoint) as failure:
        objective = run(cfg, job)
    if job.sweep is not None:
        from xentlab.tracking.sweeps import write_outcome

        status = "failed" if failure.error else job.outcome or "trained"
        write_outcome(job.job_dir, job.sweep, status=status, run_ref=job.run_ref, error=failure.error)
    return objective


@dataclass
class JobContext:
    """What the runner needs from Hydra, read once at the entry point so `run()` works without Hydra's globals.

    Attributes:
        launch_dir: where the command was started (Hydra may change the working directory).
        job_dir: Hydra's folder for this job (outputs/runs/... or outputs/multirun/.../N).
        overrides: the command-line overrides of this job.
        sweep: for a job of a multirun sweep, its parent run, sweep id and run name; else None.
        multirun: launched with -m (a failing job must not stop the sweep).
        run_ref: filled with "<run name> (<run id>)" once the MLflow run exists, for error messages.
        checkpoint: filled with the job's checkpoint folder once it is known, for the line an interrupt prints.
        outcome: "reused" when a sweep job kept its FINISHED run instead of training.
    """

    launch_dir: Path
    job_dir: Path
    overrides: list[str] = field(default_factory=list)
    sweep: dict[str, Any] | None = None
    multirun: bool = False
    run_ref: list[str] = field(default_factory=list)
    checkpoint: list[Path] = field(default_factory=list)
    outcome: str | None = None

    @classmethod
    def from_hydra(cls) -> JobContext:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        from xentlab.cli.sweep import sweep_job

        hc = HydraConfig.get()
        multirun = hc.mode == RunMode.MULTIRUN
        launch_dir = Path(hydra.utils.get_original_cwd())
        job_dir = Path(hc.runtime.output_dir)
        if multirun:  # a relative sweep folder is the launch folder's: a Ray job runs in its raylet's folder
            job_dir = launch_dir / hc.sweep.dir / str(hc.sweep.subdir)  # where the sweep looks for its outcome
            job_dir.mkdir(parents=True, exist_ok=True)
        return cls(
            launch_dir=launch_dir, job_dir=job_dir, overrides=list(hc.overrides.task), multirun=multirun,
            sweep=sweep_job(launch_dir / hc.sweep.dir, list(hc.overrides.task), hc.job.num) if multirun else None,
        )

    @classmethod
    def outside_hydra(cls, overrides: list[str] | None = None) -> JobContext:
        """For `run()` called from Python: everything relative to the working directory."""
        return cls(launch_dir=Path.cwd(), job_dir=Path.cwd(), overrides=list(overrides or []))


def run(cfg: DictConfig, job: JobContext | None = None) -> float | None:
    """Trains one job described by `cfg`; returns the final val_nll, what sweepers minimise (None for a dry run)."""
    from xentlab.config.checks import check_tracking
    from xentlab.config.schema import job_config
    from xentlab.data.digest import data_params
    from xentlab.runtime.loops import logs_here
    from xentlab.tracking import resume, sweeps
    from xentlab.tracking import runs as tracking

    job = job or JobContext.outside_hydra()
    config = job_config(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
    if config["trainer"]["dry_run"]:
        return dry_run(config, job.launch_dir)
    if not logs_here(config["strategy"]["name"]):  # a multi-worker run's other workers train and never log
        return fit_and_evaluate(prepare(config, launch_dir=job.launch_dir), config)[0]["objective"]
    check_tracking(config["tracking"])
    store = tracking.open_store(config["tracking"], job.launch_dir)
    params = tracking.flatten_params(config) | data_params(config["data"], job.launch_dir)  # the data is the job's
    if job.sweep is None:
        return train(config, job, store, params, resume.plan_job(store, params, config["trainer"], job.launch_dir))
    key = resume.job_key(params, store_uri=store.uri, experiment=store.experiment)
    checkpoints = resume.checkpoint_root(job.launch_dir, config["trainer"])
    with sweeps.job_lock(checkpoints, key, job.sweep["name"]):  # one process per job, however many commands
        plan = sweeps.plan_sweep_job(store, job.sweep, params, config["trainer"], job.launch_dir)
        if isinstance(plan, sweeps.Reused):
            job.outcome = "reused"
            job.run_ref[:] = [f"{plan.run.info.run_name} ({plan.run.info.run_id})"]
            return plan.objective
        return train(config, job, store, params, plan)


def train(config: dict[str, Any], job: JobContext, store, params: dict[str, str], plan) -> float:
    """Trains, evaluates and logs one job into the run `plan` (tracking.resume) says: new, or resumed."""
    from xentlab.cli.console import headline, warn_at_chance
    from xentlab.tracking import artifacts, resume, sweeps
    from xentlab.tracking import runs as tracking
    from xentlab.tracking.naming import job_run_name

    job.checkpoint[:] = [plan.checkpoint_dir]
    with tracking.tracked_run(
        store, run_name=job_run_name(config, job.sweep), params=params, job_dir=job.job_dir, run_id=plan.run_id,
        tags={**tracking.run_tags(config["tracking"], job.sweep), **resume.job_tags(plan.key),
              **sweeps.child_tags(job.sweep)},
        system_metrics=config["tracking"]["system_metrics"], run_ref=job.run_ref,
    ) as outbox:
        if job.sweep is not None:  # the child this run replaces (failed, killed, or of a changed config) steps aside
            sweeps.supersede(store.client, store.experiment_id, job.sweep, plan.key, outbox.run_id)
        prepared = prepare(config, initial_epoch=plan.initial_epoch, launch_dir=job.launch_dir)
        run_name = job_run_name(config, job.sweep, prepared.model_name)  # the plan names model=auto's model
        job.run_ref[:] = [f"{run_name} ({outbox.run_id})"]
        artifacts.log_inputs(outbox, {**prepared.facts(), "run_name": run_name}, config, job.overrides)
        results, history = fit_and_evaluate(prepared, config, outbox, plan)
        warn_at_chance(history, prepared.bundle.num_classes, outbox, list(prepared.plan.warnings))
        log_outputs(prepared, config, history, outbox)
    resume.finish_job(plan)
    tracking.print_summary(store, outbox, headline(results), job.run_ref)
    return results["objective"]


@dataclass
class Prepared:
    """Everything built before training: the plan, the hardware and its loop, the checked data, datasets, the
    compiled model."""

    plan: Any  # xentlab.config.preflight.Plan
    hardware: Any  # xentlab.runtime.strategy.Hardware
    loop: Any  # xentlab.runtime.loops.Loop
    bundle: Any
    train_ds: Any
    val_ds: Any
    test_ds: Any
    model: Any

    @property
    def labels(self):
        """The run's LabelContract (xentlab.core.targets)."""
        return self.plan.labels

    @property
    def from_logits(self) -> bool:
        return self.plan.labels.from_logits

    @property
    def model_name(self) -> str:
        return self.plan.model

    def evaluation(self):
        """What evaluating the trained model reads (xentlab.core.evaluation)."""
        from xentlab.core.evaluation import Evaluation
        from xentlab.metric_table import LANGUAGE_MODEL

        return Evaluation(self.model, self.bundle, self.labels, self.loop,
                          generates_text=self.task == LANGUAGE_MODEL)  # bits per character too

    @property
    def task(self) -> str:
        """The metric table's task: a language model (a sequence model over a vocabulary) or a classifier."""
        return self.plan.task

    def facts(self) -> dict[str, Any]:
        """What the run logs about its inputs before training (tracking.artifacts.log_inputs)."""
        return {"hardware": self.hardware.params() | self.plan.hardware.params(), "bundle": self.bundle,
                "class_weights": self.plan.class_weights, "model": self.plan.model,
                "warnings": list(self.plan.warnings)}


def prepare(config: dict[str, Any], initial_epoch: int = 0, launch_dir: Path | None = None) -> Prepared:
    """Validates in one pass (the pre-flight plan), then builds from the plan: datasets, the model in scope.

    `initial_epoch` > 0 when resuming: the training set then starts at that epoch's shuffle order. A relative
    data.path is read from `launch_dir` (default: the working directory), as a relative tracking.uri is.
    """
    from xentlab.config.preflight import preflight
    from xentlab.config.schema import job_config
    from xentlab.runtime.strategy import set_precision

    config = job_config(config)
    ready = preflight(config, launch_dir)  # every check; nothing below checks again
    plan, bundle = ready.plan, ready.bundle
    set_precision(plan.hardware.precision)
    train_ds, val_ds, test_ds = build_datasets(plan, bundle, config, initial_epoch)
    with ready.hardware.strategy.scope():
        model = build_compiled_model(plan, bundle, config)
    return Prepared(plan, ready.hardware, ready.loop, bundle, train_ds, val_ds, test_ds, model)


def build_datasets(plan, bundle, config: dict[str, Any], initial_epoch: int = 0) -> tuple[Any, Any, Any]:
    """The training, validation and test tf.data pipelines; only the training one is weighted and shuffled."""
    from xentlab.core.pipeline import make_dataset

    trainer = config["trainer"]
    common = {"batch_size": trainer["batch_size"], "labels": plan.labels,
              "drop_remainder": plan.hardware.drop_remainder, "decode": bundle.decode}
    train_ds = make_dataset(
        bundle.x_train, bundle.y_train, class_weights=plan.class_weights,
        normalize=config["weighting"]["normalize"], shuffle=True, shuffle_buffer=trainer["shuffle_buffer"],
        seed=trainer["seed"], epochs=(initial_epoch, max(trainer["epochs"], initial_epoch)), **common,
    )
    # Validation and test losses stay unweighted, so variants with different weightings compare on one scale.
    val_ds = make_dataset(bundle.x_val, bundle.y_val, **common)
    return train_ds, val_ds, make_dataset(bundle.x_test, bundle.y_test, **common)


def build_compiled_model(plan, bundle, config: dict[str, Any]):
    """The plan's model with its head, compiled with the optimizer, loss and metrics (inside the strategy scope)."""
    from xentlab.core.losses import build_loss_from_config
    from xentlab.core.metric_set import build_run_metrics
    from xentlab.core.models import build_model
    from xentlab.core.optimizers import build_optimizer

    data_facts = {"vocab_size": bundle.meta.get("vocab_size", bundle.num_classes)}
    if bundle.y_train.ndim == 2:
        data_facts["num_heads"] = bundle.y_train.shape[1]
    model = build_model(plan.model, input_shape=bundle.input_shape, head=plan.head, **data_facts, **plan.arch)
    model.compile(
        optimizer=build_optimizer(**config["optimizer"]),
        loss=build_loss_from_config({**config["loss"], "name": plan.loss_kind}, plan.labels,
                                    class_counts=plan.class_counts.tolist()),
        metrics=build_run_metrics(plan.labels, shot_groups=bundle.meta.get("shot_groups"),
                                  task=plan.task,
                                  extra=config["metrics"]["extra"]),
        jit_compile=plan.hardware.jit_compile,
        steps_per_execution=plan.hardware.steps_per_execution,
    )
    return model


_SUMMARIES_SHOWN: set[str] = set()


def dry_run(config: dict[str, Any], launch_dir: Path | None = None) -> None:
    """Validates config and data and builds the model; trains and logs nothing."""
    prepared = prepare(config, launch_dir=launch_dir)
    chunks: list[str] = []
    prepared.model.summary(print_fn=lambda text, line_break=True: chunks.append(text + "\n" * line_break))
    summary = "".join(chunks)
    print(summary if summary not in _SUMMARIES_SHOWN else f"model {prepared.model_name}: summary as above\n", end="")
    _SUMMARIES_SHOWN.add(summary)  # the jobs of a dry-run sweep in one process print each model once
    print(f"dry run: config and data valid; model {prepared.model_name}; splits {prepared.bundle.sizes()}; "
          f"nothing trained or logged")


def fit_callbacks(prepared: Prepared, config: dict[str, Any], outbox=None, plan=None) -> tuple[list, int]:
    """The fit's callbacks (stop on a non-finite loss, the epoch logger, the checkpoint) and its first epoch: 0, or
    the epoch of the job plan's checkpoint unit, restored into the model here."""
    from xentlab.metric_table import LANGUAGE_MODEL
    from xentlab.tracking.resume import epoch_checkpoint, restore_unit
    from xentlab.tracking.runs import EpochLogger, StopOnNonFiniteLoss

    trainer = config["trainer"]
    callbacks, logger = [StopOnNonFiniteLoss(from_logits=prepared.from_logits)], None
    if outbox is not None:
        logger = EpochLogger(samples_per_epoch=len(prepared.bundle.x_train), outbox=outbox,
                             language_model=prepared.task == LANGUAGE_MODEL,
                             asynchronous=config["tracking"]["async_logging"])
        callbacks.append(logger)
    prepared.loop.prepare(prepared.model, prepared.train_ds)
    if plan is None:
        return callbacks, 0
    # After the logger: an epoch logged but not yet saved is re-run on resume and not logged twice; the logger
    # settles its asynchronous records before each unit.
    callbacks.append(epoch_checkpoint(plan.checkpoint_dir, every=trainer["checkpoint_every"],
                                      last_epoch=trainer["epochs"], before_save=logger and logger.settle))
    if plan.unit is None:
        return callbacks, 0
    restore_unit(prepared.model, plan.unit)
    return callbacks, plan.unit.epoch


def fit_and_evaluate(prepared: Prepared, config: dict[str, Any], outbox=None, plan=None) -> tuple[dict, dict]:
    """Fits with validation, logs per-epoch metrics, evaluates on the test split and logs `test_*`.

    Tracking goes through `outbox` (xentlab.tracking.outbox); with None (non-chief workers of a multi-worker run)
    nothing goes to MLflow. With a job `plan` (xentlab.tracking.resume), training continues from its checkpoint unit and
    saves one per completed epoch; a job whose training had completed goes straight to evaluation.
    """
    from xentlab.choices import Verbosity
    from xentlab.core.pipeline import steps_per_epoch
    from xentlab.metric_table import objective
    from xentlab.tracking.runs import logged_history

    trainer = config["trainer"]
    callbacks, initial_epoch = fit_callbacks(prepared, config, outbox, plan)
    history = prepared.loop.fit(
        prepared.model, prepared.train_ds, prepared.val_ds, epochs=trainer["epochs"], initial_epoch=initial_epoch,
        steps_per_epoch=steps_per_epoch(len(prepared.bundle.x_train), trainer["batch_size"],
                                        prepared.plan.hardware.drop_remainder),
        verbose=Verbosity(trainer["verbose"]).keras_verbose(os.isatty(1)), callbacks=callbacks,
        validate_every=trainer["validate_every"],
    )
    if initial_epoch > 0 and outbox is not None:
        history = logged_history(outbox.run_id) or history  # every epoch, those before the interruption too
    test_metrics = evaluate_test(prepared, config, outbox)
    # What a sweeper optimises (xentlab.metric_table.objective). A multi-worker job resumed after its training had
    # completed: only the chief has a history (logged).
    last = {key: values[-1] for key, values in history.items()} or {"val_loss": float("nan")}
    return {"val_loss": float(last["val_loss"]), "objective": objective(last), **test_metrics}, history


def evaluate_test(prepared: Prepared, config: dict[str, Any], outbox=None) -> dict[str, float]:
    """The `test_*` metrics (xentlab.core.evaluation), logged through `outbox` when there is one. Where post-hoc
    adjustment cannot apply, it says why once: on stderr and as the run tag xentlab.posthoc."""
    import sys

    from xentlab.core.evaluation import evaluate_test as evaluate
    from xentlab.tracking.store import POSTHOC_TAG

    calibration = config["calibration"]
    test_metrics, posthoc_skipped = evaluate(
        prepared.evaluation(), prepared.test_ds, temperature=calibration["method"] == "temperature",
        posthoc_tau=calibration["posthoc_tau"], posthoc_tune=calibration["posthoc_tune"],
        shot_thresholds=config["data"]["shot_thresholds"],
    )
    if posthoc_skipped is not None:
        if posthoc_skipped.loud:
            print(f"note: {posthoc_skipped.reason}", file=sys.stderr, flush=True)
        if outbox is not None:
            outbox.set_tag(POSTHOC_TAG, posthoc_skipped.reason)
    if outbox is not None:
        from xentlab.tracking.metric_log import log_defined

        log_defined(outbox, test_metrics)  # an undefined metric (a class absent from test) is said, not logged
    return test_metrics


def log_outputs(prepared: Prepared, config: dict[str, Any], history: dict[str, list[float]], outbox) -> None:
    """After training: evaluation figures and per-class metrics, generated text, the model, as configured."""
    from xentlab.core.models import capabilities
    from xentlab.tracking import artifacts

    able = capabilities(prepared.model_name)
    if config["tracking"]["log_plots"]:
        import tempfile

        from xentlab.core.figures import write_evaluation

        bundle = prepared.bundle
        with tempfile.TemporaryDirectory() as tmp:
            write_evaluation(
                Path(tmp), y=bundle.y_test, outputs=prepared.evaluation().predict("test"), labels=prepared.labels,
                class_names=bundle.class_names, history=history,
            )
            artifacts.log_evaluation(outbox, Path(tmp), bundle.num_classes)
    if able.generates_text:
        artifacts.log_generated_text(outbox, prepared.model, **prepared.plan.sampling, from_logits=prepared.from_logits,
                                    seed=config["trainer"]["seed"])
    if config["tracking"]["log_model"]:
        artifacts.log_model(outbox, prepared.model, prepared.bundle.features("val", 4))


if __name__ == "__main__":
    main()

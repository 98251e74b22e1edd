"""Dataclass schemas for every config group, registered in Hydra's ConfigStore.

A mistyped key or a wrongly typed value fails at compose time, before TensorFlow is imported.
Each YAML option in `conf/<group>/` starts from one of these schemas (`defaults: [base_<name>]`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from xentlab.choices import (
    CalibrationMethod,
    ColorMode,
    Encoding,
    Head,
    HeadLayout,
    Normalize,
    Precision,
    Reduction,
    Resume,
    StrategyName,
    Verbosity,
    WeightingScheme,
)


# ---------------------------------------------------------------------------------------------------- data
@dataclass
class DataConfig:
    name: str = MISSING
    path: Optional[str] = None  # local file or folder for file-based data (Keras cache used when null)
    limit: Optional[int] = None  # cap on training examples; null = all
    val_fraction: float = 0.15  # share of the labelled pool held out for validation
    test_fraction: float = 0.15  # used only where the source has no official test split
    split_seed: int = 0  # fixed, so every variant sees the same split
    long_tail_ratio: float = 1.0  # > 1: training split subsampled to n_c = n_max * R^(-c/(K-1)) (Cao et al. 2019)
    na_fraction: float = 0.0  # share of labels made n/a (-1) in every split: mask with labels.ignore_class=-1
    drop_na: bool = False  # drop the n/a examples instead of masking them (one label per example only)
    folds: Optional[int] = None  # K: stratified K-fold over training + validation (the test split held out once)
    fold: int = 0  # which of the K folds validates (sweep data.fold=range(0,K)); 0 without folds
    shot_thresholds: list[int] = field(default_factory=lambda: [20, 100])  # few < 20 <= medium <= 100 < many
    _target_: Optional[str] = None  # data=custom: dotted path of your own loader (see xentlab.data.custom)


@dataclass
class TextDataConfig(DataConfig):
    seq_len: int = 100  # window length in bytes; targets are the window shifted by one
    stride: int = 100  # step between window starts (== seq_len: non-overlapping windows)


@dataclass
class ImbalancedDataConfig(DataConfig):
    class_counts: list[int] = field(default_factory=lambda: [198, 436, 710, 272])  # the seed's A/B/C/D
    num_features: int = 16
    separation: float = 0.4  # spread of class centres in within-class stds: ~71% accuracy, minority A at ~40% recall


@dataclass
class PeriodsDataConfig(DataConfig):
    num_examples: int = 2000
    num_periods: int = 3
    num_categories: int = 6
    tokens_per_period: int = 20
    vocab_size: int = 300
    noise: float = 0.1  # share of labels redrawn at random, so the task is learnable but not trivial


@dataclass
class ImageFolderDataConfig(DataConfig):
    image_size: list[int] = field(default_factory=lambda: [64, 64])  # [height, width]: every image is resized
    color_mode: ColorMode = ColorMode.rgb


@dataclass
class TableDataConfig(DataConfig):
    label: Optional[str] = None  # the label column (integer ids or class names); required
    features: Optional[list[str]] = None  # feature columns; null = every column but the label and split columns
    split_column: Optional[str] = None  # a column of train/val/test per row; null = split by data.split_seed
    standardize: bool = True  # centre and scale features by the training split's mean and std
    delimiter: str = ","  # csv only


@dataclass
class NpzDataConfig(DataConfig):
    scale: float = 1.0  # features are multiplied by it (e.g. 0.00392 for 0..255 pixels); 1.0 leaves them as saved


@dataclass
class CustomDataConfig(DataConfig):
    options: Any = None  # extra keyword arguments for the loader: data.options={n: 100} (Any: new keys allowed)


# ---------------------------------------------------------------------------------------------------- model
@dataclass
class ModelConfig:
    name: str = MISSING
    head: Head = Head.auto  # auto: fits the loss; softmax2 / sigmoid1 for 2-class data (see models.head_spec)


@dataclass
class AutoModelConfig(ModelConfig):
    """model=auto: the seed CNN for images, the MLP for flat features, the char LSTM for text, the multi-head
    model for several labels per example, each with its own defaults (pick model=NAME to change its knobs)."""


@dataclass
class MnistCnnConfig(ModelConfig):
    conv1_filters: int = 32
    conv2_filters: int = 64
    dense_units: int = 128
    dropout_conv: float = 0.25
    dropout_dense: float = 0.5


@dataclass
class MlpConfig(ModelConfig):
    hidden_units: list[int] = field(default_factory=lambda: [256, 128])
    dropout: float = 0.2


@dataclass
class CharLstmConfig(ModelConfig):
    embedding_dim: int = 512
    lstm_units: int = 512
    num_layers: int = 2
    sample_prompt: str = "ROMEO:"  # generation after training: five streams from this prompt
    sample_length: int = 300  # bytes per stream
    sample_temperature: float = 0.8


@dataclass
class MultiHeadConfig(ModelConfig):
    embedding_dim: int = 32
    hidden_units: int = 64
    heads: HeadLayout = HeadLayout.shared  # shared: one Dense(H*K) reshaped to (H, K); separate: one Dense(K) per head


@dataclass
class ResNetConfig(ModelConfig):
    depth: int = 20  # 6n+2 (He et al. 2016 §4.2): 20 (0.27 M parameters), 32 (0.46 M, long-tail papers'), 44, 56, 110
    width: int = 16  # filters of the first stage; the second and third have 2x and 4x
    weight_decay: float = 1e-4  # the paper's, as an L2 penalty of weight_decay / 2 on the conv kernels; 0: none


@dataclass
class KerasAppConfig(ModelConfig):
    arch: str = "MobileNetV3Small"  # any keras.applications model: ResNet50, EfficientNetB0, ConvNeXtTiny, ...
    weights: Optional[str] = None  # null: from scratch; a local weights file (no top); never downloaded at run time
    freeze_backbone: bool = False  # true: only the head trains (the backbone's batch norm stays in inference mode)
    image_size: Optional[list[int]] = None  # [height, width] inputs are resized to; null: theirs, at least 32 (75 for
    # InceptionV3, 71 for Xception)


@dataclass
class CustomModelConfig(ModelConfig):
    _target_: Optional[str] = None  # dotted path of your function (see xentlab.core.user_model); required
    full_model: bool = False  # false: it returns a backbone, xentlab adds the head; true: its own head, checked
    options: Any = None  # extra keyword arguments for it: model.options={units: 64} (Any: new keys allowed)


# ---------------------------------------------------------------------------------------------------- loss
@dataclass
class LossConfig:
    name: str = MISSING
    from_logits: bool = False  # true: the model head is linear and the loss applies (log-)softmax itself
    label_smoothing: float = 0.0
    reduction: Reduction = Reduction.sum_over_batch_size
    _target_: Optional[str] = None  # a user's own loss: dotted path to any Keras-compatible callable
    # What a tuned sweep (+sweep=tuned) searches for this loss: {key: "uniform(lo, hi)" | "loguniform(lo, hi)" |
    # "int(lo, hi)" | "choice(a, b, ...)"}; each option's yaml declares its own. Never reaches the loss.
    search: dict[str, str] = field(default_factory=dict)


@dataclass
class FocalLossConfig(LossConfig):
    gamma: float = 2.0  # = core.losses.arguments.FOCAL_GAMMA (no TensorFlow here; a test checks they agree)
    alpha: Optional[Any] = None  # null, a scalar, or one value per class


@dataclass
class WeightedBinaryLossConfig(LossConfig):
    pos_weight: Any = 1.0  # scalar or one value per label


@dataclass
class LogitAdjustedLossConfig(LossConfig):
    from_logits: bool = True  # required: the log-prior shift is added to the logits (a linear head)
    tau: float = 1.0  # scale of the shift tau * log(prior): 1 is the balanced softmax, 0 plain cross-entropy


@dataclass
class Poly1LossConfig(LossConfig):
    epsilon: float = 1.0  # weight of the extra (1 - p_true) term (Leng et al. 2022); 0 is cross-entropy, >= -1


# ---------------------------------------------------------------------------------------------------- labels
@dataclass
class LabelsConfig:
    encoding: Encoding = Encoding.sparse  # sparse: integer ids; one_hot: made per batch inside tf.data
    ignore_class: Optional[int] = None  # the "n/a" label: zero loss and gradient, excluded from metrics


# ---------------------------------------------------------------------------------------------------- weighting
@dataclass
class WeightingConfig:
    scheme: WeightingScheme = WeightingScheme.none
    normalize: Normalize = Normalize.element  # element: by element count (Keras); weight_sum: by sum of weights
    beta: float = 0.999  # effective_number only (Cui et al. 2019)
    weights: Optional[list[float]] = None  # custom only: one weight per class


# ---------------------------------------------------------------------------------------------------- strategy
@dataclass
class StrategyConfig:
    name: StrategyName = MISSING
    # The policy: auto / null take the hardware's value from runtime.strategy.HARDWARE_POLICY, the one table.
    precision: Precision = Precision.auto  # the output head stays float32 under mixed precision
    jit_compile: Optional[bool] = None  # XLA
    steps_per_execution: Optional[int] = None  # train steps per tf.function call
    drop_remainder: Optional[bool] = None  # static batch shapes, needed on TPU
    tpu: Optional[str] = None  # TPU address for TPUClusterResolver ("" or "local" on a TPU VM)
    num_devices: Optional[int] = None  # multi_gpu: how many GPUs (null = all)
    tpu_timeout_s: float = 30.0  # tpu: give up on a remote TPU after this long
    logical_devices: int = 2  # multi_cpu: logical CPU devices for MirroredStrategy (testing without GPUs)


# ---------------------------------------------------------------------------------------------------- optimizer
@dataclass
class OptimizerConfig:
    name: str = MISSING  # adadelta, rmsprop, adam, sgd
    learning_rate: float = 0.001
    momentum: float = 0.0  # sgd and rmsprop
    clipnorm: Optional[float] = None
    search: dict[str, str] = field(default_factory=dict)  # a tuned sweep's space for this optimizer (see LossConfig)


# ---------------------------------------------------------------------------------------------------- trainer
@dataclass
class TrainerConfig:
    epochs: int = 12
    batch_size: int = 128
    seed: int = 0
    deterministic: bool = False  # TF op determinism + fixed seeds: same numbers on every run
    dry_run: bool = False  # compose, validate config and data, build the model, print a summary; no training
    resume: Resume = Resume.auto  # auto: continue an interrupted run of the same job from its last epoch
    stale_after_s: float = 300.0  # a RUNNING run without heartbeat for this long (other host) is stale
    checkpoint_dir: Optional[str] = None  # null: outputs/checkpoints in the launch folder (relative: from there)
    verbose: Verbosity = Verbosity.auto  # auto: a bar on a terminal, one line per epoch otherwise; silent, bar, line
    debug: bool = False  # show the full traceback of expected errors (bad config, data, hardware, store)
    shuffle_buffer: Optional[int] = None  # null = the whole training split
    # Epochs between validation passes and between checkpoint units (the last epoch always has both): for long
    # runs of tiny epochs, where validating and saving cost more than training. A kill loses at most this many.
    validate_every: int = 1
    checkpoint_every: int = 1


# ---------------------------------------------------------------------------------------------------- tracking
@dataclass
class TrackingConfig:
    uri: Optional[str] = None  # null: $MLFLOW_TRACKING_URI, else sqlite:///<repo>/outputs/mlflow.db
    experiment: str = "xentlab"
    run_name: Optional[str] = None  # null: <model>/<loss>/<labels>/<weighting> (in sweeps: the varying overrides)
    parent_run_id: Optional[str] = None  # nest this run under another; sweeps set it through <sweep dir>/sweep.json
    log_model: bool = True
    log_plots: bool = True
    # source/uncommitted.diff: the project's uncommitted changes, secrets masked, at most 256 kB (false: no diff)
    log_diff: bool = True
    system_metrics: bool = True  # MLflow's system/* metrics (CPU, memory; GPU when present) while training
    system_metrics_interval_s: float = 10.0
    async_logging: bool = True  # epoch metrics through MLflow's async logging, flushed before each checkpoint
    tags: dict[str, Any] = field(default_factory=dict)  # extra run tags (+tracking.tags.team=vision); secrets masked


# ---------------------------------------------------------------------------------------------------- calibration
@dataclass
class CalibrationConfig:
    method: CalibrationMethod = CalibrationMethod.none
    # Post-hoc logit adjustment (Menon et al. 2021), every run: test_<metric>_posthoc of log p - tau * log prior.
    posthoc_tau: Optional[float] = 1.0  # 1 divides the training prior out; 0 is the model as it is; null: off
    posthoc_tune: bool = False  # true: tau chosen on validation balanced accuracy over 0, 0.25, ..., 2 (logged)


# ---------------------------------------------------------------------------------------------------- sweep
@dataclass
class TuningConfig:
    trials: int = 0  # > 0: a tuned sweep, this many trials per variant (+sweep=tuned sets it)
    sampler: str = "tpe"  # tpe or random: Optuna's TPESampler / RandomSampler, the same for every variant
    seed: int = 0  # the sampler's seed, the same for every variant
    seeds: list[int] = field(default_factory=lambda: [1000])  # trainer.seed of the trials; disjoint from evaluation


@dataclass
class SweepConfig:
    """How a multirun chooses its jobs (read by the sweep, never by a job: not a param of any run)."""

    tuning: TuningConfig = field(default_factory=TuningConfig)
    until_decided: bool = False  # add seeds per open comparison under alpha spending (report.sequential)
    seed_batch: int = 3  # seeds a look adds to each open comparison
    max_seeds: int = 12  # a comparison stops here decided or not; its futility rule plans within it
    alpha: float = 0.05  # family-wise, over the variants compared with the baseline
    stage: Optional[str] = None  # set by a tuned sweep on its jobs: tuning or evaluation
    trial: Optional[int] = None  # set by a tuned sweep on its trials


# ---------------------------------------------------------------------------------------------------- metrics
@dataclass
class MetricsConfig:
    # Streaming metrics beyond the task's own set (xentlab.metric_table): a language model computes nll (bpc) and
    # next-token accuracy; metrics.extra=[auc,ece] adds those by name. A classifier computes them all already.
    extra: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------------- root
@dataclass
class TrainConfig:
    data: Any = MISSING
    model: Any = MISSING
    loss: Any = MISSING
    labels: Any = MISSING
    weighting: Any = MISSING
    strategy: Any = MISSING
    optimizer: Any = MISSING
    trainer: Any = MISSING
    tracking: Any = MISSING
    calibration: Any = MISSING
    sweep: SweepConfig = field(default_factory=SweepConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)


def job_config(config: dict[str, Any]) -> dict[str, Any]:
    """A resolved config as a job uses it: without the sweep's own settings (`sweep`, every group's `search`), which
    choose jobs but change no result, so they are neither params nor part of a job's identity."""
    out = {k: v for k, v in config.items() if k != "sweep"}
    for group, node in out.items():
        if isinstance(node, dict) and "search" in node:
            out[group] = {k: v for k, v in node.items() if k != "search"}
    return out


SCHEMAS: dict[str, dict[str, type]] = {
    "data": {"base_data": DataConfig, "base_text": TextDataConfig, "base_imbalanced": ImbalancedDataConfig,
             "base_periods": PeriodsDataConfig, "base_image_folder": ImageFolderDataConfig,
             "base_table": TableDataConfig, "base_npz": NpzDataConfig, "base_custom": CustomDataConfig},
    "model": {
        "base_auto": AutoModelConfig,
        "base_mnist_cnn": MnistCnnConfig,
        "base_mlp": MlpConfig,
        "base_char_lstm": CharLstmConfig,
        "base_multi_head": MultiHeadConfig,
        "base_resnet": ResNetConfig,
        "base_keras_app": KerasAppConfig,
        "base_custom": CustomModelConfig,
    },
    "loss": {
        "base_loss": LossConfig,
        "base_focal": FocalLossConfig,
        "base_weighted_binary": WeightedBinaryLossConfig,
        "base_logit_adjusted": LogitAdjustedLossConfig,
        "base_poly1": Poly1LossConfig,
    },
    "labels": {"base_labels": LabelsConfig},
    "weighting": {"base_weighting": WeightingConfig},
    "strategy": {"base_strategy": StrategyConfig},
    "optimizer": {"base_optimizer": OptimizerConfig},
    "trainer": {"base_trainer": TrainerConfig},
    "tracking": {"base_tracking": TrackingConfig},
    "calibration": {"base_calibration": CalibrationConfig},
}


def register_configs() -> None:
    """Registers the root schema and one schema per group option base in Hydra's ConfigStore."""
    cs = ConfigStore.instance()
    cs.store(name="base_train", node=TrainConfig)
    for group, nodes in SCHEMAS.items():
        for name, node in nodes.items():
            cs.store(group=group, name=name, node=node)
    register_sweeper()


def register_sweeper() -> None:
    """xentlab's sweeper, the default `hydra/sweeper` (its config node and its class). Hydra finds plugins by scanning
    the `hydra_plugins` folders on sys.path, which an editable install's import hook hides from it; registering the
    class here works from a checkout and from a wheel alike."""
    from hydra.core.plugins import Plugins

    plugins = Plugins.instance()  # first: the scan runs Hydra's own plugin modules again, BasicSweeper among them
    from hydra_plugins.xentlab_sweeper.xentlab_sweeper import XentlabSweeper  # stores hydra/sweeper/xentlab

    plugins.register(XentlabSweeper)

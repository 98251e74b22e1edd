"""The closed choices of the config, one Enum each: the schemas type their fields with these, so Hydra refuses a
wrong value at compose time and lists the allowed ones; the library code compares against the same members.

Plain Python (no Hydra, no TensorFlow): every module can import it. Each Enum is also a `str`, so a member equals
its value (`Encoding.one_hot == "one_hot"`) and code called from a plain script can pass strings.
"""

from __future__ import annotations

from enum import StrEnum

from xentlab.errors import ConfigError


class Choice(StrEnum):
    """A config choice whose member names are its values (str() of a member is its value)."""

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(m.value for m in cls)

    @classmethod
    def parse(cls, value: str | Choice, key: str) -> Choice:
        """The member for `value`, or a `ConfigError` (a ValueError) naming `key`, the value and the allowed ones."""
        try:
            return cls(str(value))
        except ValueError:
            raise ConfigError(f"{key} must be one of {list(cls.names())}, got {value!r}") from None


class Encoding(Choice):
    """labels.encoding: integer ids, or their one-hot view made per batch."""

    sparse = "sparse"
    one_hot = "one_hot"


class WeightingScheme(Choice):
    """weighting.scheme: how training-split class counts become class weights."""

    none = "none"
    balanced = "balanced"
    inverse_sqrt = "inverse_sqrt"
    effective_number = "effective_number"
    custom = "custom"


class Normalize(Choice):
    """weighting.normalize: what a weighted batch loss is divided by."""

    element = "element"  # the element count (Keras' default): weights also scale the loss
    weight_sum = "weight_sum"  # the sum of the weights: a weighted mean on the unweighted scale


class Reduction(Choice):
    """loss.reduction, as Keras names them."""

    sum_over_batch_size = "sum_over_batch_size"
    sum = "sum"
    none = "none"


class Precision(Choice):
    """strategy.precision: Keras' dtype policy (auto: what the hardware picked does best)."""

    auto = "auto"
    float32 = "float32"
    mixed_float16 = "mixed_float16"
    mixed_bfloat16 = "mixed_bfloat16"


class StrategyName(Choice):
    """strategy.name: the tf.distribute set-up."""

    auto = "auto"
    cpu = "cpu"
    gpu = "gpu"
    multi_cpu = "multi_cpu"
    multi_gpu = "multi_gpu"
    tpu = "tpu"
    multi_worker = "multi_worker"


class Resume(Choice):
    """trainer.resume: continue an interrupted run of the same job, or always start a new one."""

    auto = "auto"
    never = "never"


class Verbosity(Choice):
    """trainer.verbose: Keras' progress output (auto: a bar on a terminal, one line per epoch otherwise)."""

    auto = "auto"
    silent = "silent"  # Keras verbose=0
    bar = "bar"  # Keras verbose=1
    line = "line"  # Keras verbose=2

    def keras_verbose(self, isatty: bool) -> int:
        if self is Verbosity.auto:
            return 1 if isatty else 2
        return {"silent": 0, "bar": 1, "line": 2}[self.value]


class Head(Choice):
    """model.head: auto fits the loss; for 2-class data, two softmax units or one sigmoid unit."""

    auto = "auto"
    softmax2 = "softmax2"
    sigmoid1 = "sigmoid1"


class HeadLayout(Choice):
    """model.heads (model=multi_head): how the H classifications share the output layer."""

    shared = "shared"  # one Dense(H*K) reshaped to (H, K)
    separate = "separate"  # one Dense(K) per head, stacked


class ColorMode(Choice):
    """data.color_mode (data=image_folder): channels of the decoded images."""

    grayscale = "grayscale"
    rgb = "rgb"

    @property
    def channels(self) -> int:
        return {"grayscale": 1, "rgb": 3}[self.value]


class CalibrationMethod(Choice):
    """calibration.method: post-hoc calibration after training."""

    none = "none"
    temperature = "temperature"  # one T fitted on validation by NLL (xentlab.core.calibration)

"""Model outputs -> class probabilities, the one rule every metric, plot, loss and sampler reads.

Whether outputs are logits is always stated by the caller (`from_logits`, the run's `loss.from_logits`), never
guessed from the values. One sigmoid unit (K' = 1) stands for the two classes [1 - p, p]. Also here: the
equal-width confidence bins of the calibration error, shared by the streaming metric and the reliability diagram,
and the fine histogram the adaptive (equal-mass) calibration error derives its bins from.

TensorFlow is imported inside the `*_tf` functions only, so the numpy side (plots, generation) stays light.
"""

from __future__ import annotations

import numpy as np

from xentlab.errors import ConfigTypeError

# Guo et al. (2017), "On Calibration of Modern Neural Networks": 15 equal-width bins over [0, 1].
CALIBRATION_BINS = 15
# Adaptive ECE streams a fine histogram of top-label confidences and cuts it into equal-mass bins at the end.
# The histogram is over the log-odds log(c / (1 - c)), where a trained network's confidences near 1 still spread
# out: 0.01 wide over [-12, 18] (-12 < logit(1 / 160,000), the lowest top-label confidence of any class count
# xentlab trains; 18 > logit(1 - 1e-7), float32's last confidence below 1). 3,000 bins x 3 sums: 36 KB of state.
FINE_LOG_ODDS = (-12.0, 18.0)
FINE_BINS = 3000
CONFIDENCE_CLIP = (1e-12, 1.0 - 1e-7)  # confidences outside go to the first or last fine bin


def class_outputs(outputs, from_logits: bool):
    """The one reading of a head's last axis, for every head form: K units are the K classes' logits or
    probabilities; one sigmoid unit (K' = 1) is the two classes it stands for, as the logits [0, z]
    (softmax([0, z]) = [1 - sigmoid(z), sigmoid(z)], exactly) or the probabilities [1 - p, p].

    Every reader of model outputs (metrics, calibration, post-hoc adjustment, figures, sampling) starts here, so a
    sigmoid head and a 2-unit softmax head are scored the same way everywhere.

    Args:
        outputs: numpy-like (..., K') -> numpy float64; a TensorFlow tensor -> a float tensor (float64 kept).
        from_logits: True for logits, False for probabilities (a statement about the model, never a guess).

    Returns:
        (..., K) with K = K' for K' > 1 and K = 2 for one unit.
    """
    check_from_logits(from_logits)
    if isinstance(outputs, (np.ndarray, np.generic, list, tuple)):
        x = np.asarray(outputs, dtype="float64")
        if x.shape[-1] != 1:
            return x
        return np.concatenate([np.zeros_like(x), x] if from_logits else [1.0 - x, x], axis=-1)
    import tensorflow as tf

    x = _float_tf(outputs)
    if x.shape[-1] != 1:
        return x
    return tf.concat([tf.zeros_like(x), x] if from_logits else [1.0 - x, x], axis=-1)


def to_probabilities(outputs, from_logits: bool) -> np.ndarray:
    """Class probabilities (..., K) in float64 from model outputs (`class_outputs`' reading of every head form).

    Args:
        outputs: Logits or probabilities, last axis the classes; a last axis of 1 is one sigmoid unit.
        from_logits: True for logits (softmax), False for probabilities (rows are renormalised to sum to 1,
            which absorbs float32 rounding).

    Returns:
        Probabilities of shape (..., K), or (..., 2) = [1 - p, p] for one sigmoid unit.

    Raises:
        TypeError: If from_logits is not a bool (it is a statement about the model, not a guess).
    """
    out = class_outputs(np.asarray(outputs), from_logits)
    if from_logits:
        e = np.exp(out - out.max(-1, keepdims=True))  # [0, z] of a sigmoid unit: no overflow for z = -1e4 either
        return e / e.sum(-1, keepdims=True)
    return out / out.sum(-1, keepdims=True)


def confidence_bins(confidence, num_bins: int = CALIBRATION_BINS) -> np.ndarray:
    """Bin index in [0, num_bins) of each top-label confidence: bin b holds (b/num_bins, (b+1)/num_bins].

    Right-closed as in Guo et al.; a confidence of exactly 0 goes to bin 0. `confidence_bins_tf` is the same rule.
    """
    c = np.asarray(confidence, dtype="float64")
    return np.clip(np.ceil(c * num_bins).astype("int64") - 1, 0, num_bins - 1)


def fine_confidence_bins(confidence) -> np.ndarray:
    """Fine-histogram bin in [0, FINE_BINS) of each top-label confidence: equal widths in log-odds, increasing."""
    c = np.clip(np.asarray(confidence, dtype="float64"), *CONFIDENCE_CLIP)
    low, high = FINE_LOG_ODDS
    z = np.clip(np.log(c) - np.log1p(-c), low, high)
    return np.minimum(np.floor((z - low) / (high - low) * FINE_BINS).astype("int64"), FINE_BINS - 1)


def equal_mass_groups(counts, num_bins: int = CALIBRATION_BINS) -> np.ndarray:
    """The equal-mass bin in [0, num_bins) of each fine-histogram bin, from the (weighted) counts per fine bin.

    A fine bin goes where the midpoint of its cumulative mass falls: floor(num_bins * (before + n / 2) / total).
    Each equal-mass bin then holds total / num_bins up to the fine bins at its two edges, which are not split:
    positions tied in one fine bin (a saturated softmax gives many confidences of 1.0) stay together.
    """
    n = np.asarray(counts, dtype="float64")
    total = n.sum()
    if total <= 0:
        return np.zeros(n.shape, dtype="int64")
    middle = np.cumsum(n) - n / 2.0
    return np.minimum(np.floor(num_bins * middle / total).astype("int64"), num_bins - 1)


def to_probabilities_tf(outputs, from_logits: bool):
    """`to_probabilities` in TensorFlow, float32 (float64 kept), for metrics and losses inside a graph.

    Args:
        outputs: Tensor (..., K) of logits or probabilities, or (..., 1) for one sigmoid unit.
        from_logits: True for logits, False for probabilities (renormalised over the class axis).

    Returns:
        Tensor (..., K), or (..., 2) = [1 - p, p] for one sigmoid unit.
    """
    import tensorflow as tf

    x = class_outputs(_float_tf(outputs), from_logits)
    if from_logits:
        return tf.nn.softmax(x, axis=-1)
    return x / tf.reduce_sum(x, axis=-1, keepdims=True)


def log_probabilities_tf(outputs, from_logits: bool, eps: float = 1e-7):
    """Log class probabilities (..., K) in TensorFlow: exact from logits, log(clip(p, eps, 1)) from probabilities.

    From logits, log_softmax (of [0, z] for one unit: log_sigmoid(-z), log_sigmoid(z)) stays finite and exact for
    any finite logit. From probabilities, the clip at eps (Keras' 1e-7 by default) bounds log 0.

    Args:
        outputs: Tensor (..., K) of logits or probabilities, or (..., 1) for one sigmoid unit.
        from_logits: True for logits, False for probabilities.
        eps: Smallest probability kept before the log (probabilities only).

    Returns:
        Tensor (..., K), or (..., 2) for one sigmoid unit.
    """
    import tensorflow as tf

    if from_logits:
        return tf.nn.log_softmax(class_outputs(_float_tf(outputs), True), axis=-1)
    return tf.math.log(tf.clip_by_value(to_probabilities_tf(outputs, False), eps, 1.0))


def confidence_bins_tf(confidence, num_bins: int = CALIBRATION_BINS):
    """`confidence_bins` in TensorFlow: int32 bin index of each confidence, bins right-closed."""
    import tensorflow as tf

    b = tf.cast(tf.math.ceil(tf.cast(confidence, tf.float32) * num_bins), tf.int32) - 1
    return tf.clip_by_value(b, 0, num_bins - 1)


def fine_confidence_bins_tf(confidence):
    """`fine_confidence_bins` in TensorFlow (int32), on float32 confidences."""
    import tensorflow as tf

    c = tf.clip_by_value(tf.cast(confidence, tf.float32), *CONFIDENCE_CLIP)
    low, high = FINE_LOG_ODDS
    z = tf.clip_by_value(tf.math.log(c) - tf.math.log1p(-c), low, high)
    return tf.minimum(tf.cast(tf.floor((z - low) / (high - low) * FINE_BINS), tf.int32), FINE_BINS - 1)


def equal_mass_groups_tf(counts, num_bins: int = CALIBRATION_BINS):
    """`equal_mass_groups` in TensorFlow (int32); all 0 before any position is counted."""
    import tensorflow as tf

    n = tf.cast(counts, tf.float32)
    middle = tf.cumsum(n) - n / 2.0
    groups = tf.floor(num_bins * tf.math.divide_no_nan(middle, tf.reduce_sum(n)))
    return tf.minimum(tf.cast(groups, tf.int32), num_bins - 1)


def _float_tf(outputs):
    import tensorflow as tf

    x = tf.convert_to_tensor(outputs)
    return x if x.dtype in (tf.float32, tf.float64) else tf.cast(x, tf.float32)  # float16/bfloat16 heads too


def check_from_logits(from_logits) -> None:
    """Raises TypeError unless from_logits is a bool: a statement about the model, never a guess."""
    if not isinstance(from_logits, (bool, np.bool_)):
        raise ConfigTypeError(
            f"from_logits must be True or False; received from_logits={from_logits!r} of type "
            f"{type(from_logits).__name__}. Pass the run's loss.from_logits: whether outputs are logits is "
            f"never guessed from their values."
        )

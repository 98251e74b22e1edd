"""tf.data pipelines: integer labels -> the run's label encoding, per-element sample weights (0 where the label
contract masks a position).

Integer labels are the canonical form; a one-hot view is made per batch, never as a numpy array up front.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf

from xentlab.choices import Encoding, Normalize
from xentlab.core.targets import LabelContract, valid_mask_tf

if TYPE_CHECKING:
    from xentlab.data import DataBundle


def encode_labels(y: tf.Tensor, *, encoding: str, num_classes: int) -> tf.Tensor:
    """Returns the labels in `encoding`: integer ids unchanged, or their one-hot view.

    `tf.one_hot` maps an out-of-range id (e.g. ignore_class=-1) to an all-zero row, which the label contract's
    mask (`xentlab.core.targets.valid_mask_tf`) reads as that ignore class.
    """
    if Encoding.parse(encoding, "labels.encoding") is Encoding.sparse:
        return y
    return tf.one_hot(tf.cast(y, tf.int32), num_classes, dtype=tf.float32)


def element_weights(
    y: tf.Tensor,
    *,
    class_weights: np.ndarray | None,
    ignore_class: int | None,
    normalize: str = "element",
) -> tf.Tensor | None:
    """Per-element sample weights for a batch of integer labels of any shape, or None without class weights.

    The weight is gathered by label (0 at ignored positions). With normalize="weight_sum" the batch's
    weights are rescaled to sum to its number of unmasked elements, so Keras' "divide by element count"
    reduction becomes a weighted mean (sum of w*loss / sum of w).
    """
    normalize = Normalize.parse(normalize, "weighting.normalize")
    if class_weights is None:
        return None  # the losses and metrics mask ignore_class themselves
    y = tf.cast(y, tf.int32)
    k = len(class_weights)
    mask = valid_mask_tf(y, encoding="sparse", ignore_class=ignore_class)
    valid = tf.ones_like(y, dtype=tf.float32) if mask is None else tf.cast(mask, tf.float32)
    table = tf.constant(class_weights, dtype=tf.float32)
    w = tf.gather(table, tf.clip_by_value(y, 0, k - 1)) * valid
    if normalize == "weight_sum":
        w = w * tf.math.divide_no_nan(tf.reduce_sum(valid), tf.reduce_sum(w))
    return w


def make_dataset(
    x: np.ndarray,
    y: np.ndarray,
    *,
    labels: LabelContract,
    batch_size: int,
    class_weights: np.ndarray | None = None,
    normalize: str = "element",
    shuffle: bool = False,
    shuffle_buffer: int | None = None,
    seed: int = 0,
    epochs: tuple[int, int] | None = None,
    drop_remainder: bool = False,
    decode: Callable[[tf.Tensor], tf.Tensor] | None = None,
) -> tf.data.Dataset:
    """Builds a batched, prefetched dataset yielding (x, labels) or (x, labels, sample_weight).

    Batching comes before the label map so encoding and weighting run once per batch, vectorised.

    Args:
        labels: The run's label contract: the encoding to deliver, the class count, the ignore class (weight 0).
        shuffle_buffer: buffer of the plain shuffle (epochs=None); the per-epoch shuffle is always global.
        epochs: (first, stop) for a training set that spans epochs first..stop-1 in one pass, each a full
            permutation keyed by (seed, epoch). Epoch e then sees the same order whether or not the job was
            interrupted and resumed before it; pass steps_per_epoch to fit. None: one epoch, reshuffled on
            every iteration.
        decode: for a streamed source (`DataBundle.decode`): turns a batch of x (file paths) into model
            inputs, after shuffling and batching, so only the batches in flight are held in memory.
    """
    if shuffle and epochs is not None:
        ds = _epoch_batches(x, y, batch_size=batch_size, seed=seed, epochs=epochs, drop_remainder=drop_remainder)
    else:
        ds = tf.data.Dataset.from_tensor_slices((x, y))
        if shuffle:
            ds = ds.shuffle(shuffle_buffer or len(x), seed=seed, reshuffle_each_iteration=True)
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)

    def to_model_inputs(xb, yb):
        if decode is not None:
            decoded = decode(xb)
            xb = tf.ensure_shape(decoded, xb.shape[:1] + decoded.shape[1:])  # a static batch stays static
        encoded = encode_labels(yb, encoding=labels.encoding, num_classes=labels.num_classes)
        w = element_weights(yb, class_weights=class_weights, ignore_class=labels.ignore_class, normalize=normalize)
        return (xb, encoded) if w is None else (xb, encoded, w)

    options = tf.data.Options()
    # In-memory arrays have no files to shard: multi-worker runs shard by element (each worker a 1/n share).
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    if decode is None:
        # In-memory batches need no tuning (the map's parallelism and the prefetch buffer then take tf.data's
        # fixed defaults). Tuning runs a thread that an iterator's end waits for, up to its sleep: 2.0-2.4 s
        # after one job's fit in three on the long_tail preset, the job idle meanwhile.
        options.autotune.enabled = False
    ds = ds.map(to_model_inputs, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    return ds.with_options(options)


def _epoch_batches(x, y, *, batch_size: int, seed: int, epochs: tuple[int, int], drop_remainder: bool):
    """Batches of epochs first..stop-1, each a permutation by a stateless shuffle keyed by (seed, epoch)."""
    first, stop = epochs
    features, targets = tf.constant(x), tf.constant(y)
    n = len(x)

    def one_epoch(epoch):
        # Batches are gathered whole, not element by element.
        key = tf.stack([seed, tf.cast(epoch, tf.int32)])
        order = tf.random.experimental.stateless_shuffle(tf.range(n), seed=key)
        return tf.data.Dataset.from_tensor_slices(order).batch(batch_size, drop_remainder=drop_remainder)

    ds = tf.data.Dataset.range(first, stop).flat_map(one_epoch)
    return ds.map(lambda idx: (tf.gather(features, idx), tf.gather(targets, idx)))


def features_dataset(bundle: DataBundle, split: str, batch_size: int) -> tf.data.Dataset:
    """The model inputs of one split, in order, batched and prefetched (decoded when streamed): what
    `model.predict` takes outside fit, without loading a streamed split into memory."""
    ds = tf.data.Dataset.from_tensor_slices(getattr(bundle, f"x_{split}")).batch(batch_size)
    if bundle.decode is not None:
        return ds.map(bundle.decode, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.autotune.enabled = False  # in memory: nothing to tune (see make_dataset)
    return ds.prefetch(tf.data.AUTOTUNE).with_options(options)


def steps_per_epoch(num_examples: int, batch_size: int, drop_remainder: bool) -> int:
    return num_examples // batch_size if drop_remainder else -(-num_examples // batch_size)

"""A training loop for MultiWorkerMirroredStrategy, where Keras 3's `fit` and `evaluate` do not run
(keras-team/keras#20585): the same losses, metrics, callbacks and history, steps run with `strategy.run`.

Every worker runs the same code in the same order: each step, and each read of a metric, is a collective that
all workers must join.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from xentlab.core.targets import align_sample_weight
from xentlab.errors import ConfigError

try:
    from keras.src.backend import get_keras_mask  # what Loss.__call__ reads; xentlab.core.losses sets it
except ImportError:  # pragma: no cover - moved in some Keras release; the attribute is what it reads

    def get_keras_mask(x):
        return getattr(x, "_keras_mask", None)

SUM = tf.distribute.ReduceOp.SUM


def _unpack(data) -> tuple[Any, Any, Any]:
    """(x, y) or (x, y, sample_weight), as the datasets of xentlab.core.pipeline yield them."""
    if len(data) == 2:
        return data[0], data[1], None
    return data[0], data[1], data[2]


def _batch_size(x) -> tf.Tensor:
    return tf.shape(tf.nest.flatten(x)[0])[0]


def _per_element(loss, y, y_pred):
    """Per-element losses and their mask (None: all count), as `keras.losses.Loss.__call__` computes them."""
    if isinstance(loss, keras.losses.Loss):
        in_mask = get_keras_mask(y_pred)
        y_pred = ops.convert_to_tensor(y_pred, dtype=loss.dtype)
        y = ops.convert_to_tensor(y, dtype=loss.dtype)
        values = loss.call(y, y_pred)
        out_mask = get_keras_mask(values)
        masks = [m for m in (in_mask, out_mask) if m is not None]
        mask = None if not masks else masks[0] if len(masks) == 1 else ops.logical_and(*masks)
        return values, mask
    values = loss(y, y_pred)  # a plain function: per-example losses
    return values, get_keras_mask(values)


def loss_parts(loss, y, y_pred, sample_weight=None) -> tuple[tf.Tensor, tf.Tensor]:
    """The numerator and the denominator of a "sum_over_batch_size" loss on one replica's share of a batch.

    The loss of the batch is sum(numerators) / sum(denominators) over replicas: sum(w * loss) over unmasked
    elements divided by the count of unmasked elements, as `keras.losses.Loss` reduces one batch on one device
    (xentlab.core.losses masks ignore_class this way). Dividing each replica's numerator by the global count makes the
    replicas' losses add up to the single-device loss of the whole batch, also when the replicas hold different
    numbers of unmasked elements (Keras' own reduction would average the replicas' means instead).

    Raises:
        ValueError: For a loss object whose reduction is not "sum_over_batch_size".
    """
    reduction = getattr(loss, "reduction", "sum_over_batch_size")
    if reduction not in ("sum_over_batch_size", "mean"):
        raise ConfigError(
            f"strategy=multi_worker averages the loss over the global batch; received a loss with "
            f"reduction={reduction!r}. Use reduction='sum_over_batch_size' (the default of every xentlab loss)"
        )
    values, mask = _per_element(loss, y, y_pred)
    values = ops.cast(values, "float32")
    if sample_weight is not None:
        values = values * align_sample_weight(sample_weight, len(values.shape))  # over the trailing label axes
    if mask is None:
        return ops.sum(values), ops.cast(ops.size(values), "float32")
    mask = ops.cast(mask, "float32")
    return ops.sum(values * mask), ops.sum(mask)


class _Steps:
    """The train and test steps of one compiled model under one strategy, traced once each."""

    def __init__(self, model: keras.Model, strategy: tf.distribute.Strategy) -> None:
        self.model, self.strategy = model, strategy
        self.loss = model.loss
        if self.loss is None or isinstance(self.loss, (list, dict)):
            raise ConfigError(
                f"strategy=multi_worker trains a model compiled with one loss object; received "
                f"model.loss={self.loss!r}. Compile with a single keras.losses.Loss or loss function"
            )
        # The iterator goes into the function, so its element spec (batch axis None) is the only signature:
        # a partial last batch does not retrace on one worker while the other runs the traced graph.
        self.train = tf.function(self._train_step)
        self.test = tf.function(self._test_step)

    def _batch_loss(self, x, y, y_pred, sample_weight):
        """This replica's share of the global batch loss; the global batch loss and size (same on every replica)."""
        context = tf.distribute.get_replica_context()
        numerator, count = loss_parts(self.loss, y, y_pred, sample_weight)
        global_count, global_size = tf.unstack(
            context.all_reduce(SUM, tf.stack([count, tf.cast(_batch_size(x), tf.float32)])))
        loss = tf.math.divide_no_nan(numerator, global_count)
        if self.model.losses:  # regularisation terms, split evenly over the replicas as Keras does
            loss += ops.cast(ops.sum(self.model.losses), "float32") / self.strategy.num_replicas_in_sync
        return loss, context.all_reduce(SUM, tf.stop_gradient(loss)), global_size

    def _update_metrics(self, x, y, y_pred, sample_weight, global_loss) -> None:
        # The loss tracker averages batch losses weighted by batch size, as fit's "loss" does; each replica adds
        # its own examples' share, so the sum over replicas is weighted by the global batch size.
        self.model._loss_tracker.update_state(global_loss, sample_weight=_batch_size(x))
        if self.model._compile_metrics is not None:
            self.model._compile_metrics.update_state(y, y_pred, sample_weight)

    def _train_replica(self, data):
        x, y, sample_weight = _unpack(data)
        model = self.model
        with tf.GradientTape() as tape:
            y_pred = model(x, training=True)
            loss, global_loss, global_size = self._batch_loss(x, y, y_pred, sample_weight)
            scaled = model.optimizer.scale_loss(loss)  # mixed precision: the loss scale, undone on apply
        gradients = tape.gradient(scaled, model.trainable_variables)
        model.optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))  # all-reduces
        self._update_metrics(x, y, y_pred, sample_weight, global_loss)
        return global_loss, global_size

    def _test_replica(self, data):
        x, y, sample_weight = _unpack(data)
        y_pred = self.model(x, training=False)
        _, global_loss, _ = self._batch_loss(x, y, y_pred, sample_weight)
        self._update_metrics(x, y, y_pred, sample_weight, global_loss)
        return global_loss

    def _train_step(self, iterator):
        # Every replica holds the same global values: this worker's first copy is the answer, no collective.
        outputs = self.strategy.run(self._train_replica, args=(next(iterator),))
        return tuple(self.strategy.experimental_local_results(value)[0] for value in outputs)

    def _test_step(self, iterator):
        self.strategy.run(self._test_replica, args=(next(iterator),))


def _results(model: keras.Model, prefix: str = "") -> dict[str, float]:
    """The model's metric results, reduced over every replica of every worker (a collective: all call it); a metric
    of several values (the confusion statistics) gives each under its own name, as Keras' fit logs them."""
    flat: dict = {}
    for name, value in model.get_metrics_result().items():
        flat.update(value if isinstance(value, dict) else {name: value})
    return {f"{prefix}{name}": float(value) for name, value in flat.items()}


def _num_batches(ds: tf.data.Dataset) -> int:
    n = int(ds.cardinality())
    return n if n >= 0 else sum(1 for _ in ds)


def build_for_strategy(model: keras.Model, train_ds: tf.data.Dataset, strategy: tf.distribute.Strategy) -> None:
    """Creates the compiled metrics' and the optimizer's variables in `strategy.scope()`, from one batch's
    shapes: inside the step functions they would be created in replica context, which tf.distribute refuses."""
    with strategy.scope():
        model._symbolic_build(data_batch=next(iter(train_ds)))
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)


def sync_from_chief(model: keras.Model, initial_epoch: int, strategy: tf.distribute.Strategy) -> int:
    """Gives every worker the chief's variables (model and optimizer) and the chief's initial epoch, and returns
    that epoch. A resumed chief has restored them from its checkpoint; the other workers start from scratch.

    Replica 0 lives on the chief (worker 0, or the task of type chief); the others add zeros to the sum.
    """
    variables = [*model.variables, *model.optimizer.variables]

    @tf.function
    def gather():
        def replica():
            context = tf.distribute.get_replica_context()
            first = tf.equal(context.replica_id_in_sync_group, 0)
            # One packed all-reduce needs one dtype: float64 holds float32 values and int64 counters exactly.
            own = [tf.constant(initial_epoch, tf.float64), *[tf.cast(v.value, tf.float64) for v in variables]]
            return context.all_reduce(SUM, [tf.where(first, t, tf.zeros_like(t)) for t in own])

        return strategy.experimental_local_results(strategy.run(replica))[0]

    epoch, *values = gather()
    for variable, value in zip(variables, values, strict=True):
        variable.assign(tf.cast(value, variable.dtype))
    return int(epoch)


def evaluate_custom(model: keras.Model, ds: tf.data.Dataset, *, strategy: tf.distribute.Strategy,
                    steps: _Steps | None = None) -> dict[str, float]:
    """`model.evaluate(ds, return_dict=True)` under `strategy`: the loss and every compiled metric on `ds`."""
    steps = steps or _Steps(model, strategy)
    model.reset_metrics()
    iterator = iter(strategy.experimental_distribute_dataset(ds))
    for _ in range(_num_batches(ds)):
        steps.test(iterator)
    return _results(model)


def _check_global_batch(global_batch_size: int, replicas: int) -> None:
    if global_batch_size % replicas:
        raise ConfigError(
            f"global_batch_size={global_batch_size} does not split over {replicas} replicas; pass a multiple of "
            f"{replicas}"
        )


def _train_epoch(steps: _Steps, train_iterator, steps_per_epoch: int, callback_list) -> None:
    """One epoch's training steps; the batch callbacks get the running loss, weighted by global batch size."""
    total, seen = 0.0, 0.0
    for batch in range(steps_per_epoch):
        callback_list.on_train_batch_begin(batch)
        loss, size = steps.train(train_iterator)
        total, seen = total + float(loss) * float(size), seen + float(size)
        callback_list.on_train_batch_end(batch, {"loss": total / seen if seen else math.nan})


def fit_custom(
    model: keras.Model,
    train_ds: tf.data.Dataset,
    val_ds: tf.data.Dataset,
    *,
    epochs: int,
    initial_epoch: int,
    steps_per_epoch: int,
    strategy: tf.distribute.Strategy,
    global_batch_size: int,
    callbacks: list[keras.callbacks.Callback],
) -> dict[str, list[float]]:
    """`model.fit(train_ds, validation_data=val_ds, ...).history` under `strategy`, with Keras' callbacks.

    Args:
        model: compiled in `strategy.scope()` with one loss.
        train_ds: batched at `global_batch_size`, yielding (x, y) or (x, y, sample_weight); read for
            `steps_per_epoch` batches per epoch from one iterator (xentlab.core.pipeline makes one spanning all epochs).
        val_ds: batched at `global_batch_size`; evaluated in full after every epoch.
        epochs, initial_epoch, steps_per_epoch: as for `fit`.
        strategy: the tf.distribute strategy; each worker takes its share of every global batch.
        global_batch_size: the batch size over all replicas; must split evenly over them.
        callbacks: called as `fit` calls them: on_train_begin/end, on_epoch_begin/end with the epoch's logs
            (loss, compiled metrics, val_*), on_train_batch_end with the running loss.

    Returns:
        The history: for every key of the epoch logs, one value per epoch run.

    Raises:
        ValueError: For a global batch that does not split over the replicas.
    """
    _check_global_batch(global_batch_size, strategy.num_replicas_in_sync)
    build_for_strategy(model, train_ds, strategy)
    start = sync_from_chief(model, initial_epoch, strategy)
    # A worker that did not resume starts its training set `start - initial_epoch` epochs later, as the chief's.
    train_ds = train_ds.skip((start - initial_epoch) * steps_per_epoch)
    if start >= epochs:
        return {}  # the chief's training had completed: as fit is not called then, no callback runs
    steps = _Steps(model, strategy)
    callback_list = keras.callbacks.CallbackList(callbacks, model=model, epochs=epochs, steps=steps_per_epoch,
                                                 verbose=0)
    history: dict[str, list[float]] = {}
    train_iterator = iter(strategy.experimental_distribute_dataset(train_ds))
    model.stop_training = False
    callback_list.on_train_begin()
    for epoch in range(start, epochs):
        model.reset_metrics()
        callback_list.on_epoch_begin(epoch)
        _train_epoch(steps, train_iterator, steps_per_epoch, callback_list)
        logs = _results(model)
        logs.update({f"val_{k}": v for k, v in evaluate_custom(model, val_ds, strategy=strategy, steps=steps).items()})
        callback_list.on_epoch_end(epoch, logs)
        for key, value in logs.items():
            history.setdefault(key, []).append(float(value))
        if model.stop_training:  # a callback that sets it must run on every worker, or the others wait
            break
    callback_list.on_train_end(logs=None)
    return history


# Settings that may differ between workers without changing what they compute together: only the chief logs, and
# the chief's epoch and weights are handed to the others (`sync_from_chief`).
PER_WORKER = ("tracking.", "trainer.verbose", "trainer.debug", "trainer.resume", "trainer.stale_after_s",
              "trainer.dry_run")
DATA_KEY = "data (digest of the loaded splits)"


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = json.dumps(value, sort_keys=True, default=str)
    return flat


def data_digest(splits: dict[str, tuple[Any, Any]]) -> str:
    """A digest of the examples and labels of every split (`DataBundle.splits()`): equal on two machines only when
    they loaded the same data."""
    digest = hashlib.sha256()
    for name in sorted(splits):
        for array in map(np.asarray, splits[name]):
            digest.update(f"{name}{array.dtype.str}{array.shape}".encode())
            digest.update(array.tobytes() if array.dtype != object else "\0".join(map(str, array.ravel())).encode())
    return digest.hexdigest()[:16]


def job_fingerprint(config: dict[str, Any], splits: dict[str, tuple[Any, Any]]) -> dict[str, str]:
    """What every worker of one job must agree on: the resolved config (without `PER_WORKER` settings), dotted
    keys to JSON values, and the data's digest."""
    flat = {k: v for k, v in _flatten(config).items() if not k.startswith(PER_WORKER)}
    return {**flat, DATA_KEY: data_digest(splits)}


def _gather_rows(strategy: tf.distribute.Strategy, row: np.ndarray) -> np.ndarray:
    """(replicas, len(row)): every replica's `row` (float32), in replica order, on every worker. One SUM all-reduce
    of a shape all workers share: each replica fills its own line with its row, the others with zeros."""
    replicas, own = strategy.num_replicas_in_sync, tf.constant(row, tf.float32)

    @tf.function
    def gather():
        def replica():
            context = tf.distribute.get_replica_context()
            line = tf.one_hot(context.replica_id_in_sync_group, replicas, dtype=tf.float32)
            return context.all_reduce(SUM, line[:, None] * own[None, :])

        return strategy.experimental_local_results(strategy.run(replica))[0]

    return np.asarray(gather())


def exchange(strategy: tf.distribute.Strategy, payload: bytes) -> list[bytes]:
    """Every replica's `payload`, in replica order (replica 0 is the chief's), on every worker: the lengths first,
    then the bytes padded to the longest, so both collectives have one shape on every worker."""
    lengths = _gather_rows(strategy, np.array([len(payload)], np.float32))[:, 0].astype(int)
    padded = np.zeros(int(lengths.max()), np.float32)
    padded[: len(payload)] = np.frombuffer(payload, np.uint8)
    rows = _gather_rows(strategy, padded)
    return [bytes(row[:n].astype(np.uint8)) for row, n in zip(rows, lengths, strict=True)]


def differences(fingerprints: list[dict[str, str]], per_worker: int = 1) -> list[str]:
    """`key (worker 0: value, worker i: value)` for each key on which a worker differs from the chief (replica 0);
    `per_worker` replicas make one worker."""
    found: dict[str, dict[int, str]] = {}
    chief = fingerprints[0]
    for replica, other in enumerate(fingerprints[1:], start=1):
        for key in sorted(chief.keys() | other.keys()):
            if chief.get(key) != other.get(key):
                found.setdefault(key, {0: chief.get(key, "(not set)")})[replica // per_worker] = other.get(
                    key, "(not set)")
    return [f"{key} ({', '.join(f'worker {w}: {v}' for w, v in values.items())})" for key, values in found.items()]


def check_same_job(strategy: tf.distribute.Strategy, config: dict[str, Any],
                   splits: dict[str, tuple[Any, Any]]) -> None:
    """Refuses, on every worker, a cluster whose workers were started on different configs or data: before any
    variable is made, every worker sends the others its `job_fingerprint` and compares them with the chief's.

    Unchecked, different batch sizes crash in a collective ("Collective instance ... expected data_type") and a
    different loss, seed or split trains silently, the chief's run recording its own config over numbers the
    workers computed from a mix.

    Raises:
        ConfigError: On every worker, naming each key that differs and each worker's value.
    """
    payload = json.dumps(job_fingerprint(config, splits), sort_keys=True).encode()
    received = exchange(strategy, payload)
    if all(other == received[0] for other in received):
        return
    per_worker = max(len(strategy.extended.worker_devices), 1)
    found = differences([json.loads(p) for p in received], per_worker)
    raise ConfigError(
        "strategy=multi_worker: the workers were not started on the same job; every worker must run the same "
        f"config on the same data. Differing: {'; '.join(found)}. Start every worker with the same overrides "
        "(and the same data files)"
    )


def predict_local(model: keras.Model, ds: tf.data.Dataset):
    """The model's outputs on `ds` (features only), computed on this worker alone: `model.predict` of a model
    built under MultiWorkerMirroredStrategy would start collectives that the other workers never join."""
    call = tf.function(lambda x: model(x, training=False))
    return np.concatenate([np.asarray(call(x)) for x in ds], axis=0)

"""How a compiled model is fitted, evaluated and run on one kind of hardware: Keras' own loops, or the custom loop of
strategy=multi_worker (xentlab.runtime.multi_worker), where Keras 3's `fit`, `evaluate` and `predict` do not run.
The rest of the package asks the run's `Loop` and never checks which kind of hardware it is on."""

from __future__ import annotations

from typing import Any

import numpy as np

from xentlab.runtime.multi_worker import build_for_strategy, check_same_job, evaluate_custom, fit_custom, predict_local
from xentlab.runtime.schedule import align_history, validation_epochs
from xentlab.runtime.strategy import is_chief


def logs_here(strategy_name: str) -> bool:
    """False for a worker of a multi-worker run other than the chief: it trains with the others but logs nothing."""
    if strategy_name != "multi_worker":
        return True
    return is_chief()


class Loop:
    """Keras' own loops: `fit`, `evaluate` and `predict` of the compiled model."""

    def check_same_job(self, config: dict[str, Any], splits: dict[str, tuple[Any, Any]]) -> None:
        """Refuses processes started on different configs or data (one process: nothing to compare)."""

    def prepare(self, model, train_ds) -> None:
        """Creates the optimizer's variables before the first step. Keras otherwise creates them inside the first
        trace of the training step, and TensorFlow then traces that step a second time (0.4-0.7 s a job for the
        seed CNN). A model not built yet (a subclassed one) creates them at its first step as before."""
        optimizer = getattr(model, "optimizer", None)
        if optimizer is not None and not optimizer.built and model.built and model.trainable_variables:
            with model.distribute_strategy.scope():  # a replicated model's optimizer variables are replicated too
                optimizer.build(model.trainable_variables)

    def fit(self, model, train_ds, val_ds, *, epochs: int, initial_epoch: int, steps_per_epoch: int,
            callbacks: list, verbose: int, validate_every: int = 1) -> dict[str, list[float]]:
        """`model.fit(...).history`, validating every `validate_every` epochs and after the last (`val_*` NaN at the
        other epochs: xentlab.runtime.schedule); empty when training had completed (`initial_epoch >= epochs`)."""
        if initial_epoch >= epochs:
            return {}
        validated = validation_epochs(epochs, validate_every)
        history = model.fit(
            train_ds, validation_data=val_ds, epochs=epochs, initial_epoch=initial_epoch,
            steps_per_epoch=steps_per_epoch,
            shuffle=False,  # the training dataset reshuffles itself every epoch
            verbose=verbose, callbacks=callbacks, validation_freq=validated,
        ).history
        return align_history(history, list(range(initial_epoch + 1, epochs + 1)), validated)

    def evaluate(self, model, ds) -> dict[str, float]:
        """The loss and every compiled metric on `ds`."""
        return model.evaluate(ds, return_dict=True, verbose=0)

    def predict(self, model, features) -> np.ndarray:
        """The model's outputs on a features-only dataset, in order."""
        return np.asarray(model.predict(features, verbose=0))


class MultiWorkerLoop(Loop):
    """The custom loop under MultiWorkerMirroredStrategy: every worker runs each step and each metric read."""

    def __init__(self, strategy, global_batch_size: int) -> None:
        self.strategy, self.global_batch_size = strategy, global_batch_size

    def check_same_job(self, config: dict[str, Any], splits: dict[str, tuple[Any, Any]]) -> None:
        check_same_job(self.strategy, config, splits)

    def prepare(self, model, train_ds) -> None:
        # Creating a variable is a collective: every worker creates them in one order, here. The chief's restore
        # then creates none under the strategy (Keras' load makes a throwaway optimizer, outside the scope).
        build_for_strategy(model, train_ds, self.strategy)

    def fit(self, model, train_ds, val_ds, *, epochs: int, initial_epoch: int, steps_per_epoch: int,
            callbacks: list, verbose: int, validate_every: int = 1) -> dict[str, list[float]]:
        # Validates after every epoch (validate_every is Keras' fit's alone).
        # Every worker enters, also when the chief's training had completed: the chief's epoch is agreed there.
        return fit_custom(model, train_ds, val_ds, epochs=epochs, initial_epoch=initial_epoch,
                          steps_per_epoch=steps_per_epoch, strategy=self.strategy,
                          global_batch_size=self.global_batch_size, callbacks=callbacks)

    def evaluate(self, model, ds) -> dict[str, float]:
        return evaluate_custom(model, ds, strategy=self.strategy)

    def predict(self, model, features) -> np.ndarray:
        # predict would start collectives the other workers never join: each worker computes its own.
        return predict_local(model, features)


def loop_for(hardware: Any, global_batch_size: int) -> Loop:
    """The loop of the hardware built by xentlab.runtime.strategy.build_strategy."""
    if hardware.kind == "multi_worker":
        return MultiWorkerLoop(hardware.strategy, global_batch_size)
    return Loop()

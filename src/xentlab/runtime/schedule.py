"""Which epochs validate: `trainer.validate_every` for long runs of tiny epochs, the last epoch always."""

from __future__ import annotations

import math


def validation_epochs(epochs: int, every: int) -> list[int]:
    """The 1-based epochs after which Keras' `fit` validates (its `validation_freq`): every `every`-th and the last.

    Args:
        epochs: the run's last epoch (trainer.epochs).
        every: epochs between validation passes (trainer.validate_every, >= 1).
    """
    return [e for e in range(1, epochs + 1) if e % every == 0 or e == epochs]


def align_history(history: dict[str, list[float]], epochs_run: list[int],
                  validated: list[int]) -> dict[str, list[float]]:
    """A Keras history with one value per epoch run for every key: `val_*` lists (one value per validated epoch)
    get NaN at the epochs that did not validate, so every list lines up with `epochs_run` (1-based).

    Args:
        history: `fit(...).history`.
        epochs_run: the 1-based epochs this `fit` ran, in order.
        validated: the 1-based epochs that validated (`validation_epochs`).
    """
    done = [e for e in epochs_run if e in set(validated)]
    aligned = {}
    for key, values in history.items():
        if len(values) == len(epochs_run) or len(values) != len(done):
            aligned[key] = list(values)
            continue
        by_epoch = dict(zip(done, values, strict=True))
        aligned[key] = [by_epoch.get(e, math.nan) for e in epochs_run]
    return aligned

"""Stratified k-fold cross-validation (data.folds, data.fold) for any source with one class label per example.

The test split is held out once, as the source splits it (deterministic from data.split_seed), and is the same for
every fold. The rest, the labelled pool (training + validation), is cut into K folds stratified by label by
scikit-learn's StratifiedKFold shuffled with data.split_seed: fold i is the validation split, the other K - 1 the
training split. A sweep over data.fold=0,...,K-1 so trains every example once for validation, and the report
pairs its variants by (seed, fold).
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import StratifiedKFold

from xentlab.data.bundle import DataBundle, DataError


def check_folds(folds: int | None, fold: int) -> None:
    """Raises DataError for K < 2 or a fold outside [0, K) (or data.fold set without data.folds)."""
    if folds is None:
        if fold != 0:
            raise DataError(f"data.fold={fold} needs data.folds=K (k-fold cross-validation); e.g. data.folds=5 "
                            f"data.fold={fold}, or leave data.fold at 0 without folds")
        return
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise DataError(f"data.folds must be an integer >= 2 (the number of cross-validation folds) or null, got "
                        f"{folds!r}; e.g. data.folds=5")
    if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < folds:
        raise DataError(f"data.fold must be in 0..{folds - 1} for data.folds={folds}, got {fold!r}; sweep all of "
                        f"them with data.fold=range(0,{folds})")


def apply_folds(bundle: DataBundle, folds: int | None, fold: int = 0, *, seed: int = 0) -> DataBundle:
    """Replaces the training and validation splits of `bundle` by fold `fold` of `folds` over their union.

    Args:
        bundle: A loaded source; its labels must be one class id per example.
        folds: K >= 2; None leaves the bundle as it is.
        fold: The fold used for validation, in [0, K).
        seed: Seed of the shuffle (data.split_seed): the same folds for every variant and seed.

    Returns:
        The same bundle; `meta` gets `folds`, `fold` and the pool size.

    Raises:
        DataError: For K < 2, a fold outside [0, K), labels that are not one per example, or a class with fewer
            than K examples in the pool (every fold must be able to hold one).
    """
    check_folds(folds, fold)
    if folds is None:
        return bundle
    x = np.concatenate([bundle.x_train, bundle.x_val])
    y = np.concatenate([np.asarray(bundle.y_train), np.asarray(bundle.y_val)])
    if y.ndim != 1:
        raise DataError(f"data.folds needs one class label per example to stratify on, but data={bundle.name} has "
                        f"labels of shape {y.shape[1:]} per example (text, sequence or multi-head labels); "
                        f"set data.folds=null")
    classes, counts = np.unique(y, return_counts=True)
    short = {_name(bundle, c): int(n) for c, n in zip(classes, counts, strict=True) if n < folds}
    if short:
        raise DataError(f"data.folds={folds} needs at least {folds} examples of every class in the training and "
                        f"validation splits together, but these classes have fewer: {short}; lower data.folds, or "
                        f"raise data.limit")
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    train_idx, val_idx = list(splitter.split(np.zeros(len(y)), y))[fold]
    train_idx, val_idx = np.sort(train_idx), np.sort(val_idx)  # the pool's order, for stable subsets later
    bundle.x_train, bundle.y_train = x[train_idx], y[train_idx]
    bundle.x_val, bundle.y_val = x[val_idx], y[val_idx]
    bundle.meta.update({"folds": folds, "fold": fold, "fold_pool_size": len(y)})
    return bundle


def _name(bundle: DataBundle, label) -> str:
    index = int(label) if float(label) == int(label) else -1
    return bundle.class_names[index] if 0 <= index < len(bundle.class_names) else str(label)

"""Classification losses for comparing set-ups: cross-entropy, focal, binary, weighted binary, logit-adjusted, poly-1.

The package in layers: `table` (`LOSS_TABLE`: what each loss kind needs from the head and the labels; the model
and the checks read it too), `arguments` (the argument checks), `functions` (pure functions returning per-element
losses, masked by the label contract's rule, `xentlab.core.targets`), `classes` (one generic Keras wrapper and a
constructor per loss) and `build` (`build_loss`, `build_loss_from_config`). Everything public is importable from
`xentlab.core.losses`; importing it registers the classes a saved model names (``xentlab>CrossEntropy``, ...).
"""

from xentlab.core.losses.build import build_loss, build_loss_from_config
from xentlab.core.losses.classes import (
    BinaryCrossEntropy,
    CrossEntropy,
    ElementwiseLoss,
    FocalCrossEntropy,
    LogitAdjustedCrossEntropy,
    Poly1CrossEntropy,
    WeightedBinaryCrossEntropy,
)
from xentlab.core.losses.functions import (
    binary_crossentropy,
    class_priors,
    crossentropy,
    focal_crossentropy,
    logit_adjusted_crossentropy,
    poly1_crossentropy,
    weighted_binary_crossentropy,
)
from xentlab.core.losses.table import LOSS_KINDS, LOSS_TABLE, LossSpec, check_loss_combination, loss_spec

__all__ = [
    "LOSS_KINDS",
    "LOSS_TABLE",
    "BinaryCrossEntropy",
    "CrossEntropy",
    "ElementwiseLoss",
    "FocalCrossEntropy",
    "LogitAdjustedCrossEntropy",
    "LossSpec",
    "Poly1CrossEntropy",
    "WeightedBinaryCrossEntropy",
    "binary_crossentropy",
    "build_loss",
    "build_loss_from_config",
    "check_loss_combination",
    "class_priors",
    "crossentropy",
    "focal_crossentropy",
    "logit_adjusted_crossentropy",
    "loss_spec",
    "poly1_crossentropy",
    "weighted_binary_crossentropy",
]

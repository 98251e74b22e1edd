"""Argument checks of the losses: each returns the value in a plain, JSON-friendly form (what `get_config` stores)
or raises an error that names the argument, what was expected and what was received.

Errors are `ConfigError` (a ValueError) and `ConfigTypeError` (a TypeError): the user's input, never a bug.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

import numpy as np

from xentlab.choices import Encoding, Reduction
from xentlab.errors import ConfigError, ConfigTypeError


def check_encoding(encoding: Any) -> str:
    if encoding not in Encoding.names():
        raise ConfigError(
            f"encoding must be one of {Encoding.names()}; received encoding={encoding!r}. Use 'sparse' for integer "
            f"class ids shaped like y_pred without its class axis, 'one_hot' for labels shaped like y_pred."
        )
    return Encoding(encoding).value


def check_bool(value: Any, arg: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ConfigTypeError(f"{arg} must be True or False; received {arg}={value!r} of type {type(value).__name__}.")
    return bool(value)


def check_real(value: Any, arg: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, Real) or not math.isfinite(value):
        raise ConfigTypeError(
            f"{arg} must be a finite number; received {arg}={value!r} of type {type(value).__name__}."
        )
    return float(value)


def check_label_smoothing(label_smoothing: Any) -> float:
    value = check_real(label_smoothing, "label_smoothing")
    if not 0.0 <= value < 1.0:
        raise ConfigError(
            f"label_smoothing must be in [0, 1); received label_smoothing={label_smoothing!r}. "
            f"0 disables smoothing; 0.1 is a common choice."
        )
    return value


FOCAL_GAMMA = 2.0  # the focal loss's focusing parameter unless one is given (Lin et al. 2017 found 2 best)


def check_gamma(gamma: Any) -> float:
    value = check_real(gamma, "gamma")
    if value < 0:
        raise ConfigError(f"gamma must be >= 0; received gamma={gamma!r}. Use 0 for plain cross-entropy, 2 is usual.")
    return value


def check_weights(value: Any, arg: str, *, strictly_positive: bool) -> float | list[float]:
    """A scalar or a list of per-class (per-label) weights, as plain floats so get_config() is JSON-friendly."""
    bound = "> 0" if strictly_positive else ">= 0"
    if isinstance(value, (str, bytes)) or not (isinstance(value, Real) or np.ndim(value) == 1):
        raise ConfigTypeError(
            f"{arg} must be a number or a list of numbers (one per class); received {arg}={value!r} "
            f"of type {type(value).__name__}."
        )
    values = [value] if isinstance(value, Real) else list(value)
    if not values:
        raise ConfigError(f"{arg} must not be empty; pass a number or one value per class.")
    checked = [check_real(v, arg) for v in values]
    if any(v <= 0 if strictly_positive else v < 0 for v in checked):
        raise ConfigError(f"{arg} must be {bound} (a scalar or one value per class); received {arg}={value!r}.")
    return checked[0] if isinstance(value, Real) else checked


def check_alpha(alpha: Any) -> float | list[float] | None:
    return None if alpha is None else check_weights(alpha, "alpha", strictly_positive=False)


def check_pos_weight(pos_weight: Any) -> float | list[float]:
    return check_weights(pos_weight, "pos_weight", strictly_positive=True)


def check_ignore_class(ignore_class: Any) -> int | None:
    if ignore_class is None:
        return None
    if isinstance(ignore_class, (bool, np.bool_)) or not isinstance(ignore_class, Integral):
        raise ConfigTypeError(
            f"ignore_class must be an integer class id or None; received ignore_class={ignore_class!r} of type "
            f"{type(ignore_class).__name__}. Use e.g. -1 for an n/a label outside the classes."
        )
    return int(ignore_class)


def check_reduction(reduction: Any) -> str:
    if reduction not in Reduction.names():
        raise ConfigError(
            f"reduction must be one of {Reduction.names()}; received reduction={reduction!r}. 'sum_over_batch_size' "
            f"is the mean over unmasked elements, 'none' returns the per-element losses."
        )
    return Reduction(reduction).value


def check_tau(tau: Any) -> float:
    value = check_real(tau, "tau")
    if value < 0:
        raise ConfigError(
            f"tau must be >= 0; received tau={tau!r}. 1 is the balanced softmax (Menon et al. 2021), 0 is plain "
            f"cross-entropy; set loss.tau to a value >= 0."
        )
    return value


def check_epsilon(epsilon: Any) -> float:
    value = check_real(epsilon, "epsilon")
    if value < -1:
        raise ConfigError(
            f"epsilon must be >= -1; received epsilon={epsilon!r}. Below -1 the loss of the true class rises "
            f"again as p_true nears 1, so training would reward doubt; 1 is the paper's default (loss.epsilon=1)."
        )
    return value


def check_needs_logits(from_logits: Any, fn: str) -> bool:
    if not check_bool(from_logits, "from_logits"):
        raise ConfigError(
            f"{fn} adds tau * log(prior) to the logits and needs from_logits=True; received from_logits=False. "
            f"Set loss.from_logits=true (a linear head), or use crossentropy for a softmax head."
        )
    return True


def check_priors(priors: Any) -> list[float]:
    """K priors > 0, normalised to sum 1 (the loss does not change: softmax ignores a shift of every logit)."""
    values = check_weights(priors, "priors", strictly_positive=True)
    if isinstance(values, float):
        raise ConfigTypeError(f"priors must be a list with one prior per class; received priors={priors!r}.")
    total = math.fsum(values)
    return [v / total for v in values]

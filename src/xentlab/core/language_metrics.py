"""How a language model is judged: bits per character and perplexity, from the mean negative log-likelihood.

`nll` (xentlab.core.metrics) is the mean -ln p(next byte) over the labelled positions, in nats. For the char LSTM
(one token per byte) bits per character is nll / ln 2 and perplexity exp(nll): the classification metrics over 256
byte classes (balanced accuracy, worst-class recall) say little about a language model.
"""

from __future__ import annotations

import math

LN2 = math.log(2.0)


def bits_per_char(nll: float) -> float:
    """Bits per character (byte) of a mean negative log-likelihood in nats."""
    return nll / LN2


def perplexity(nll: float) -> float:
    """Perplexity exp(nll) of a mean negative log-likelihood in nats (inf beyond float range)."""
    return math.exp(nll) if nll < 700 else math.inf


def language_model_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """The bpc of every nll in `metrics` (`nll` -> `bpc`, `val_nll` -> `val_bpc`, `test_nll` -> `test_bpc`) and,
    for `test_nll`, `test_perplexity`."""
    out = {}
    for prefix in ("", "val_", "test_"):
        if f"{prefix}nll" in metrics:
            out[f"{prefix}bpc"] = bits_per_char(float(metrics[f"{prefix}nll"]))
    if "test_nll" in metrics:
        out["test_perplexity"] = perplexity(float(metrics["test_nll"]))
    return out

"""Evaluation of a trained model on its test split: the `test_*` metrics, temperature-calibrated and post-hoc ones
as configured, and the model's outputs on a split (what calibration, post-hoc adjustment and the figures read)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from xentlab.core.targets import LabelContract


@dataclass(frozen=True)
class PosthocSkipped:
    """Why post-hoc adjustment was not computed. `loud`: the data cannot take it (say so on the terminal too);
    otherwise it is not worth it (a balanced split: the run's tag is enough)."""

    reason: str
    loud: bool


class Runner(Protocol):
    """How the model is run on the run's hardware (xentlab.runtime.loops.Loop)."""

    def evaluate(self, model, ds) -> dict[str, float]: ...

    def predict(self, model, features) -> np.ndarray: ...


@dataclass
class Evaluation:
    """A trained model and what evaluating it reads.

    Attributes:
        model: The compiled Keras model.
        bundle: Its data (xentlab.data.DataBundle): splits, class names, shot groups.
        labels: The run's label contract (xentlab.core.targets).
        runner: Evaluates and predicts on the run's hardware.
        generates_text: A language model, judged in bits per character too.
    """

    model: Any
    bundle: Any
    labels: LabelContract
    runner: Runner
    generates_text: bool = False

    def predict(self, split: str) -> np.ndarray:
        """The model's outputs on one split ("val" or "test"), in order."""
        from xentlab.core.pipeline import features_dataset

        return self.runner.predict(self.model, features_dataset(self.bundle, split, 256))


def evaluate_test(evaluation: Evaluation, test_ds, *, temperature: bool, posthoc_tau: float | None,
                  posthoc_tune: bool, shot_thresholds=None) -> tuple[dict[str, float], PosthocSkipped | None]:
    """The `test_*` metrics, with the calibrated ones when `temperature` and the post-hoc ones when `posthoc_tau` is
    set (`posthoc_metrics`); and why post-hoc adjustment was skipped, or None."""
    from xentlab.core.language_metrics import language_model_metrics
    from xentlab.core.metric_set import EVALUATED_METRICS  # here, not at the top: metrics imports TensorFlow

    test = evaluation.runner.evaluate(evaluation.model, test_ds)
    metrics = {f"test_{name}": float(test[name]) for name in EVALUATED_METRICS if name in test}
    if evaluation.generates_text:  # a language model is judged in bits per character
        metrics.update(language_model_metrics(metrics))
    if temperature:
        metrics.update(calibrated_metrics(evaluation))
    posthoc, skipped = posthoc_metrics(evaluation, tau=posthoc_tau, tune=posthoc_tune,
                                       shot_thresholds=shot_thresholds)
    return metrics | posthoc, skipped


def calibrated_metrics(evaluation: Evaluation) -> dict[str, float]:
    """Temperature scaling: T fitted on the validation outputs, the test metrics at T (xentlab.core.calibration)."""
    from xentlab.core.calibration import calibrate

    bundle = evaluation.bundle
    return calibrate(evaluation.predict("val"), bundle.y_val, evaluation.predict("test"), bundle.y_test,
                     evaluation.labels)


def posthoc_metrics(evaluation: Evaluation, *, tau: float | None, tune: bool,
                    shot_thresholds=None) -> tuple[dict[str, float], PosthocSkipped | None]:
    """Post-hoc logit adjustment by the training prior (xentlab.core.posthoc): `test_<metric>_posthoc` and the tau
    used; none with `tau` None. Where it cannot apply (labels that are not one per example, a class absent from
    training) or is not worth it (a balanced training split by `shot_thresholds`), no metric and the reason."""
    from xentlab.core.posthoc import SHOT_THRESHOLDS, balanced_reason, posthoc_evaluation, skip_reason
    from xentlab.core.weighting import label_counts

    bundle, labels = evaluation.bundle, evaluation.labels
    if tau is None:
        return {}, None
    counts = label_counts(bundle.y_train, labels)
    if reason := skip_reason(bundle.y_train, counts, bundle.class_names):
        return {}, PosthocSkipped(reason, loud=True)
    if reason := balanced_reason(counts, shot_thresholds or SHOT_THRESHOLDS):
        return {}, PosthocSkipped(reason, loud=False)
    return posthoc_evaluation(
        evaluation.predict("test"), bundle.y_test, counts, from_logits=labels.from_logits, tau=tau,
        ignore_class=labels.ignore_class, shot_groups=bundle.meta.get("shot_groups"),
        val_outputs=evaluation.predict("val") if tune else None, y_val=bundle.y_val if tune else None,
    ), None

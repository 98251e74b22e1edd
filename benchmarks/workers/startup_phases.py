"""Worker: the phases from a fresh interpreter to the first training step of the seed CNN on digits.

Usage: python -m benchmarks.workers.startup_phases
"""

from __future__ import annotations

import json
import sys
import time


def main() -> dict:
    t0 = time.perf_counter()
    import keras
    import tensorflow  # noqa: F401  (timed: the import is the phase)

    t1 = time.perf_counter()
    import hydra  # noqa: F401
    import mlflow  # noqa: F401

    t2 = time.perf_counter()
    from xentlab.data import load_data

    bundle = load_data("digits", val_fraction=0.15, test_fraction=0.15, split_seed=0)
    t3 = time.perf_counter()
    from xentlab.core.losses import CrossEntropy
    from xentlab.core.metric_set import build_metrics
    from xentlab.core.models import build_model, head_spec
    from xentlab.core.targets import LabelContract

    model = build_model("mnist_cnn", input_shape=bundle.input_shape,
                        head=head_spec(loss="crossentropy", from_logits=False, num_classes=10))
    model.compile(keras.optimizers.Adadelta(1.0), loss=CrossEntropy(), metrics=build_metrics(LabelContract(10)))
    t4 = time.perf_counter()
    model.train_on_batch(bundle.x_train[:128], bundle.y_train[:128])
    t5 = time.perf_counter()
    return {"import_tensorflow_keras_s": t1 - t0, "import_mlflow_hydra_s": t2 - t1, "data_s": t3 - t2,
            "model_build_compile_s": t4 - t3, "first_step_s": t5 - t4, "total_s": t5 - t0}


def parse(argv: list[str]) -> tuple:
    return ()


if __name__ == "__main__":
    print(json.dumps(main(*parse(sys.argv[1:]))))

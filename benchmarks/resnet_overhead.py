"""ResNet-20 (model=resnet, He et al. 2016) step time: xentlab (every metric, MLflow logging) against the same
model in a hand-written Keras `fit` with accuracy only, side by side in one run on CIFAR-sized generated images."""

from __future__ import annotations

import statistics
from pathlib import Path

from benchmarks.common import steady, xentlab_samples_per_s
from benchmarks.overhead import plain_samples_per_s

SIZES = {  # repetitions (interleaved), epochs, training images, image side, depth (smoke: the smallest ResNet)
    "smoke": dict(reps=1, epochs=2, images=48, side=8, depth=8),
    "quick": dict(reps=1, epochs=3, images=1024, side=32, depth=20),
    "full": dict(reps=3, epochs=3, images=2560, side=32, depth=20),
}
BATCH = 128  # He et al. 2016's mini-batch


def cifar_like(images: int, side: int, folder: Path) -> Path:
    """`images` training images of side x side x 3 in 10 classes (a brighter channel-row per class), as an .npz."""
    import numpy as np

    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, images)
    x = rng.uniform(0, 0.5, size=(images, side, side, 3)).astype("float32")
    x[np.arange(images), (y * side) // 10, :, y % 3] = 1.0
    path = folder / f"cifar_like_{images}_{side}.npz"
    np.savez(path, x_train=x, y_train=y)
    return path


def bench_resnet_overhead(size: str, folder: Path) -> dict:
    s = SIZES[size]
    data = cifar_like(s["images"], s["side"], folder)
    overrides = ["data=npz", f"data.path={data}", "model=resnet", f"model.depth={s['depth']}",
                 f"trainer.epochs={s['epochs']}", f"trainer.batch_size={BATCH}"]
    ours, plain = [], []
    for _ in range(s["reps"]):  # interleaved, so drifts in machine load hit both sides alike
        ours.append(steady(xentlab_samples_per_s(overrides, folder)))
        plain.append(steady(plain_samples_per_s(overrides, s["epochs"])))
    xentlab, keras_fit = statistics.median(ours), statistics.median(plain)
    return {"depth": s["depth"], "image_side": s["side"], "batch_size": BATCH,
            "xentlab_samples_per_s": ours, "plain_keras_samples_per_s": plain,
            "xentlab_step_ms": 1000 * BATCH / xentlab, "plain_keras_step_ms": 1000 * BATCH / keras_fit,
            "ratio": xentlab / keras_fit, "overrides": overrides}


def summary(results: dict) -> list[str]:
    r = results
    return [f"## ResNet-{r['depth']}: xentlab (every metric, MLflow) vs plain Keras fit (accuracy only)", "",
            f"{r['image_side']}x{r['image_side']}x3 images, batch {r['batch_size']}; median of steady epochs.", "",
            "| | samples/s | ms per step |", "|---|---|---|",
            f"| xentlab | {statistics.median(r['xentlab_samples_per_s']):.0f} | {r['xentlab_step_ms']:.0f} |",
            f"| plain Keras fit | {statistics.median(r['plain_keras_samples_per_s']):.0f} | "
            f"{r['plain_keras_step_ms']:.0f} |",
            f"| **ratio** (xentlab / plain, target >= 0.95) | **{r['ratio']:.3f}** | |"]

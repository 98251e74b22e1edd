"""data=image_folder: peak memory and samples/s streamed from disk vs the same images loaded into numpy, each
set-up in a fresh process (benchmarks.workers.image_feed)."""

from __future__ import annotations

import time
from pathlib import Path

from benchmarks.common import run_worker, steady

SIZES = {"smoke": dict(images=(30, 40), epochs=2), "quick": dict(images=(200, 2_000), epochs=2),
         "full": dict(images=(2_000, 20_000), epochs=3)}


def write_image_folder(folder: Path, n: int, classes: int = 10, size: int = 32) -> Path:
    """`n` grayscale PNGs of size x size in `classes` class folders (noise plus a bright row per class)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        label = i % classes
        pixels = rng.integers(0, 80, size=(size, size), dtype=np.uint8)
        pixels[2 + 2 * label] = 255
        (folder / f"c{label}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / f"c{label}" / f"{i}.png")
    return folder


def bench_image_folder(size: str, folder: Path) -> dict:
    out = {}
    for n in SIZES[size]["images"]:
        start = time.perf_counter()
        images = write_image_folder(folder / f"images_{n}", n)
        written_s = time.perf_counter() - start
        for mode in ("streamed", "numpy"):
            record = run_worker("image_feed", mode, images, SIZES[size]["epochs"], fresh=size != "smoke")
            out[f"{mode}/n={n}"] = {"mode": mode, "images": n, "image": "32x32 grayscale PNG", "write_s": written_s,
                                    "steady_samples_per_s": steady(record["samples_per_s"]), **record}
    return out


def summary(results: dict) -> list[str]:
    lines = ["## data=image_folder: streamed from disk vs loaded into numpy (32x32 grayscale PNG, MLP)", "",
             "| feed | images | load s | samples/s (steady) | peak RSS MB | RSS before the data MB |",
             "|---|---|---|---|---|---|"]
    for r in results.values():
        lines.append(f"| {r['mode']} | {r['images']} | {r['load_s']:.1f} | {r['steady_samples_per_s']:.0f} | "
                     f"{r['peak_rss_mb']:.0f} | {r['rss_before_data_mb']:.0f} |")
    return lines

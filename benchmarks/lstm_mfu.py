"""Char LSTM throughput in characters per second and as a share of this machine's matmul peak (MFU)."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from benchmarks.common import steady, text_slice, xentlab_samples_per_s

SIZES = {"smoke": dict(units=8, text_bytes=2_000, matmul=256), "quick": dict(units=64, text_bytes=20_000, matmul=2048),
         "full": dict(units=512, text_bytes=20_000, matmul=2048)}
VOCAB, SEQ_LEN = 256, 100


def matmul_peak_flops(size: int = 2048, reps: int = 10) -> float:
    """The best float32 matmul FLOP/s of `size` x `size` matrices over `reps` tries."""
    import tensorflow as tf

    a = tf.random.normal((size, size))
    b = tf.random.normal((size, size))
    tf.matmul(a, b).numpy()
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        tf.matmul(a, b).numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def bench_lstm_mfu(size: str, folder: Path, overhead: dict | None = None) -> dict:
    """From the overhead benchmark's char LSTM when it ran (same size, same width), else a run of its own."""
    s = SIZES[size]
    units, seq_len, layers = s["units"], SEQ_LEN, 2
    if overhead and "char_lstm" in overhead:
        samples_per_s = statistics.median(overhead["char_lstm"]["xentlab_samples_per_s"])
        seq_len, layers = overhead["char_lstm"]["seq_len"], overhead["char_lstm"]["layers"]
    else:
        text = text_slice(s["text_bytes"], folder)
        samples_per_s = steady(xentlab_samples_per_s(
            ["+experiment=shakespeare_lstm", f"data.path={text}", "trainer.epochs=2", "model.sample_length=1",
             f"model.lstm_units={units}", f"model.embedding_dim={units}", f"data.seq_len={seq_len}",
             f"data.stride={seq_len}"], folder))
    chars_per_s = samples_per_s * seq_len
    # Forward FLOPs per character: each LSTM layer 2*4*(d_in + h)*h, the output layer 2*h*V; a training step
    # is about 3x the forward pass (backward ~2x). Embedding lookups are not FLOPs.
    forward = layers * (2 * 4 * (units + units) * units) + 2 * units * VOCAB
    flops_per_char = 3 * forward
    peak = matmul_peak_flops(s["matmul"])
    return {"units": units, "layers": layers, "chars_per_s": chars_per_s, "flops_per_char": flops_per_char,
            "matmul_peak_flops": peak,
            "mfu": chars_per_s * flops_per_char / peak,
            "formula": f"3 * (layers * 2*4*(d_in+h)*h + 2*h*V) per char; peak = best {s['matmul']}^3 float32 matmul"}


def summary(r: dict) -> list[str]:
    return ["## Char LSTM throughput", "",
            f"width {r['units']}: chars/s {r['chars_per_s']:.0f}; FLOPs/char {r['flops_per_char']:.3g}; "
            f"matmul peak {r['matmul_peak_flops'] / 1e9:.1f} GFLOP/s; MFU {100 * r['mfu']:.1f}%"]

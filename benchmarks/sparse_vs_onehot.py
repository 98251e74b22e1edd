"""Sparse labels vs one-hot labels on sequence outputs (T=100): step time and peak memory, each set-up in a fresh
process (benchmarks.workers.sparse_labels)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.common import run_worker

SIZES = {"smoke": dict(windows=4, vocabs=(64,)), "quick": dict(windows=32, vocabs=(256, 32768)),
         "full": dict(windows=128, vocabs=(256, 32768))}
MODES = ("sparse", "one_hot_tfdata", "one_hot_numpy")


def bench_sparse_vs_onehot(size: str, folder: Path) -> dict:
    n = SIZES[size]["windows"]
    out = {}
    for vocab in SIZES[size]["vocabs"]:
        for mode in MODES:
            out[f"{mode}/V={vocab}"] = {"mode": mode, "vocab": vocab, "windows": n, "seq_len": 100,
                                        **run_worker("sparse_labels", mode, vocab, n, fresh=size != "smoke")}
    return out


def summary(results: dict) -> list[str]:
    lines = ["## Sparse vs one-hot labels on sequence outputs (T=100)", "",
             "| labels | V | step ms | peak RSS MB | RSS before the data MB |", "|---|---|---|---|---|"]
    for r in results.values():
        lines.append(f"| {r['mode']} | {r['vocab']} | {r['step_ms']:.1f} | {r['peak_rss_mb']:.0f} | "
                     f"{r['rss_before_data_mb']:.0f} |")
    return lines

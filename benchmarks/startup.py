"""Command to first training step: the phases of a fresh process (benchmarks.workers.startup_phases)."""

from __future__ import annotations

import time
from pathlib import Path

from benchmarks.common import run_worker


def bench_startup(size: str, folder: Path) -> dict:
    start = time.perf_counter()
    phases = run_worker("startup_phases", timeout=300)
    phases["process_wall_s"] = time.perf_counter() - start
    return phases


def summary(results: dict) -> list[str]:
    return ["## Command to first training step (s)", "", "| phase | s |", "|---|---|",
            *[f"| {k} | {v:.2f} |" for k, v in results.items()]]

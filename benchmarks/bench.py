"""Benchmarks (`make bench`, `python -m benchmarks.bench [--quick | --smoke]`): one JSON per benchmark and a
summary in outputs/bench/.

Every ratio compares two set-ups measured in the same run on the same machine; timings are medians over repetitions.
Each benchmark is a module of this folder (`bench_<name>(size, folder)` and `summary(results)`); the set-ups that
need a fresh process (memory high-water marks, start-up) run the workers in `benchmarks/workers/`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from benchmarks import (
    common,
    compare_scale,
    image_folder,
    long_tail_metrics_cost,
    lstm_mfu,
    metrics_cost,
    overhead,
    resnet_overhead,
    sparse_vs_onehot,
    startup,
    steps_per_execution,
    team_server,
)

# In the order they run: lstm_mfu reads the overhead benchmark's char LSTM when both run.
BENCHMARKS = {
    "overhead": overhead, "sparse_vs_onehot": sparse_vs_onehot, "steps_per_execution": steps_per_execution,
    "metrics_cost": metrics_cost, "long_tail_metrics_cost": long_tail_metrics_cost, "lstm_mfu": lstm_mfu,
    "startup": startup, "image_folder": image_folder, "compare_scale": compare_scale,
    "resnet_overhead": resnet_overhead, "team_server": team_server,
}
synthetic_sweep = compare_scale.synthetic_sweep  # the report's tests build their sweeps with it


def run_one(name: str, size: str, folder: Path, results: dict) -> dict:
    """Runs benchmark `name` at `size`; its results."""
    function = getattr(BENCHMARKS[name], f"bench_{name}")
    if name == "lstm_mfu":
        return function(size, folder, results.get("overhead"))
    return function(size, folder)


def summary(results: dict) -> str:
    """The markdown summary: the machine, then each benchmark's table in run order."""
    lines = ["# xentlab benchmarks", "", f"Machine: {common.machine()}", ""]
    for name, module in BENCHMARKS.items():
        if name in results:
            lines += [*module.summary(results[name]), ""]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__.split("\n\n")[0])
    sizes = parser.add_mutually_exclusive_group()
    sizes.add_argument("--quick", action="store_const", dest="size", const="quick",
                       help="small sizes: a quick run whose figures still mean something (a few minutes)")
    sizes.add_argument("--smoke", action="store_const", dest="size", const="smoke",
                       help="tiny sizes: checks that every benchmark runs (the test suite); figures mean nothing")
    parser.add_argument("--out", default="outputs/bench")
    parser.add_argument("--only", nargs="*", choices=list(BENCHMARKS), default=list(BENCHMARKS))
    parser.add_argument("--text", default=None, help="a text file for the LSTM benchmarks (e.g. tiny Shakespeare); "
                        "default: generated verse, so the benchmarks need nothing outside the repository")
    args = parser.parse_args(argv)
    args.size = args.size or "full"
    if args.text and not Path(args.text).is_file():
        parser.error(f"--text {args.text}: no such file")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.text:
        common.TEXT_SOURCE[:] = [Path(args.text)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only:
            start = time.perf_counter()
            results[name] = run_one(name, args.size, Path(tmp), results)
            record = {"benchmark": name, "size": args.size, "quick": args.size != "full", "machine": common.machine(),
                      "seconds": time.perf_counter() - start, "results": results[name]}
            (out / f"{name}.json").write_text(json.dumps(record, indent=2))
            print(f"{name}: {record['seconds']:.0f} s", flush=True)
    text = summary(results)
    (out / "summary.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

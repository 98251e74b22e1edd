"""Every benchmark runs, at tiny sizes (`--smoke`), and writes what it promises: one JSON per benchmark with the
machine, the figures, and every ratio's baseline measured in the same run; the summary has each one's section.
A broken benchmark fails here, not on the day someone re-measures the README's figures."""

from __future__ import annotations

import json
import statistics

import pytest
from benchmarks.bench import BENCHMARKS, main

# Three groups of about equal cost, so the test workers share them; lstm_mfu reads the overhead's char LSTM.
GROUPS = {"training": ("overhead", "lstm_mfu"),
          "steps and metrics": ("steps_per_execution", "metrics_cost", "long_tail_metrics_cost"),
          "processes and stores": ("startup", "sparse_vs_onehot", "image_folder", "compare_scale", "team_server"),
          "backbones": ("resnet_overhead",),
          "time to verdict": ("time_to_verdict",)}
SECTIONS = {"overhead": "## Overhead", "lstm_mfu": "## Char LSTM throughput", "steps_per_execution": "## steps_per",
            "metrics_cost": "## Metric cost: seed CNN", "long_tail_metrics_cost": "## Metric cost of the long-tail",
            "startup": "## Command to first training step",
            "sparse_vs_onehot": "## Sparse vs one-hot", "image_folder": "## data=image_folder",
            "compare_scale": "## xentlab-compare on 10 child runs", "resnet_overhead": "## ResNet-8: xentlab",
            "team_server": "## Team server: one epoch's log call", "time_to_verdict": "## Time to verdict"}


def test_the_groups_run_every_benchmark():
    assert sorted(b for group in GROUPS.values() for b in group) == sorted(BENCHMARKS) == sorted(SECTIONS)


def _check(name: str, results: dict) -> None:
    """What each benchmark must have measured: both sides of each ratio, from this run."""
    if name == "overhead":
        for case in results.values():  # xentlab vs plain Keras on the same data, same process
            assert case["xentlab_samples_per_s"] and case["plain_keras_samples_per_s"]
            assert case["ratio"] > 0 and case["ratio_vs_tfdata"] > 0
    elif name == "metrics_cost":
        assert len(results["today_samples_per_s"]) == len(results["every_samples_per_s"]) >= 3  # paired, alternated
        paired = sorted(e / t for e, t in zip(results["every_samples_per_s"], results["today_samples_per_s"],
                                              strict=True))
        assert results["ratio"] == pytest.approx(paired[len(paired) // 2])
        assert {"today", "every"} < set(results["step_cpu_us"])
    elif name == "long_tail_metrics_cost":  # the new metrics against the current set, paired
        assert len(results["current_samples_per_s"]) == len(results["long_tail_samples_per_s"]) >= 3
        assert set(results["added_metrics"]) == {"classwise_ece", "adaptive_ece", "many_shot_accuracy",
                                                 "medium_shot_accuracy", "few_shot_accuracy"}
        assert results["ratio"] == pytest.approx(statistics.median(
            [n / c for n, c in zip(results["long_tail_samples_per_s"], results["current_samples_per_s"],
                                   strict=True)]))
    elif name == "startup":
        assert {"import_tensorflow_keras_s", "import_mlflow_hydra_s", "data_s", "first_step_s", "total_s"} <= set(
            results)
        assert all(v > 0 for v in results.values())
        assert results["total_s"] >= results["first_step_s"] + results["data_s"]
    elif name == "image_folder":
        feeds = {(r["mode"], r["images"]) for r in results.values()}
        assert len({mode for mode, _ in feeds}) == 2 and len({n for _, n in feeds}) == 2  # streamed vs numpy, 2 sizes
    elif name == "compare_scale":  # both sweep shapes from SQLite, one through a server (the smoke size starts one)
        assert results["child_runs"] == 10 and set(results["cases"]) == {"many_variants", "many_seeds"}
        assert all(c["sqlite_s"] > 0 for c in results["cases"].values()) and results["server_s"] > 0
    elif name == "team_server":  # the smoke size logs to a local file only (no PostgreSQL in the fast suite)
        assert results["logging"]["sqlite_file"]["calls"] == results["epochs_logged"] == 5
        assert results["logging"]["sqlite_file"]["median_ms"] > 0
    elif name == "sparse_vs_onehot":
        assert {r["mode"] for r in results.values()} == {"sparse", "one_hot_tfdata", "one_hot_numpy"}
    elif name == "steps_per_execution":
        assert any(k.startswith("xentlab/") for k in results) and "tf.data/cache+prefetch" in results
    elif name == "resnet_overhead":  # both sides measured in this run, the step times their inverse
        assert results["xentlab_samples_per_s"] and results["plain_keras_samples_per_s"]
        assert results["ratio"] == pytest.approx(results["plain_keras_step_ms"] / results["xentlab_step_ms"])
    elif name == "lstm_mfu":
        assert 0 < results["mfu"] and results["chars_per_s"] > 0
    elif name == "time_to_verdict":  # every row has its baseline from the same run, and the load it ran under
        lstm, epoch, sweep = results["char_lstm"], results["one_batch_epoch"], results["long_tail"]
        assert lstm["samples_per_s"]["xentlab"] and lstm["samples_per_s"]["plain_keras"] and lstm["load"]
        assert len(epoch["runs_ms"]["synchronous"]) == len(epoch["runs_ms"]["asynchronous"]) == 2
        assert sweep["sequential"]["wall_s"] > 0 and sweep["preset"]["wall_s"] > 0
        # The preset's speed-ups (parallel jobs, asynchronous logging, sparser validation) change no verdict.
        assert len(sweep["preset"]["verdicts"]) == 2 and sweep["same_verdicts"], sweep


# A ResNet traced twice (xentlab and plain Keras): about 18 s of CPU even at depth 8; two sweeps in fresh processes;
# the steps/metrics and processes/stores groups took 67 s and 75 s on 2 cores (make test keeps "training").
SLOW_GROUPS = {"backbones", "time to verdict", "steps and metrics", "processes and stores"}


@pytest.mark.parametrize("group", [pytest.param(g, marks=pytest.mark.slow) if g in SLOW_GROUPS else g for g in GROUPS])
def test_every_benchmark_runs_at_tiny_sizes(group, tmp_path):
    names = GROUPS[group]
    main(["--smoke", "--only", *names, "--out", str(tmp_path)])
    summary = (tmp_path / "summary.md").read_text()
    for name in names:
        record = json.loads((tmp_path / f"{name}.json").read_text())
        assert record["benchmark"] == name and record["size"] == "smoke" and record["seconds"] > 0
        assert {"python", "cpus", "platform"} <= set(record["machine"])
        _check(name, record["results"])
        assert SECTIONS[name] in summary

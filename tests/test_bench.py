"""The benchmarks run (quick mode) and write what they promise: one JSON per benchmark with the machine, the
figures, and every ratio's baseline measured in the same run; the summary names each benchmark."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

import pytest


def _bench(tmp_path, *names: str) -> dict[str, dict]:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench", "--quick", "--only", *names, "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    records = {name: json.loads((tmp_path / f"{name}.json").read_text()) for name in names}
    for name, record in records.items():
        assert record["benchmark"] == name and record["quick"] is True and record["seconds"] > 0
        assert {"python", "cpus", "platform"} <= set(record["machine"])
    return records


def test_startup_benchmark_times_every_phase(tmp_path):
    phases = _bench(tmp_path, "startup")["startup"]["results"]
    assert {"import_tensorflow_keras_s", "import_mlflow_hydra_s", "data_s", "first_step_s", "total_s"} <= set(phases)
    assert all(v > 0 for v in phases.values())
    assert phases["total_s"] >= phases["first_step_s"] + phases["data_s"]
    assert "Command to first training step" in (tmp_path / "summary.md").read_text()


@pytest.mark.slow
def test_comparative_benchmarks_measure_their_baseline_in_the_same_run(tmp_path):
    records = _bench(tmp_path, "overhead", "metrics_cost", "long_tail_metrics_cost", "image_folder", "compare_scale")
    for case in records["overhead"]["results"].values():  # xentlab vs plain Keras on the same data, same process
        assert case["xentlab_samples_per_s"] and case["plain_keras_samples_per_s"]
    cost = records["metrics_cost"]["results"]
    assert len(cost["today_samples_per_s"]) == len(cost["every_samples_per_s"]) >= 3  # paired fits, alternated
    paired = sorted(e / t for e, t in zip(cost["every_samples_per_s"], cost["today_samples_per_s"], strict=True))
    assert cost["ratio"] == pytest.approx(paired[len(paired) // 2] if len(paired) % 2 else
                                          (paired[len(paired) // 2 - 1] + paired[len(paired) // 2]) / 2)
    added = records["long_tail_metrics_cost"]["results"]  # the new metrics against the current set, paired
    assert len(added["current_samples_per_s"]) == len(added["long_tail_samples_per_s"]) >= 3
    assert set(added["added_metrics"]) == {"classwise_ece", "adaptive_ece", "many_shot_accuracy",
                                           "medium_shot_accuracy", "few_shot_accuracy"}
    assert added["ratio"] == pytest.approx(statistics.median(
        [n / c for n, c in zip(added["long_tail_samples_per_s"], added["current_samples_per_s"], strict=True)]))
    feeds = {(r["mode"], r["images"]) for r in records["image_folder"]["results"].values()}
    assert len({mode for mode, _ in feeds}) == 2 and len({n for _, n in feeds}) == 2  # streamed vs numpy, 2 sizes
    scale = records["compare_scale"]["results"]
    assert scale["child_runs"] == 100 and scale["sqlite_s"] > 0 and scale["server_s"] > 0
    summary = (tmp_path / "summary.md").read_text()
    assert "Metric cost" in summary and "long-tail metrics" in summary and "image_folder" in summary

"""The benchmark harness runs (quick mode, cheapest benchmark) and writes its JSON and summary."""

from __future__ import annotations

import json
import subprocess
import sys


def test_quick_startup_benchmark_writes_json_and_summary(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "xentlab.bench", "--quick", "--only", "startup", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((tmp_path / "startup.json").read_text())
    phases = record["results"]
    assert phases["total_s"] > 0 and phases["first_step_s"] > 0 and phases["import_tensorflow_keras_s"] > 0
    assert phases["total_s"] >= phases["first_step_s"] + phases["data_s"]
    assert "Command to first training step" in (tmp_path / "summary.md").read_text()


def test_metrics_cost_summary_rows_report_both_rates_and_the_ratios():
    from xentlab.bench import summary

    result = {"today_metrics": ["accuracy", "auc", "nll"], "every_metrics": ["accuracy"] * 8,
              "today_samples_per_s": [1000.0, 1100.0, 900.0], "every_samples_per_s": [950.0, 990.0, 800.0],
              "ratio": 0.9, "ratio_cpu": 0.95, "ratio_best": 0.97, "ratio_best_cpu": 0.96,
              "step_cpu_us": {"today": 100.0, "every": 125.0},
              "step_ratio": {"every": 0.8}}
    text = summary({"metrics_cost": result})
    assert "| accuracy, auc, nll | 1000 | 1 | 1 |" in text
    assert "| every metric (8) | 950 | 0.900 / 0.950 | 0.970 / 0.960 |" in text
    assert "| today | 100 | 1.000 |" in text and "| every | 125 | 0.800 |" in text

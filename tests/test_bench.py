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

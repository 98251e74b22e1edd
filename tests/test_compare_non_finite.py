"""`xentlab-compare` on runs that logged NaN or infinite values: shown as such, left out of means, counts and tests,
and named. The sweep is written into a real SQLite store, which keeps inf as the largest float (1.797e308)."""

from __future__ import annotations

import math
import re

from benchmarks.compare_scale import synthetic_sweep

from xentlab.cli.compare import main
from xentlab.report.compare import write_report


def _run(variant: str, seed: int, val_nll: float) -> dict:
    metrics = {"val_nll": val_nll, "val_loss": val_nll, "test_nll": 0.6, "val_accuracy": 0.9}
    return {"variant": variant, "seed": seed, "metrics": metrics}


def test_non_finite_values_are_shown_as_such_counted_out_and_named(tmp_path, store, capsys):
    runs = [_run("loss=base", s, v) for s, v in enumerate([0.50, 0.52, 0.51])]
    runs += [_run("loss=inf_seed", s, v) for s, v in enumerate([0.40, math.inf, 0.42])]
    runs += [_run("loss=nan_seed", s, v) for s, v in enumerate([0.50, math.nan])]
    runs += [_run("loss=all_inf", s, math.inf) for s in range(2)]
    synthetic_sweep(store, runs, baseline="loss=base")
    main(["--tracking-uri", store, "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert not re.search(r"\d{20}", out)  # before: a mean with the largest float, printed with its 308 digits

    validation = out.split("#### Validation")[1].split("#### Test")[0].splitlines()
    header = next(line for line in validation if line.startswith("| variant")).split(" | ")
    cell = {line.split(" | ")[0][2:]: line.split(" | ")[header.index("val_nll")] for line in validation
            if line.startswith("| loss=")}
    assert cell["loss=nan_seed"] == "0.5000 (1 of 2 runs)"  # before: n=2, 0.5000 ± 0.0000
    assert cell["loss=inf_seed"].strip("*") == "0.4100 ± 0.0141 (2 of 3 runs)"
    assert cell["loss=all_inf"] == "inf"
    assert "**Left out** of the means, counts and tests" in out
    assert "`loss=inf_seed,trainer.seed=1` (" in out and "val_nll=inf" in out
    assert "`loss=nan_seed,trainer.seed=1` (" in out and "val_nll=nan" in out

    report = write_report(store, parent_run_id=_parent(store), out_dir=tmp_path / "again")
    diff = {(c.variant, c.metric): c.diff for c in report.comparisons}
    assert diff[("loss=inf_seed", "val_nll")].test == "paired" and diff[("loss=inf_seed", "val_nll")].n == 2
    # Nothing finite to compare: no difference is claimed for it (none computed, or a non-finite one).
    assert ("loss=all_inf", "val_nll") not in diff or not math.isfinite(diff[("loss=all_inf", "val_nll")].mean)
    assert "loss=all_inf" not in {c.variant for c in report.comparisons if c.verdict in ("better", "worse")}


def _parent(uri: str) -> str:
    from mlflow.tracking import MlflowClient

    from xentlab.report.query import find_parent
    from xentlab.tracking.store import setup_experiment

    return find_parent(MlflowClient(uri), [setup_experiment(uri, "xentlab")], "latest")

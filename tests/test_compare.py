"""The comparison report on real SQLite stores of synthetic sweeps with known distributions, checked against
scipy's t-tests; its statistics functions directly; and the faults of `xentlab-compare`."""

from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
from benchmarks.compare_scale import synthetic_sweep
from mlflow.tracking import MlflowClient
from scipy import stats

from xentlab.cli.compare import main
from xentlab.report.compare import write_report
from xentlab.report.query import fetch_children
from xentlab.report.statistics import compare_runs, direction, holm, paired_difference, verdict, welch_difference
from xentlab.report.variants import find_variant

SEEDS = range(6)


def _runs(variant: str, val_nll: np.ndarray, *, seeds=SEEDS, loss="crossentropy", accuracy=None, extra=None):
    """Child-run specs of one variant: one per seed, val_nll as given, the other metrics derived."""
    specs = []
    for i, seed in enumerate(seeds):
        metrics = {"val_loss": float(val_nll[i]) + 0.1, "val_nll": float(val_nll[i]),
                   "test_nll": float(val_nll[i]) + 0.01, "test_loss": float(val_nll[i]) + 0.11,
                   "val_accuracy": float(accuracy[i]) if accuracy is not None else 0.9, "val_ece": 0.05,
                   **(extra or {})}
        specs.append({"variant": variant, "seed": seed, "metrics": metrics, "params": {"loss.name": loss}})
    return specs


@pytest.fixture
def sweep(store):
    """baseline N(0.50, 0.02); `same` the same distribution (other draws); `shifted` N(0.45, 0.02), more
    accurate; `worse` N(0.56, 0.02); `other_seeds` ran seeds 10-15 (Welch)."""
    rng = np.random.default_rng(7)
    draw = lambda mu: rng.normal(mu, 0.02, len(SEEDS))  # noqa: E731
    runs = (_runs("loss=crossentropy", draw(0.50), accuracy=rng.normal(0.90, 0.01, 6))
            + _runs("loss=same", draw(0.50), accuracy=rng.normal(0.90, 0.01, 6))
            + _runs("loss=shifted", draw(0.45), accuracy=rng.normal(0.95, 0.01, 6))
            + _runs("loss=worse", draw(0.56))
            + _runs("loss=other_seeds", draw(0.50), seeds=range(10, 16)))
    return store, synthetic_sweep(store, runs)


def _values(uri: str, parent: str, metric: str) -> dict[str, dict[str, float]]:
    """{variant: {seed: value}} read back from the child runs, independently of the report."""
    client = MlflowClient(uri)
    out: dict[str, dict[str, float]] = {}
    for run in client.search_runs([client.get_run(parent).info.experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{parent}'", max_results=5000):
        variant = run.info.run_name.rsplit(",trainer.seed=", 1)[0]
        out.setdefault(variant, {})[run.data.params["trainer.seed"]] = run.data.metrics[metric]
    return out


# ---------------------------------------------------------------------------------------------- pure statistics
def test_paired_and_welch_equal_scipy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 0.3, 7), rng.normal(0.8, 0.5, 7)
    ref = stats.ttest_rel(a, b)
    ci = ref.confidence_interval(0.95)
    d = paired_difference(a, b)
    assert d.test == "paired" and d.n == 7
    assert (d.mean, d.ci_low, d.ci_high, d.p) == pytest.approx((np.mean(a - b), ci.low, ci.high, ref.pvalue), rel=1e-9)

    b5 = rng.normal(0.8, 0.5, 5)
    ref = stats.ttest_ind(a, b5, equal_var=False)
    ci = ref.confidence_interval(0.95)
    w = welch_difference(a, b5)
    assert w.test == "welch" and (w.n, w.n_baseline) == (7, 5)
    assert (w.mean, w.ci_low, w.ci_high, w.p) == pytest.approx((a.mean() - b5.mean(), ci.low, ci.high, ref.pvalue),
                                                               rel=1e-9)


def test_pairing_uses_the_common_seeds_else_welch_else_untested():
    base = {"0": 1.0, "1": 2.0, "2": 3.5, "3": 9.0}
    paired = compare_runs({"1": 2.5, "2": 3.0, "0": 1.5, "7": 100.0}, base)  # seeds 0, 1, 2 in common
    ref = stats.ttest_rel([1.5, 2.5, 3.0], [1.0, 2.0, 3.5])
    assert paired.test == "paired" and paired.n == 3 and paired.p == pytest.approx(ref.pvalue)
    welch = compare_runs({"5": 1.0, "6": 2.0}, base)
    assert welch.test == "welch" and welch.p == pytest.approx(
        stats.ttest_ind([1.0, 2.0], list(base.values()), equal_var=False).pvalue)
    single = compare_runs({"0": 1.0}, base)
    assert single.test == "untested" and math.isnan(single.p) and single.mean == pytest.approx(1.0 - 15.5 / 4)
    assert verdict(single, float("nan"), "min") == "untested"
    nan_dropped = compare_runs({"0": 1.0, "1": float("nan"), "2": 3.0}, {"0": 1.0, "1": 2.0, "2": 3.5})
    assert nan_dropped.test == "paired" and nan_dropped.n == 2
    identical = paired_difference([0.3, 0.4, 0.5], [0.3, 0.4, 0.5])  # deterministic runs: no spread at all
    assert identical.p == 1.0 and verdict(identical, 1.0, "min") == "no difference"


def test_holm_matches_a_hand_computation():
    # sorted 0.01, 0.03, 0.04 of m = 3: 3*0.01 = 0.03; max(0.03, 2*0.03) = 0.06; max(0.06, 1*0.04) = 0.06
    assert holm([0.04, 0.01, float("nan"), 0.03]) == pytest.approx([0.06, 0.03, float("nan"), 0.06], nan_ok=True)
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # min(1, ...)
    assert holm([]) == []


def test_direction_of_every_ranked_metric():
    assert [direction(m) for m in ("val_nll", "test_ece", "val_brier", "best_val_loss")] == ["min"] * 4
    assert {direction(f"{p}{m}") for p in ("val_", "test_") for m in (
        "accuracy", "auc", "balanced_accuracy", "macro_f1", "worst_class_recall")} == {"max"}
    assert direction("epochs") is None and direction("samples_per_s") is None


def test_variant_names_match_in_any_order():
    variants = ["labels=sparse,loss=focal", "labels=one_hot,loss=focal", "weighting.weights=[1,2],loss=x"]
    assert find_variant(variants, "loss=focal,labels=sparse") == "labels=sparse,loss=focal"
    assert find_variant(variants, "loss=focal,labels=one_hot,trainer.seed=3") == "labels=one_hot,loss=focal"
    assert find_variant(variants, "loss=x,weighting.weights=[1,2]") == "weighting.weights=[1,2],loss=x"
    assert find_variant(variants, "loss=focal") is None


# ---------------------------------------------------------------------------------------------- the report
def test_report_statistics_verdicts_and_bold_follow_the_data(tmp_path, sweep):
    uri, parent = sweep
    report = write_report(uri, parent_run_id=parent, out_dir=tmp_path / "r")
    assert report.baseline == "loss=crossentropy"  # first launched
    got = {(c.variant, c.metric): c for c in report.comparisons}
    verdicts = {v: got[(v, "val_nll")].verdict for v in ("loss=same", "loss=shifted", "loss=worse",
                                                         "loss=other_seeds")}
    assert verdicts == {"loss=same": "no difference", "loss=shifted": "better", "loss=worse": "worse",
                        "loss=other_seeds": "no difference"}
    assert got[("loss=shifted", "val_accuracy")].verdict == "better"  # higher is better there

    # Every number against scipy, from the child runs' values read back independently; Holm by hand.
    values = _values(uri, parent, "val_nll")
    base = values["loss=crossentropy"]
    raw = {}
    for variant in ("loss=same", "loss=shifted", "loss=worse"):
        seeds = sorted(base)
        a, b = [values[variant][s] for s in seeds], [base[s] for s in seeds]
        ref = stats.ttest_rel(a, b)
        ci = ref.confidence_interval(0.95)
        c = got[(variant, "val_nll")]
        assert c.diff.test == "paired" and c.diff.n == 6
        assert (c.diff.mean, c.diff.ci_low, c.diff.ci_high, c.diff.p) == pytest.approx(
            (np.mean(np.subtract(a, b)), ci.low, ci.high, ref.pvalue), rel=1e-9)
        raw[variant] = ref.pvalue
    welch = stats.ttest_ind(list(values["loss=other_seeds"].values()), list(base.values()), equal_var=False)
    c = got[("loss=other_seeds", "val_nll")]
    assert c.diff.test == "welch" and c.diff.p == pytest.approx(welch.pvalue, rel=1e-9)
    assert (c.diff.ci_low, c.diff.ci_high) == pytest.approx(tuple(welch.confidence_interval(0.95)), rel=1e-9)
    raw["loss=other_seeds"] = welch.pvalue
    order = sorted(raw, key=raw.get)
    running, expected = 0.0, {}
    for rank, variant in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * raw[variant]))
        expected[variant] = running
    for variant, p_holm in expected.items():
        assert got[(variant, "val_nll")].p_holm == pytest.approx(p_holm, rel=1e-9)

    # Bold: only what is significantly better than the baseline; the table lists the baseline first.
    primary = report.markdown.split("#### Validation")[0]
    lines = {line.split(" | ")[0].lstrip("| "): line for line in primary.splitlines() if line.startswith("| loss=")}
    shifted_nll = f"{np.mean(list(values['loss=shifted'].values())):.4f}"
    assert f"**{shifted_nll} ±" in lines["loss=shifted"]
    assert "**" not in lines["loss=same"] and "**" not in lines["loss=worse"]
    assert "**" not in lines["loss=crossentropy (baseline)"]
    assert report.markdown.index("loss=crossentropy (baseline)") < report.markdown.index("| loss=shifted")
    assert "significantly better than the baseline" in report.markdown
    assert "untested" not in report.markdown.lower().replace("costs: shown, not tested", "")

    # The CSVs carry the same numbers; the charts are logged with the report.
    rows = list(csv.DictReader(open(tmp_path / "r" / "comparisons.csv")))
    row = next(r for r in rows if r["variant"] == "loss=shifted" and r["metric"] == "val_nll")
    assert float(row["p_holm"]) == pytest.approx(expected["loss=shifted"]) and row["verdict"] == "better"
    logged = {a.path for a in MlflowClient(uri).list_artifacts(parent, "report")}
    assert {"report/report.md", "report/report.csv", "report/comparisons.csv", "report/val_nll_vs_baseline.png",
            "report/val_nll_curves.png", "report/report.html"} <= logged


def test_identical_variant_is_not_called_better_or_worse_beyond_alpha():
    """300 sweeps of three variants, paired by seed: one with the baseline's very values is never called
    better or worse; one with its distribution (other draws) at most at the alpha rate (Holm over the two
    variants keeps it <= 0.05, +0.03 for sampling noise); one shifted by 5 sd always better."""
    from xentlab.report.compare import compare_variants

    rng = np.random.default_rng(11)
    called = 0
    for _ in range(300):
        base = rng.normal(0.5, 0.03, 6)
        seeded = {v: [(str(s), {"val_nll": float(x)}) for s, x in enumerate(values)] for v, values in {
            "base": base, "copy": base.copy(), "same": rng.normal(0.5, 0.03, 6),
            "shifted": rng.normal(0.35, 0.03, 6)}.items()}
        got = {c.variant: c.verdict for c in compare_variants(seeded, "base", ["val_nll"])}
        assert got["copy"] == "no difference" and got["shifted"] == "better"
        called += got["same"] != "no difference"
    assert called / 300 <= 0.08, called


def test_baseline_from_the_preset_tag_or_the_flag_and_a_wrong_one_lists_the_variants(tmp_path, store, capsys):
    rng = np.random.default_rng(1)
    runs = _runs("loss=a", rng.normal(0.5, 0.02, 6)) + _runs("loss=b", rng.normal(0.4, 0.02, 6))
    parent = synthetic_sweep(store, runs, baseline="loss=b")
    report = write_report(store, parent_run_id=parent, out_dir=tmp_path / "tag")
    assert report.baseline == "loss=b" and "named by the sweep preset" in report.markdown
    assert {(c.variant, c.metric): c.verdict for c in report.comparisons}[("loss=a", "val_nll")] == "worse"
    # loss=a is significantly worse than the baseline and is the only other variant: the baseline is bold.
    baseline_line = next(line for line in report.markdown.splitlines() if line.startswith("| loss=b (baseline)"))
    assert "**" in baseline_line

    main(["--tracking-uri", store, "--baseline", "loss=a", "--out", str(tmp_path / "flag")])
    assert "Baseline: `loss=a` (chosen with --baseline)" in capsys.readouterr().out
    with pytest.raises(SystemExit) as err:
        main(["--tracking-uri", store, "--baseline", "loss=c", "--out", str(tmp_path / "bad")])
    message = capsys.readouterr().err
    assert err.value.code == 2 and "xentlab: ReportError" in message and "Traceback" not in message
    assert "'loss=c' names no variant" in message and "loss=a" in message and "loss=b" in message


def test_one_run_per_variant_is_reported_untested_with_how_to_add_seeds(tmp_path, store):
    runs = _runs("loss=a", np.array([0.5]), seeds=[0]) + _runs("loss=b", np.array([0.3]), seeds=[0])
    report = write_report(store, parent_run_id=synthetic_sweep(store, runs), out_dir=tmp_path)
    assert {c.verdict for c in report.comparisons} == {"untested"}
    assert "Differences are untested" in report.markdown and "make sweep SWEEP=seeds" in report.markdown
    assert "trainer.seed=0,1,2" in report.markdown and "**" not in report.markdown.split("How to read it")[0]


def test_losses_on_different_scales_are_shown_but_not_ranked(tmp_path, store):
    rng = np.random.default_rng(2)
    mixed = _runs("loss=crossentropy", rng.normal(0.5, 0.01, 6)) + _runs(
        "loss=focal", rng.normal(0.2, 0.01, 6), loss="focal")
    report = write_report(store, parent_run_id=synthetic_sweep(store, mixed), out_dir=tmp_path / "mixed")
    ranked = {c.metric for c in report.comparisons}
    assert "val_nll" in ranked and not ranked & {"val_loss", "best_val_loss", "test_loss"}
    assert "not ranked: the variants train different losses" in report.markdown
    validation = report.markdown.split("#### Validation")[1].split("#### Test")[0].splitlines()
    header = next(line for line in validation if line.startswith("| variant")).split(" | ")
    focal = next(line for line in validation if line.startswith("| loss=focal")).split(" | ")
    val_loss = list(_values(store, report.parent_run_id, "val_loss")["loss=focal"].values())
    shown = f"{np.mean(val_loss):.4f} ± {np.std(val_loss, ddof=1):.4f}"
    assert focal[header.index("val_loss")] == shown  # shown, though far lower: never bold
    assert focal[header.index("val_nll")].startswith("**")  # val_nll is on one scale: ranked
    same = _runs("loss.from_logits=true", rng.normal(0.5, 0.01, 6)) + _runs(
        "loss.from_logits=false", rng.normal(0.3, 0.01, 6))
    report = write_report(store, parent_run_id=synthetic_sweep(store, same), out_dir=tmp_path / "same")
    assert {"val_loss", "best_val_loss", "test_loss"} <= {c.metric for c in report.comparisons}


def test_missing_metrics_show_a_dash_and_reliability_curves_are_charted(tmp_path, store):
    diagram = {"num_bins": 15, "edges": list(np.linspace(0, 1, 16)), "count": [0] * 10 + [5, 10, 20, 40, 25],
               "accuracy": [None] * 10 + [0.6, 0.7, 0.8, 0.9, 0.97],
               "confidence": [None] * 10 + [0.69, 0.75, 0.85, 0.92, 0.98], "ece": 0.04}
    rng = np.random.default_rng(3)
    runs = _runs("loss=a", rng.normal(0.5, 0.02, 3), seeds=range(3)) + _runs(
        "loss=b", rng.normal(0.5, 0.02, 3), seeds=range(3), extra={"test_macro_f1": 0.8})
    parent = synthetic_sweep(store, runs, reliability={"loss=a": diagram})  # loss=b lacks it: skipped
    report = write_report(store, parent_run_id=parent, out_dir=tmp_path)
    test = report.markdown.split("#### Test")[1].split("#### Cost")[0].splitlines()
    split = lambda line: [cell.strip(" |") for cell in line.split(" | ")]  # noqa: E731
    header = split(next(line for line in test if line.startswith("| variant")))
    cells = {split(line)[0]: split(line)[header.index("test_macro_f1")] for line in test if line.startswith("| loss=")}
    assert cells == {"loss=a": "-", "loss=b": "0.8000 ± 0.0000"}
    assert "test_auc" not in header  # no run logged it: no empty column
    assert (tmp_path / "reliability.png").is_file()
    assert "report/reliability.png" in {a.path for a in MlflowClient(store).list_artifacts(parent, "report")}


def test_every_page_of_children_is_read(tmp_path, store):
    rng = np.random.default_rng(4)
    runs = [spec for v in range(12) for spec in _runs(f"loss=v{v:02d}", rng.normal(0.5, 0.02, 5), seeds=range(5))]
    parent = synthetic_sweep(store, runs, epochs=2)
    client = MlflowClient(store)
    assert len(client.search_runs([client.get_run(parent).info.experiment_id], "", max_results=25)) == 25
    assert len(fetch_children(client, client.get_run(parent).info.experiment_id, parent, page_size=25)) == 60
    report = write_report(store, parent_run_id=parent, out_dir=tmp_path, page_size=25)  # 3 pages
    assert sum(r["n"] for r in report.rows) == 60 and len(report.rows) == 12
    assert {r["epochs"] for r in report.rows} == {2.0}


@pytest.mark.slow
def test_more_than_a_default_page_of_children(tmp_path, store):
    """1,001 children: more than MLflow's default page of 1,000 runs."""
    runs = [{"variant": f"loss=v{i % 7}", "seed": i // 7, "metrics": {"val_nll": 0.5 + 0.001 * (i % 13)}}
            for i in range(1001)]
    parent = synthetic_sweep(store, runs, epochs=1)
    report = write_report(store, parent_run_id=parent, out_dir=tmp_path)
    assert sum(r["n"] for r in report.rows) == 1001


# ---------------------------------------------------------------------------------------------- faults
def test_no_store_fails_fast_and_creates_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    start = time.time()
    with pytest.raises(SystemExit) as err:
        main([])
    message = capsys.readouterr().err
    assert err.value.code == 2
    assert f"no tracking store at {tmp_path.resolve() / 'outputs' / 'mlflow.db'}" in message
    assert "--tracking-uri" in message and "MLFLOW_TRACKING_URI" in message
    assert not (tmp_path / "outputs").exists()
    assert time.time() - start < 5
    with pytest.raises(SystemExit):
        main(["--tracking-uri", f"sqlite:///{tmp_path / 'elsewhere.db'}"])
    assert "from --tracking-uri" in capsys.readouterr().err and not (tmp_path / "elsewhere.db").exists()


def test_a_sweep_id_with_quotes_is_a_clear_error(sweep, capsys):
    uri, _ = sweep
    for bad in ("abc' or '1'='1", 'x"y', "a b"):
        with pytest.raises(SystemExit) as err:
            main(["--tracking-uri", uri, "--sweep", bad])
        assert err.value.code == 2
        message = capsys.readouterr().err
        assert "--sweep must be 'latest', a sweep id or a run id" in message and repr(bad) in message
        assert "Traceback" not in message and "MlflowException" not in message


def test_histories_are_read_in_bulk_and_equal_the_per_run_reads(sweep, monkeypatch):
    """One request per 100 runs on a SQL store; the same values as get_metric_history run by run, which is
    also what a bulk answer that may be cut (at the value limit) falls back to."""
    import xentlab.report.query as compare

    uri, parent = sweep
    client = MlflowClient(uri)
    ids = [r.info.run_id for r in fetch_children(client, client.get_run(parent).info.experiment_id, parent)]
    reference = {i: sorted((m.step, m.value) for m in client.get_metric_history(i, "val_loss")) for i in ids}
    calls = []
    original = MlflowClient.get_metric_history

    def counting(self, run_id, key):  # counts, then reads the store as usual
        calls.append(run_id)
        return original(self, run_id, key)

    monkeypatch.setattr(MlflowClient, "get_metric_history", counting)
    assert compare.read_histories(client, ids, "val_loss") == reference and calls == []
    assert {len(h) for h in reference.values()} == {5}  # 5 epochs each
    monkeypatch.setattr(compare, "BULK_LIMIT", 5)  # every bulk answer now looks cut
    assert compare.read_histories(client, ids, "val_loss") == reference and sorted(calls) == sorted(ids)


@pytest.mark.slow
def test_report_through_a_tracking_server_equals_the_sqlite_one(tmp_path, sweep):
    from conftest import free_port, start_mlflow_server, stop_mlflow_server

    uri, parent = sweep
    direct = write_report(uri, parent_run_id=parent, out_dir=tmp_path / "direct")
    proc = start_mlflow_server(free_port(), Path(uri[len("sqlite:///"):]), tmp_path / "server-artifacts")
    try:
        url = f"http://127.0.0.1:{proc.args[proc.args.index('--port') + 1]}"
        served = write_report(url, parent_run_id=parent, out_dir=tmp_path / "served")
    finally:
        stop_mlflow_server(proc)
    assert json.dumps(served.rows, sort_keys=True) == json.dumps(direct.rows, sort_keys=True)  # NaN == NaN there
    assert repr(served.comparisons) == repr(direct.comparisons)


def test_report_files_land_under_out(tmp_path, sweep):
    uri, _ = sweep
    main(["--tracking-uri", uri, "--out", str(tmp_path / "out")])
    assert {p.name for p in Path(tmp_path / "out").iterdir()} >= {"report.md", "report.csv", "comparisons.csv"}


def test_a_baseline_matches_its_variant_whatever_the_case_of_its_booleans():
    from xentlab.report.variants import find_variant

    variants = ["labels=sparse,loss=crossentropy,loss.from_logits=True",
                "labels=sparse,loss=crossentropy,loss.from_logits=False"]
    assert find_variant(variants, "loss=crossentropy,labels=sparse,loss.from_logits=false") == variants[1]

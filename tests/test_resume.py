"""Resume that cannot be fooled: checkpoints per store, damaged units, a kill after the last epoch, a busy job.

Real processes, real signals, real files damaged on disk, real SQLite stores."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import runs_of

DET = ["trainer.epochs=5", "trainer.batch_size=32", "data.limit=128", "model=mlp", "trainer.deterministic=true",
       "trainer.verbose=line", "tracking.log_model=false", "tracking.log_plots=false", "tracking.system_metrics=false"]


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **extra}
    if "MLFLOW_TRACKING_URI" not in extra:
        env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _start(args, cwd, **env):
    cmd = [sys.executable, "-u", "-c", "from xentlab.cli.train import main; main()", *args]
    return subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(**env))


def _run(args, cwd, **env) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", "from xentlab.cli.train import main; main()", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300, env=_env(**env))


def _kill_after(proc, text: str, sig=signal.SIGKILL, timeout: float = 180, occurrence: int = 1) -> str:
    """Sends `sig` once `text` has appeared `occurrence` times on the job's output; returns what it printed."""
    seen, deadline = [], time.time() + timeout
    for line in proc.stdout:
        seen.append(line)
        if text in line and sum(text in s for s in seen) == occurrence:
            proc.send_signal(sig)
            break
        if time.time() > deadline:
            break
    else:
        pytest.fail(f"never saw {text!r}: {''.join(seen)[-2000:]}")
    rest = proc.communicate(timeout=60)[0]
    return "".join(seen) + (rest or "")


def _steps(uri, run_id, metric="val_loss"):
    return sorted(m.step for m in MlflowClient(uri).get_metric_history(run_id, metric))


def _units(cwd: Path) -> list[Path]:
    return sorted((cwd / "outputs" / "checkpoints").glob("*/epoch-*"))


@pytest.mark.slow
def test_a_checkpoint_belongs_to_its_store(tmp_path):
    first, second = f"sqlite:///{tmp_path / 'first.db'}", f"sqlite:///{tmp_path / 'second.db'}"
    proc = _start(DET, tmp_path, MLFLOW_TRACKING_URI=first)
    _kill_after(proc, "Epoch 3/5")
    (interrupted,) = runs_of(first)
    # The same config against another store (chosen by the environment, tracking.uri=null) is another job ...
    other = _run(DET, tmp_path, MLFLOW_TRACKING_URI=second)
    assert other.returncode == 0, other.stderr[-3000:]
    assert "resuming" not in other.stdout and runs_of(second)[0].info.status == "FINISHED"
    # ... and left the first store's checkpoint alone: that job still resumes where it stopped.
    resumed = _run(DET, tmp_path, MLFLOW_TRACKING_URI=first)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming run {interrupted.info.run_id} after epoch 2" in resumed.stdout
    (run,) = runs_of(first)
    assert run.info.status == "FINISHED" and _steps(first, run.info.run_id) == [0, 1, 2, 3, 4]


def test_a_damaged_newest_unit_falls_back_to_the_previous_one(tmp_path, store):
    proc = _start([*DET, f"tracking.uri={store}"], tmp_path)
    _kill_after(proc, "Epoch 5/5")  # four epochs done and saved
    units = _units(tmp_path)
    assert [u.name for u in units] == ["epoch-000003", "epoch-000004"]  # the newest two are kept
    weights = units[-1] / "state.weights.h5"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\0" * 64  # damaged in place: same size, wrong bytes
    weights.write_bytes(bytes(data))

    resumed = _run([*DET, f"tracking.uri={store}"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "epoch-000004: state.weights.h5 is missing or does not match its checksum" in resumed.stderr
    assert "after epoch 3" in resumed.stdout
    (run,) = runs_of(store)
    assert run.info.status == "FINISHED" and _steps(store, run.info.run_id) == [0, 1, 2, 3, 4]
    # No step of nonsense: the last epoch trained on real data (the bug logged loss 0, accuracy 0, AUC 0).
    assert run.data.metrics["loss"] > 0 and run.data.metrics["accuracy"] > 0 and run.data.metrics["test_auc"] > 0.5


@pytest.mark.slow
def test_when_every_unit_is_damaged_the_old_run_fails_and_the_job_starts_again(tmp_path, store):
    proc = _start([*DET, f"tracking.uri={store}"], tmp_path)
    _kill_after(proc, "Epoch 4/5")
    older, newest = _units(tmp_path)
    (newest / "meta.json").write_text("")  # what a kill during a non-atomic write leaves behind
    (older / "rng.npz").unlink()
    (old,) = runs_of(store)

    again = _run([*DET, f"tracking.uri={store}"], tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    runs = {r.info.run_id: r for r in runs_of(store)}
    assert runs[old.info.run_id].info.status == "FAILED"
    assert runs[old.info.run_id].data.tags["xentlab.error"].startswith("checkpoint damaged (epoch-000003: meta.json")
    (new,) = [r for r in runs.values() if r.info.run_id != old.info.run_id]
    assert new.info.status == "FINISHED" and _steps(store, new.info.run_id) == [0, 1, 2, 3, 4]
    assert list((tmp_path / "outputs" / "checkpoints").glob("*.damaged-*/epoch-000003"))  # kept for inspection


@pytest.mark.slow
def test_sigterm_after_the_last_epoch_resumes_into_evaluation_in_the_same_run(tmp_path, store):
    args = [*DET, "trainer.epochs=2", f"tracking.uri={store}", "tracking.log_model=true"]
    proc = _start(args, tmp_path)
    # The last epoch's line: training is over (the unit is saved before Keras prints it), logging is not.
    _kill_after(proc, "samples_per_s", sig=signal.SIGTERM, occurrence=2)
    (killed,) = runs_of(store)
    assert killed.info.status == "KILLED"
    assert [u.name for u in _units(tmp_path)][-1] == "epoch-000002"  # kept until the run is FINISHED

    rerun = _run(args, tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"resuming run {killed.info.run_id} after epoch 2" in rerun.stdout
    assert "Epoch 1/2" not in rerun.stdout and "Epoch 2/2" not in rerun.stdout  # nothing retrained
    (run,) = runs_of(store)
    assert run.info.run_id == killed.info.run_id and run.info.status == "FINISHED"
    assert _steps(store, run.info.run_id) == [0, 1] and "test_accuracy" in run.data.metrics
    assert not _units(tmp_path)  # removed once FINISHED


@pytest.mark.slow
def test_a_busy_job_gives_advice_that_works(tmp_path, store):
    proc = _start([*DET, "trainer.epochs=200", f"tracking.uri={store}"], tmp_path)
    try:
        for line in proc.stdout:
            if "Epoch 2/200" in line:
                break
        busy = _run([*DET, "trainer.epochs=200", f"tracking.uri={store}"], tmp_path)
        assert busy.returncode == 2 and "Traceback" not in busy.stderr
        assert "is alive" in busy.stderr and "+tracking.tags.copy=2" in busy.stderr
        # The advice: the same job with one extra override is an independent copy, and it starts training.
        copy = _start([*DET, "trainer.epochs=200", f"tracking.uri={store}", "+tracking.tags.copy=2"], tmp_path)
        output = _kill_after(copy, "Epoch 1/200")
        assert "is alive" not in output
        assert sum(r.data.tags.get("copy") == "2" for r in runs_of(store)) == 1
    finally:
        proc.kill()
        proc.wait(timeout=30)

"""Faults through real processes: SIGKILL and resume, SIGTERM, stale runs, NaN loss."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient

from conftest import compose, run_cli, runs_of

DET = ["trainer.epochs=5", "trainer.batch_size=32", "data.limit=128", "model=mlp", "trainer.deterministic=true",
       "trainer.verbose=line", "tracking.log_model=false", "tracking.log_plots=false"]


def _start(args, cwd):
    cmd = [sys.executable, "-u", "-c", "from xentlab.cli.train import main; main()", *args]
    return subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for(proc, text: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    for line in proc.stdout:
        if text in line:
            return
        if time.time() > deadline:
            break
    proc.kill()
    pytest.fail(f"never saw {text!r}")


def _history(uri, run_id, metric="val_loss"):
    return sorted((m.step, m.value) for m in MlflowClient(uri).get_metric_history(run_id, metric))


@pytest.mark.slow
def test_sigkill_mid_training_then_restart_equals_an_uninterrupted_run(tmp_path, store):
    killed_dir, clean_dir = tmp_path / "killed", tmp_path / "clean"
    killed_dir.mkdir(), clean_dir.mkdir()
    proc = _start([*DET, f"tracking.uri={store}"], killed_dir)
    _wait_for(proc, "Epoch 3/5")  # two epochs done, the third under way
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    (stale,) = runs_of(store)
    assert stale.info.status == "RUNNING"  # what MLflow alone would leave behind

    resumed = run_cli([*DET, f"tracking.uri={store}"], cwd=killed_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming run {stale.info.run_id}" in resumed.stdout
    (run,) = runs_of(store)
    assert run.info.run_id == stale.info.run_id and run.info.status == "FINISHED"
    steps = [s for s, _ in _history(store, run.info.run_id)]
    assert steps == [0, 1, 2, 3, 4]  # every epoch exactly once

    clean_store = f"sqlite:///{clean_dir / 'clean.db'}"
    clean = run_cli([*DET, f"tracking.uri={clean_store}"], cwd=clean_dir)
    assert clean.returncode == 0, clean.stderr[-3000:]
    (reference,) = runs_of(clean_store)
    resumed_history, clean_history = _history(store, run.info.run_id), _history(clean_store, reference.info.run_id)
    for (s1, v1), (s2, v2) in zip(resumed_history, clean_history, strict=True):
        assert s1 == s2 and v1 == pytest.approx(v2, abs=1e-5)
    assert run.data.metrics["test_loss"] == pytest.approx(reference.data.metrics["test_loss"], abs=1e-5)
    differing = {k for k in run.data.params if run.data.params[k] != reference.data.params.get(k)}
    assert differing == {"tracking.uri"}  # params identical otherwise: no "param changed" on resume


@pytest.mark.slow
def test_sigterm_marks_the_run_killed_and_keeps_the_checkpoint(tmp_path, store):
    proc = _start([*DET, "trainer.epochs=50", f"tracking.uri={store}"], tmp_path)
    _wait_for(proc, "Epoch 3/50")
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode != 0
    (run,) = runs_of(store)
    assert run.info.status == "KILLED"
    assert run.data.tags["xentlab.error"].startswith("Terminated: SIGTERM")
    assert list((tmp_path / "outputs" / "checkpoints").glob("*/epoch-*/state.weights.h5"))


@pytest.mark.slow
def test_exception_marks_the_run_failed(tmp_path, store):
    result = run_cli([*DET, f"tracking.uri={store}", "optimizer.learning_rate=-1"], cwd=tmp_path)
    assert result.returncode != 0
    (run,) = runs_of(store)
    assert run.info.status == "FAILED"
    assert "optimizer.learning_rate=-1.0 is not allowed" in run.data.tags["xentlab.error"]


@pytest.mark.slow
def test_stale_running_run_is_marked_failed_when_not_resumed(tmp_path, store):
    proc = _start([*DET, f"tracking.uri={store}"], tmp_path)
    _wait_for(proc, "Epoch 2/5")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    result = run_cli([*DET, f"tracking.uri={store}", "trainer.resume=never"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    old, new = sorted(runs_of(store), key=lambda r: r.info.start_time)
    assert old.info.status == "FAILED" and "stale: its process is gone" in old.data.tags["xentlab.error"]
    assert new.info.status == "FINISHED"
    assert [s for s, _ in _history(store, new.info.run_id)] == [0, 1, 2, 3, 4]


def test_nan_loss_stops_at_once_with_where_it_happened(store):
    from xentlab.cli.train import run
    from xentlab.tracking.runs import NonFiniteLoss

    # A huge SGD step on a probability head overflows within the first epoch.
    overrides = [*DET, f"tracking.uri={store}", "optimizer=sgd", "optimizer.learning_rate=1e12",
                 "loss.from_logits=true"]
    with pytest.raises(NonFiniteLoss, match=r"loss became (nan|inf) at epoch 0, batch \d+"):
        run(compose(overrides))
    (logged,) = runs_of(store)
    assert logged.info.status == "FAILED" and "loss became" in logged.data.tags["xentlab.error"]


def _as_unprivileged(args: list[str], cwd, home) -> subprocess.CompletedProcess:
    """`xentlab-train ARGS` as a user who cannot write `cwd/outputs`: as root, the command runs as nobody (65534)
    through setpriv and `outputs/` is left to root; as any other user, `outputs/` is made read-only for it."""
    import os
    import shutil

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1", "HOME": str(home),
           "MPLCONFIGDIR": str(home / "mpl")}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, "-c", "from xentlab.cli.train import main; main()", *args]
    if os.geteuid() == 0:
        os.chown(home, 65534, 65534)
        cmd = [shutil.which("setpriv"), "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
    else:
        (cwd / "outputs").chmod(0o555)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture
def shared_folder():
    """A folder every user can enter (pytest's own tmp folders are private to the user running it), removed after;
    its `outputs/` is writable only by the user running the tests."""
    import os
    import shutil
    import tempfile
    from pathlib import Path

    folder = Path(tempfile.mkdtemp(prefix="xentlab-ro-"))
    folder.chmod(0o755)
    (folder / "outputs").mkdir(mode=0o755)
    (folder / "home").mkdir()
    yield folder
    for path in (folder, folder / "outputs"):
        os.chmod(path, 0o755)
    shutil.rmtree(folder, ignore_errors=True)


def test_a_read_only_outputs_folder_is_named_with_its_fix_before_anything_starts(shared_folder):
    result = _as_unprivileged(["trainer.epochs=1", "data.limit=96", "model=mlp"], shared_folder,
                              shared_folder / "home")
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "PermissionError" not in result.stderr, result.stderr[-3000:]
    outputs = shared_folder / "outputs"
    assert f"{outputs} is not writable by this user" in result.stderr
    for fix in ("hydra.run.dir=", "tracking.uri=sqlite:///", "trainer.checkpoint_dir="):
        assert fix in result.stderr, result.stderr
    assert list(outputs.iterdir()) == []  # no job folder, no store


@pytest.mark.slow
def test_the_printed_fix_for_a_read_only_outputs_folder_trains(shared_folder):
    import os

    writable = shared_folder / "home" / "work"
    writable.mkdir(parents=True)
    if os.geteuid() == 0:
        os.chown(writable, 65534, 65534)
    refused = _as_unprivileged(["trainer.epochs=1", "data.limit=96", "model=mlp", "tracking.log_model=false",
                                "tracking.log_plots=false"], shared_folder, shared_folder / "home")
    fixes = refused.stderr.split("Move each elsewhere: ", 1)[1].splitlines()[0].replace(
        "/a/folder/you/can/write", str(writable)).split()
    result = _as_unprivileged(["trainer.epochs=1", "data.limit=96", "model=mlp", "tracking.log_model=false",
                               "tracking.log_plots=false", *fixes], shared_folder, shared_folder / "home")
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = MlflowClient(f"sqlite:///{writable}/mlflow.db").search_runs(
        [e.experiment_id for e in MlflowClient(f"sqlite:///{writable}/mlflow.db").search_experiments()])
    assert run.info.status == "FINISHED"
    assert list((shared_folder / "outputs").iterdir()) == []


@pytest.mark.slow
def test_a_run_that_ends_at_chance_level_says_so(store, capsys):
    """learning_rate=1e6 with the default optimizer: the loss stays finite, the run ends FINISHED predicting one
    class (val_auc 0.5, balanced accuracy 1/K). It warns on stderr and in the run tag xentlab.warning."""
    from xentlab.cli.train import run

    run(compose(["trainer.epochs=1", "data.limit=96", "model=mlp", "optimizer.learning_rate=1e6",
                 "tracking.log_model=false", "tracking.log_plots=false", f"tracking.uri={store}"]))
    (logged,) = runs_of(store)
    assert logged.info.status == "FINISHED"
    assert "final validation metrics are at chance level" in logged.data.tags["xentlab.warning"]
    assert "val_auc=0.500 (chance 0.500)" in logged.data.tags["xentlab.warning"]
    assert "warning: the final validation metrics are at chance level" in capsys.readouterr().err

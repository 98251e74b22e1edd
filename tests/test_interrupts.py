"""Ctrl-C and SIGTERM at the moments they are most likely to hurt: inside a write to the SQLite store and inside a
checkpoint write. The run still ends KILLED at once, and nothing half-written is left."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import config_of, runs_of


def test_an_interrupt_inside_a_store_write_still_ends_the_run_killed_at_once(store, tmp_path, monkeypatch):
    """A KeyboardInterrupt that arrives as SQLite returns from a metrics insert (the write lock taken) left this
    process holding the lock: the error tag and the KILLED status then waited for it, 30 s each. With a 2 s budget
    for a busy store, that behaviour leaves the run RUNNING here, its last writes kept in the journal."""
    from xentlab.tracking import runs

    monkeypatch.setenv("XENTLAB_STORE_WAIT_S", "2")
    opened = runs.open_store(config_of([f"tracking.uri={store}"])["tracking"], tmp_path)
    interrupted = []

    with pytest.raises(KeyboardInterrupt):
        with runs.tracked_run(opened, run_name="interrupted", params={"a": "1"}, job_dir=tmp_path) as outbox:
            dialect = outbox.client._tracking_client.store.engine.dialect
            insert_many = dialect.do_executemany

            def insert_then_interrupt(cursor, statement, parameters, context=None):
                insert_many(cursor, statement, parameters, context)
                if not interrupted:  # Ctrl-C as the insert returns, once
                    interrupted.append(statement)
                    raise KeyboardInterrupt

            monkeypatch.setattr(dialect, "do_executemany", insert_then_interrupt)
            outbox.log_metrics({f"m{i}": float(i) for i in range(20)}, step=0)
    assert interrupted and interrupted[0].startswith("INSERT INTO metrics")  # it did land inside the write
    (run,) = runs_of(store)
    assert run.info.status == "KILLED"
    assert run.data.tags["xentlab.error"] == "KeyboardInterrupt: stopped by the user (Ctrl-C)"
    assert outbox.pending == 0  # nothing left waiting in the journal


def test_an_interrupted_checkpoint_write_leaves_no_half_written_unit(tmp_path, monkeypatch):
    import keras

    from xentlab.tracking import resume

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile("sgd", "mse")
    model.fit(np.zeros((4, 3)), np.zeros((4, 2)), verbose=0)
    resume.save_unit(model, tmp_path, 1)

    def interrupted(model, folder, epoch):
        (folder / "state.weights.h5").write_bytes(b"half")  # the write had begun
        raise KeyboardInterrupt

    monkeypatch.setattr(resume, "_write_unit", interrupted)
    with pytest.raises(KeyboardInterrupt):
        resume.save_unit(model, tmp_path, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch-000001"]  # the previous unit, whole, and no .tmp-


def _start_cli(args: list[str], cwd):
    import os
    import subprocess
    import sys

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, "-c", "from xentlab.cli.train import main; main()", *args]
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _sigterm_after(proc, text: str) -> str:
    """Sends SIGTERM once `text` is printed; returns everything the process printed."""
    import signal

    seen = []
    for line in proc.stdout:
        seen.append(line)
        if text in line:
            proc.send_signal(signal.SIGTERM)
            break
    rest, _ = proc.communicate(timeout=120)
    return "".join(seen) + rest


def _resume_args(output: str) -> list[str]:
    """The overrides of the command the one line says resumes the job."""
    import shlex

    (line,) = [ln for ln in output.splitlines() if ln.startswith("xentlab: stopped by SIGTERM")]
    command = shlex.split(line.split("Resume with: ", 1)[1])
    assert command[0] == "xentlab-train"
    return command[1:]


# model=auto on flat features picks the MLP: the run is named after it, on the first attempt and on the resumed one.
AUTO = ["data=breast_cancer", "data.limit=128", "trainer.epochs=12", "trainer.batch_size=32", "trainer.verbose=line",
        "tracking.log_model=false", "tracking.log_plots=false"]


@pytest.mark.slow
def test_sigterm_prints_one_line_with_what_was_saved_and_the_resume_command(store, tmp_path):
    from conftest import run_cli

    output = _sigterm_after(_start_cli([*AUTO, f"tracking.uri={store}"], tmp_path), "Epoch 3/12")
    (killed,) = runs_of(store)
    assert killed.info.status == "KILLED" and killed.info.run_name == "mlp/crossentropy/sparse/none"
    assert "Traceback" not in output and "Terminated" not in output, output[-3000:]
    (line,) = [ln for ln in output.splitlines() if "SIGTERM" in ln]
    assert f"run mlp/crossentropy/sparse/none ({killed.info.run_id}) is KILLED" in line
    assert "checkpoint after epoch" in line and "outputs/checkpoints/" in line

    resumed = run_cli(_resume_args(output), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming run {killed.info.run_id}" in resumed.stdout
    (run,) = runs_of(store)
    assert run.info.run_id == killed.info.run_id and run.info.status == "FINISHED"
    assert run.info.run_name == "mlp/crossentropy/sparse/none"  # not renamed to auto/... on resume


@pytest.mark.slow
def test_sigterm_to_a_sweep_prints_one_line_and_the_same_command_continues_it(store, tmp_path):
    from conftest import run_cli

    proc = _start_cli(["-m", *AUTO, "model=mlp", "trainer.seed=0,1", f"tracking.uri={store}"], tmp_path)
    output = _sigterm_after(proc, "Epoch 3/12")
    assert proc.returncode == 143
    assert "Traceback" not in output, output[-3000:]
    statuses = {r.info.run_name: r.info.status for r in runs_of(store)}
    assert statuses == {next(n for n in statuses if n.startswith("sweep/")): "KILLED", "default s0": "KILLED"}
    args = _resume_args(output)
    assert args[0] == "-m"
    again = run_cli(args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert sorted(r.info.status for r in runs_of(store)) == ["FINISHED"] * 3


@pytest.mark.slow
def test_sigterm_to_a_parallel_sweep_ends_every_run_and_worker_and_the_same_command_continues_it(store, tmp_path):
    """Jobs in joblib's worker processes: SIGTERM reaches only the command's process, which has the running jobs end
    their runs KILLED, stops the workers and ends the parent KILLED: nothing left RUNNING, no process left behind."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import run_cli

    args = ["-m", *AUTO, "trainer.epochs=40", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
            "trainer.seed=0,1,2", f"tracking.uri={store}"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.Popen([sys.executable, "-c", "from xentlab.cli.train import main; main()", *args],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # its own session: the workers left behind can be found
    output = _sigterm_after(proc, "Epoch 3/40")
    assert proc.returncode == 143, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    statuses = {r.info.run_name: r.info.status for r in runs_of(store)}
    assert "RUNNING" not in statuses.values(), statuses
    assert statuses[next(n for n in statuses if n.startswith("sweep/"))] == "KILLED"
    assert "KILLED" in [s for n, s in statuses.items() if not n.startswith("sweep/")], statuses
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            os.killpg(proc.pid, 0)  # a process of the command's session is still alive
        except ProcessLookupError:
            break
        time.sleep(0.5)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("worker processes outlived the stopped sweep")
    (line,) = [ln for ln in output.splitlines() if ln.startswith("xentlab: stopped by SIGTERM")]
    assert "is KILLED, its running jobs' runs too" in line
    again = run_cli(_resume_args(output), cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    finished = [r for r in runs_of(store) if r.info.status == "FINISHED" and not r.info.run_name.startswith("sweep/")]
    assert len({r.data.params["trainer.seed"] for r in finished}) == 3

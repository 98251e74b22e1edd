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

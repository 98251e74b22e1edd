"""A disk that fills up under a run's checkpoints: a message and a clean exit, nothing half-written left behind.

The disk is real: a 96 kB tmpfs mounted for the test (the checkpoint of the smallest model needs more).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import TINY, run_cli, runs_of


@pytest.fixture
def small_disk(tmp_path) -> Path:
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(folder)], capture_output=True,
                             text=True)
    assert mounted.returncode == 0, f"this test mounts a small tmpfs (as root): {mounted.stderr}"
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=True)


def test_too_little_room_refuses_the_unit_before_writing_and_leaves_nothing(tmp_path, monkeypatch):
    """The rule alone, without root: a disk reporting less free space than the unit needs is refused before
    HDF5 writes a byte, with the space needed and free in the message, and no temporary folder is left."""
    import shutil

    import keras

    from xentlab.tracking.resume import CheckpointNotWritten, save_unit

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile(optimizer="adam", loss="mse")
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=50_000))
    expected = r"no room for the checkpoint of epoch 1 in .*needs about 1\.\d MB, 0\.1 MB are free"
    with pytest.raises(CheckpointNotWritten, match=expected):
        save_unit(model, tmp_path / "ck", 1)
    assert list((tmp_path / "ck").iterdir()) == []
    monkeypatch.setattr(shutil, "disk_usage", real)
    assert save_unit(model, tmp_path / "ck", 1).folder.is_dir()  # with room, the same call writes the unit


@pytest.mark.slow  # mounts a tmpfs: needs root (make test-all)
def test_a_full_disk_at_a_checkpoint_fails_the_run_cleanly(small_disk, tmp_path):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"  # the store on a disk with room; the job's folder is full
    result = run_cli([*TINY, "trainer.epochs=2", "model=mlp", "tracking.system_metrics=false",
                      f"tracking.uri={store}"], cwd=small_disk)
    assert result.returncode == 2, result.stderr[-3000:]  # before: a segfault at exit (139)
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr
    checkpoints = small_disk / "outputs" / "checkpoints"
    assert f"no room for the checkpoint of epoch 1 in {checkpoints}/" in result.stderr
    assert "then start the job again: it resumes from its last checkpoint" in result.stderr
    assert not list(checkpoints.glob("*/.tmp-*"))  # nothing half-written left behind
    (run,) = runs_of(store)
    assert run.info.status == "FAILED" and "no room for the checkpoint" in run.data.tags["xentlab.error"]

"""The loader registry: a relative data.path is read from the launch directory, wherever the job runs."""

from __future__ import annotations

import shutil

from conftest import TINY, run_cli, runs_of
from xentlab.data import load_data
from xentlab.data.registry import anchored


def test_a_relative_path_is_read_from_the_root_not_the_working_directory(tmp_path, monkeypatch, arrays_npz):
    (tmp_path / "launch" / "data").mkdir(parents=True)
    shutil.copyfile(arrays_npz, tmp_path / "launch" / "data" / "arrays.npz")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    bundle = load_data("npz", path="data/arrays.npz", root=tmp_path / "launch", val_fraction=0.2, test_fraction=0.2,
                       split_seed=0)
    assert sum(bundle.sizes().values()) == 400
    assert anchored("/abs/file.csv", tmp_path) == "/abs/file.csv"
    assert anchored(None, tmp_path) is None  # the source's default (e.g. Keras' cache)
    assert anchored("x.csv", None) == "x.csv"  # no root: the working directory, as before


def test_relative_data_path_trains_with_hydra_job_chdir(tmp_path, store, arrays_npz):
    """hydra.job.chdir=true runs the job in its output folder; data.path=data/arrays.npz still means the file
    under the folder the command was started in, as a relative tracking.uri does."""
    (tmp_path / "data").mkdir()
    shutil.copyfile(arrays_npz, tmp_path / "data" / "arrays.npz")
    result = run_cli([*TINY, "hydra.job.chdir=true", "data=npz", "data.path=data/arrays.npz", "model=mlp",
                      f"tracking.uri={store}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = runs_of(store)
    assert run.info.status == "FINISHED" and run.data.params["data.train_size"] == "96"

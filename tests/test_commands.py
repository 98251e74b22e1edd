"""Every command other than xentlab-train (which composes with Hydra) and xentlab-compare handles errors as
xentlab-train does: an expected error is one block and exit status 2, a bug its traceback and exit status 1."""

from __future__ import annotations

import importlib

import pytest

from xentlab.cli.console import COMMAND_HINT, command

# The commands under cli/ with their own `main`; train, the sweep callback and compare report errors their own way.
COMMANDS = ["generate", "init", "links", "ray_cluster", "server", "smoke_gpu", "sync"]


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_goes_through_the_expected_error_handling(name):
    module = importlib.import_module(f"xentlab.cli.{name}")
    entry = module.sync_main if name == "sync" else module.main  # sync's main exits with sync_main's status
    assert getattr(entry, "__wrapped__", None) is not None, f"xentlab.cli.{name}.main is not wrapped by command()"


def _bad_inputs(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "my_model.py").write_text("")
    return {
        "generate": (["--run-id", "0" * 32, "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"],
                     "ModelNotLoadable", "cannot load the model of run"),
        "sync": ([str(tmp_path / "nope")], "JobFolderMissing", "pass a job folder"),
        "init": (["init", str(tmp_path / "mine")], "StarterExists", "pick an empty folder"),
        "ray_cluster": (["kill-node", "--port", "1", "--node", "1"], "RayClusterError", "is not running"),
    }


@pytest.mark.parametrize("name", ["generate", "sync", "init", "ray_cluster"])
def test_an_expected_error_is_the_one_block_and_exit_status_2(name, tmp_path, capsys):
    argv, kind, message = _bad_inputs(tmp_path)[name]
    module = importlib.import_module(f"xentlab.cli.{name}")
    entry = module.sync_main if name == "sync" else module.main
    with pytest.raises(SystemExit) as stop:
        entry(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2, err
    assert f"xentlab: {kind}\n" in err and message in err and COMMAND_HINT in err
    assert "Traceback" not in err


def test_a_bug_keeps_its_traceback_and_exits_1(capsys):
    @command
    def broken(argv):
        return {}["password=hunter2 missing key"]

    with pytest.raises(SystemExit) as stop:
        broken(None)
    err = capsys.readouterr().err
    assert stop.value.code == 1 and "Traceback" in err and "KeyError" in err


def test_what_main_returns_is_the_exit_status():
    assert command(lambda argv: 3)(None) == 3 and command(lambda argv: None)([]) is None

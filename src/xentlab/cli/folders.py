"""Before a run or a sweep starts: every folder it will write can be written by this user. A read-only `outputs/`
is named with the overrides that move each part elsewhere, instead of a PermissionError traceback mid-way."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from xentlab.errors import ExpectedError

SAFE = "/a/folder/you/can/write"  # the placeholder the fixes show


class FolderNotWritable(ExpectedError, PermissionError):
    """A folder the run writes (job folder, store, checkpoints) cannot be written by this user."""


def blocking_folder(path: Path) -> Path | None:
    """The folder that stops this user from writing `path` (or creating it), or None when it can be written."""
    path = Path(os.path.abspath(path))
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.is_file():  # a store file: itself and its folder (SQLite writes a journal beside it)
        if not os.access(existing, os.W_OK):
            return existing
        existing = existing.parent
    return None if os.access(existing, os.W_OK | os.X_OK) else existing


def written_folders(config: DictConfig, *, multirun: bool) -> list[tuple[str, Path, str]]:
    """(what, path, the override that moves it) for every place the run writes: Hydra's job folder, a local store
    (SQLite or a folder) and the checkpoints; a dry run writes only the job folder."""
    from xentlab.tracking.resume import checkpoint_root
    from xentlab.tracking.store import resolve_tracking_uri

    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    places = [(f"the job folder ({key})", Path(str(OmegaConf.select(config, key))), f"{key}={SAFE}/runs")]
    if config.trainer.dry_run:
        return places
    uri = resolve_tracking_uri(config.tracking.uri, Path.cwd())
    local = {"sqlite": uri[len("sqlite:///"):], "file": urlparse(uri).path}.get(urlparse(uri).scheme)
    if local:  # a server's folders are the server's business
        places.append(("the MLflow store (tracking.uri)", Path(local), f"tracking.uri=sqlite:///{SAFE}/mlflow.db"))
    places.append(("the checkpoints (trainer.checkpoint_dir)", checkpoint_root(Path.cwd(), config.trainer),
                   f"trainer.checkpoint_dir={SAFE}/checkpoints"))
    return places


def check_writable(config: DictConfig, *, multirun: bool) -> None:
    """Raises FolderNotWritable naming each folder this user cannot write and the override that moves it."""
    blocked = [(what, path, fix, folder) for what, path, fix in written_folders(config, multirun=multirun)
               if (folder := blocking_folder(path)) is not None]
    if not blocked:
        return
    user = f"uid {os.geteuid()}" if hasattr(os, "geteuid") else "this user"
    by_folder: dict[Path, list[str]] = {}
    for what, _, _, folder in blocked:
        by_folder.setdefault(folder, []).append(what)
    lines = [f"{folder} is not writable by this user ({user}); the run writes {', '.join(whats)} there."
             for folder, whats in by_folder.items()]
    fixes = " ".join(fix for _, _, fix, _ in blocked)
    raise FolderNotWritable(
        "\n".join(lines) + f"\nMove each elsewhere: {fixes}\nor run from a folder you can write, or make it "
        f"writable (chmod u+w {blocked[0][3]})."
    )


class WritableOutputs(Callback):
    """Checks the folders of a run (on_run_start) or a sweep (on_multirun_start) before Hydra creates the job
    folder and before any store, model or data is touched; prints the error block and exits 2 otherwise."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, multirun=False)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, multirun=True)

    @staticmethod
    def _check(config: DictConfig, *, multirun: bool) -> None:
        from xentlab.cli.console import error_block

        try:
            check_writable(config, multirun=multirun)
        except FolderNotWritable as err:
            sys.stderr.write(error_block(err))
            sys.stderr.flush()
            raise SystemExit(2) from None

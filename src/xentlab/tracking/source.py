"""Where the code of a run comes from: the git commit, the project's uncommitted changes (the diff a run
uploads as source/uncommitted.diff, secrets masked and size-capped), and the library versions."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from xentlab.masking import mask_text

DIFF_LIMIT_BYTES = 256_000  # the uploaded diff is cut there: a run's artifact, not a backup of the tree


@functools.lru_cache(maxsize=1)
def source_info() -> dict[str, Any]:
    """Where the code that runs comes from: the git commit of xentlab's source tree, whether the project had
    uncommitted changes (and their diff, see `git_state`), and the versions of the libraries that shape the
    numbers."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version()}
    for package in ("tensorflow", "keras", "mlflow", "hydra-core", "numpy"):
        try:
            versions[package.removesuffix("-core")] = version(package)
        except PackageNotFoundError:
            versions[package.removesuffix("-core")] = "not installed"
    return {"versions": versions, **git_state(Path(__file__).resolve().parent)}


def git_state(folder: Path, limit: int = DIFF_LIMIT_BYTES) -> dict[str, Any]:
    """The commit of the git checkout holding `folder`, and the uncommitted changes of the project around it.

    The project is the nearest folder at or above `folder` with a pyproject.toml (else the repository): a
    checkout nested in a larger repository uploads its own changes, not the whole repository's. The diff has
    URI passwords and secret-named assignments masked (xentlab.masking) and is cut at `limit` bytes.
    Returns {"commit": None, "dirty": None, "diff": ""} outside a git checkout (an installed wheel) or without git.
    """
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=10,
                              check=True, errors="replace").stdout

    state: dict[str, Any] = {"commit": None, "dirty": None, "diff": ""}
    try:
        state["commit"] = git("rev-parse", "HEAD").strip()
        top = Path(git("rev-parse", "--show-toplevel").strip())
        project = next((p for p in (folder, *folder.parents) if (p / "pyproject.toml").is_file()
                        and p.is_relative_to(top)), top)
        state["dirty"] = bool(git("status", "--porcelain", "--untracked-files=no", "--", str(project)).strip())
        diff = git("diff", "HEAD", "--", str(project)) if state["dirty"] else ""
    except (OSError, subprocess.SubprocessError):
        return state
    state["diff"] = _capped(mask_text(diff), limit)
    return state


def _capped(text: str, limit: int) -> str:
    data = text.encode()
    if len(data) <= limit:
        return text
    kept = data[:limit].decode(errors="ignore").rsplit("\n", 1)[0]
    return f"{kept}\n... cut: the diff holds {len(data)} bytes, {limit} are uploaded (tracking.log_diff=false: none)\n"


def source_tags() -> dict[str, str]:
    """Run tags for the source: MLflow's git-commit and source tags, xentlab.git.dirty, xentlab.version.*."""
    from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT, MLFLOW_SOURCE_NAME, MLFLOW_SOURCE_TYPE

    info = source_info()
    tags = {MLFLOW_SOURCE_NAME: "xentlab-train", MLFLOW_SOURCE_TYPE: "LOCAL"}
    tags.update({f"xentlab.version.{name}": v for name, v in info["versions"].items()})
    if info["commit"]:
        tags[MLFLOW_GIT_COMMIT] = info["commit"]
        tags["xentlab.git.dirty"] = str(info["dirty"]).lower()
    return tags

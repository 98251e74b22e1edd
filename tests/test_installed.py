"""xentlab as an installed tool: the wheel carries the configs (the checkout's conf/, one copy) and the commands;
installed into a fresh venv, it trains from an empty folder, `xentlab init` + `model=mine` trains the user's model,
and a sweep over it makes one parent with its report. Nothing in src/ imports benchmarks/."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import CONF_DIR, REPO, runs_of

SRC = REPO / "src" / "xentlab"
QUICK = ["trainer.epochs=1", "trainer.batch_size=32", "data.limit=64", "tracking.log_model=false",
         "tracking.log_plots=false", "tracking.system_metrics=false"]


def build_wheel(folder: Path) -> Path:
    """`pip wheel --no-deps` of a copy of the project (the checkout keeps no build/ folder), without a download:
    the dev venv's setuptools builds it."""
    source = folder / "source"
    for name in ("src", "conf"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(REPO / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "-w", str(folder), str(source)], check=True, capture_output=True, timeout=300)
    (wheel,) = folder.glob("xentlab-*.whl")
    return wheel


def test_the_wheel_carries_every_config_and_the_commands(tmp_path):
    wheel = build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {f"xentlab/conf/{p.relative_to(CONF_DIR).as_posix()}" for p in CONF_DIR.rglob("*.yaml")}
    assert configs <= names and "xentlab/conf/train.yaml" in names and "xentlab/conf/model/custom.yaml" in names
    assert not any(n.startswith(("benchmarks/", "conf/", "tests/")) for n in names)  # only the package
    assert "hydra_plugins/xentlab_sweeper/xentlab_sweeper.py" in names  # the default hydra/sweeper
    (entry_points,) = [n for n in names if n.endswith("entry_points.txt")]
    commands = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "xentlab = xentlab.cli.init:main" in commands and "xentlab-train = xentlab.cli.train:main" in commands


def test_nothing_in_src_imports_benchmarks():
    offenders = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.relative_to(SRC)}: {m}" for m in modules if m.split(".")[0] == "benchmarks"]
    assert not offenders


def test_init_writes_a_starter_whose_groups_compose_beside_the_packaged_ones(tmp_path):
    from xentlab.cli.configs import compose
    from xentlab.cli.init import main

    assert main(["init", str(tmp_path / "mine")]) == 0
    with pytest.raises(SystemExit) as stop:
        main(["init", str(tmp_path / "mine")])
    assert stop.value.code == 2  # never overwrites
    cfg = compose(["model=mine", "data=mine", "loss=focal"], config_dirs=[tmp_path / "mine" / "conf"])
    assert cfg.model._target_ == "my_model.build" and cfg.model.options.width == 64 and not cfg.model.full_model
    assert cfg.data._target_ == "my_data.load" and cfg.loss.gamma == 2.0  # the packaged groups are all there
    readme = (tmp_path / "mine" / "README.md").read_text()
    assert readme.count("\nxentlab-train --config-dir conf") == 2 and "mlflow ui" in readme


# ------------------------------------------------------------------------------- slow: the wheel in a fresh venv
@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv holding only the wheel (--no-deps); the dev venv's dependencies come in through a .pth line,
    so nothing is downloaded. Returns its bin/ folder."""
    folder = tmp_path_factory.mktemp("wheel")
    start = time.perf_counter()
    wheel = build_wheel(folder)
    venv = folder / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "dev_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q",
                    str(wheel)], check=True, capture_output=True, timeout=300)
    print(f"wheel built and installed in {time.perf_counter() - start:.1f} s")
    where = subprocess.run([python, "-c", "import xentlab.conf; print(xentlab.conf.__file__)"], capture_output=True,
                           text=True, check=True).stdout
    assert where.startswith(str(venv)), where  # the wheel's package, not the checkout's
    return venv / "bin"


def command(bin_dir: Path, name: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PYTHONPATH")}
    start = time.perf_counter()
    result = subprocess.run([str(bin_dir / name), *args], cwd=cwd, capture_output=True, text=True, timeout=900,
                            env={**env, "TF_CPP_MIN_LOG_LEVEL": "2"})
    print(f"{name} {' '.join(args[:4])} ...: {time.perf_counter() - start:.1f} s")
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def store_of(folder: Path) -> str:
    return f"sqlite:///{folder / 'outputs' / 'mlflow.db'}"


@pytest.mark.slow
def test_the_installed_tool_trains_from_an_empty_folder(installed, tmp_path):
    command(installed, "xentlab-train", QUICK, cwd=tmp_path)
    (run,) = runs_of(store_of(tmp_path))
    assert run.info.status == "FINISHED" and run.info.run_name == "mnist_cnn/crossentropy/sparse/none"


@pytest.mark.slow
def test_init_then_the_users_model_trains_and_sweeps_from_the_users_folder(installed, tmp_path):
    command(installed, "xentlab", ["init"], cwd=tmp_path)
    mine = ["--config-dir", "conf", "model=mine", "data=mine"]
    command(installed, "xentlab-train", [*mine, *QUICK], cwd=tmp_path)
    client = MlflowClient(store_of(tmp_path))
    (run,) = runs_of(store_of(tmp_path))
    assert run.info.status == "FINISHED" and run.data.params["model._target_"] == "my_model.build"

    command(installed, "xentlab-train", ["-m", *mine, *QUICK, "loss=crossentropy,focal", "trainer.seed=0,1"],
            cwd=tmp_path)
    swept = [r for r in runs_of(store_of(tmp_path)) if "xentlab.sweep_id" in r.data.tags]
    (parent,) = [r for r in swept if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in swept if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.status == "FINISHED" and len(children) == 4
    assert {c.data.params["model._target_"] for c in children} == {"my_model.build"}
    assert "report/report.html" in {a.path for a in client.list_artifacts(parent.info.run_id, "report")}

"""Shared fixtures: a real SQLite MLflow store under tmp_path, real Hydra composition, tiny data files."""

from __future__ import annotations

import gzip
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = REPO / "conf"
# Small and fast: every end-to-end case trains on at most this many examples, for one epoch.
TINY = ["trainer.epochs=1", "trainer.batch_size=32", "data.limit=96", "tracking.log_model=false",
        "tracking.log_plots=false"]  # tests that check the evaluation figures add tracking.log_plots=true


@pytest.fixture(scope="session")
def empty_store_db(tmp_path_factory) -> Path:
    """An MLflow SQLite store with its tables made and no run, once per session: MLflow's table migrations take
    about 2.5 s of CPU, paid otherwise by every test that opens a fresh store."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    db = tmp_path_factory.mktemp("store_template") / "mlflow.db"
    SqlAlchemyStore(f"sqlite:///{db}", str(db.parent / "artifacts")).engine.dispose()
    return db


@pytest.fixture
def store(tmp_path: Path, empty_store_db: Path) -> str:
    """A fresh SQLite tracking URI under tmp_path (a copy of the session's empty store)."""
    shutil.copyfile(empty_store_db, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def compose(overrides: list[str]):
    """Composes conf/train.yaml with `overrides` through Hydra's compose API (the real config tree), as scripts and
    the benchmarks do (xentlab.cli.configs.compose: one composition)."""
    from xentlab.cli.configs import compose as compose_run_config

    return compose_run_config(overrides)


def run_cli(args: list[str], cwd: Path, timeout: float = 300, **popen) -> subprocess.CompletedProcess:
    """Runs `xentlab-train ARGS` in a subprocess, as a user would."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, "-c", "from xentlab.cli.train import main; main()", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, **popen)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(n: int) -> list[int]:
    """n distinct free ports on 127.0.0.1 (all bound at once, so none is handed out twice)."""
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def start_mlflow_server(port: int, db: Path, artifacts: Path) -> subprocess.Popen:
    """A real `mlflow server` on 127.0.0.1:port over a SQLite store, once it answers /health."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{db}", "--artifacts-destination", str(artifacts), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "MLFLOW_TRACKING_URI": ""},
        start_new_session=True,  # its own process group: the server forks workers that must go with it
    )
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).close()
            return proc
        except OSError:
            time.sleep(0.5)
    stop_mlflow_server(proc)
    pytest.fail("mlflow server did not start within 90 s")


def stop_mlflow_server(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    """Stops the server and its workers (SIGKILL: an abrupt loss, as when its host dies)."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def runs_of(uri: str, experiment: str = "xentlab"):
    """All runs of `experiment` in the store at `uri`, newest first."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"])


@pytest.fixture(scope="session")
def mnist_npz(tmp_path_factory) -> Path:
    """A tiny file in Keras' mnist.npz layout: 28x28 uint8 images whose class sets a bright row."""
    rng = np.random.default_rng(0)

    def images(labels):
        x = rng.integers(0, 60, size=(len(labels), 28, 28), dtype=np.uint8)
        for i, c in enumerate(labels):
            x[i, 2 + 2 * c, :] = 255  # learnable: one bright row per class
        return x

    y_train, y_test = rng.integers(0, 10, 300).astype(np.uint8), rng.integers(0, 10, 60).astype(np.uint8)
    path = tmp_path_factory.mktemp("keras") / "mnist.npz"
    np.savez(path, x_train=images(y_train), y_train=y_train, x_test=images(y_test), y_test=y_test)
    return path


@pytest.fixture(scope="session")
def fashion_dir(tmp_path_factory, mnist_npz: Path) -> Path:
    """The same tiny images as Keras' four fashion-mnist idx .gz files."""
    folder = tmp_path_factory.mktemp("fashion-mnist")
    with np.load(mnist_npz) as f:
        parts = {"train": (f["x_train"], f["y_train"]), "t10k": (f["x_test"], f["y_test"])}
    for prefix, (x, y) in parts.items():
        with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz", "wb") as out:
            out.write(b"\0" * 8 + y.tobytes())
        with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz", "wb") as out:
            out.write(b"\0" * 16 + x.tobytes())
    return folder


@pytest.fixture(scope="session")
def text_file(tmp_path_factory) -> Path:
    """A small generated text (no ../shared needed): repeated verse with some variety."""
    rng = np.random.default_rng(0)
    words = ["to", "be", "or", "not", "the", "king", "queen", "love", "death", "night", "day", "sweet"]
    lines = [" ".join(rng.choice(words, size=8)).capitalize() + "." for _ in range(400)]
    path = tmp_path_factory.mktemp("text") / "verse.txt"
    path.write_text("ROMEO:\n" + "\n".join(lines) + "\n")
    return path


# ------------------------------------------------------------------------------------------ user-brought data
IMAGE_CLASSES = ("circle", "square", "stripe")  # deliberately not in 0..K order of anything: names come from folders


def write_images(folder: Path, counts: dict[str, int], *, size=(20, 24), mode: str = "L", seed: int = 0) -> None:
    """Writes `counts[c]` images per class folder `folder/c`, PNG and JPEG alternating; class k has a bright row
    at 3 + 4k on dark noise (learnable)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for k, name in enumerate(sorted(counts)):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(counts[name]):
            pixels = rng.integers(0, 60, size=(*size, 3), dtype=np.uint8)
            pixels[3 + 4 * k] = 255
            image = Image.fromarray(pixels).convert(mode)
            image.save(folder / name / f"{name}_{i}.{'png' if i % 2 else 'jpg'}")


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory) -> Path:
    """A folder of class folders (3 classes, 40 images each, PNG and JPEG), Keras' image_dataset_from_directory
    layout."""
    folder = tmp_path_factory.mktemp("images")
    write_images(folder, dict.fromkeys(IMAGE_CLASSES, 40))
    return folder


def blobs_table(n: int = 300, seed: int = 0):
    """A DataFrame of 4 numeric features and a string label (3 classes around separated centres)."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    names = np.array(["setosa", "versicolor", "virginica"])
    y = rng.integers(0, 3, n)
    x = rng.normal(size=(n, 4)) + 3.0 * np.eye(3, 4)[y]
    frame = pd.DataFrame(x, columns=["sepal_length", "sepal_width", "petal_length", "petal_width"])
    frame["species"] = names[y]
    return frame


@pytest.fixture(scope="session")
def table_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("table") / "blobs.csv"
    blobs_table().to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def table_parquet(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("table") / "blobs.parquet"
    blobs_table().to_parquet(path, index=False)
    return path


@pytest.fixture(scope="session")
def arrays_npz(tmp_path_factory) -> Path:
    """An .npz with x_train/y_train only (val and test are split off), features of shape (6, 2) per example."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 400)
    x = rng.normal(size=(400, 6, 2)).astype("float32") + y[:, None, None]
    path = tmp_path_factory.mktemp("arrays") / "arrays.npz"
    np.savez(path, x_train=x, y_train=y)
    return path


def pytest_terminal_summary(terminalreporter):
    """After a run that included the loss value/gradient tests in this process (without -n): the largest error of
    each loss variant against its float64 numpy reference, the margin behind the tolerance those tests assert."""
    module = sys.modules.get("test_losses")
    errors = getattr(module, "MAX_ERR", None)
    if not errors:
        return
    width = max(map(len, errors))
    terminalreporter.section("largest error vs float64 numpy (ours in float32)")
    terminalreporter.write_line("absolute, and relative to max(|reference|, 1)")
    for name in sorted(errors):
        abs_err, rel_err = errors[name]
        terminalreporter.write_line(f"  {name:<{width}}  abs {abs_err:.2e}  rel {rel_err:.2e}")


# ------------------------------------------------------------------------------------------ pre-flight units
def config_of(overrides: list[str]) -> dict:
    """The resolved run config of `overrides`, as the runner sees it (a plain dict)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(compose(overrides), resolve=True, enum_to_str=True)


def plan_of(overrides: list[str], bundle=None):
    """The pre-flight plan of `overrides` on this machine's CPU, with the data loaded as the run loads it (or
    `bundle`): the validators in milliseconds, without a store or a training run."""
    from xentlab.config.checks import check_config
    from xentlab.config.preflight import resolve_plan
    from xentlab.data import load_data
    from xentlab.runtime.strategy import build_strategy

    config = check_config(config_of(overrides))
    return resolve_plan(config, bundle or load_data(**config["data"]), build_strategy("cpu"))

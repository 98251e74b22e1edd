"""End to end: real Hydra composition, real TensorFlow training on tiny data, a real SQLite MLflow store."""

from __future__ import annotations

import math
import signal
import subprocess
import sys

import pytest

from conftest import CONF_DIR, TINY, compose, run_cli, runs_of

CONTRACT = ["loss", "accuracy", "auc", "val_loss", "val_accuracy", "val_auc", "test_loss", "test_accuracy", "test_auc"]


def test_cli_trains_and_logs_the_contract(tmp_path, store):
    result = run_cli(
        ["trainer.epochs=2", "trainer.batch_size=16", "data.limit=600", f"tracking.uri={store}", "strategy=cpu",
         "tracking.system_metrics_interval_s=1", "+tracking.tags.api_token=HUNTER2", "+tracking.tags.team=vision"],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    from mlflow.tracking import MlflowClient

    (run,) = runs_of(store)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "mnist_cnn/crossentropy/sparse/none"  # model=auto picked the seed CNN for images
    # First contact: TensorFlow's native start-up lines are filtered; one summary line says where to look.
    for noise in ("cuInit", "oneDNN", "absl::InitializeLog", "cudart_stub", "INFO mlflow"):
        assert noise not in result.stderr, result.stderr[-2000:]
    exp_id = run.info.experiment_id
    assert (f"run mnist_cnn/crossentropy/sparse/none ({run.info.run_id}) FINISHED  test_accuracy=" in result.stdout
            and f"http://127.0.0.1:5000/#/experiments/{exp_id}/runs/{run.info.run_id}" in result.stdout)
    assert MlflowClient(store).get_experiment(exp_id).tags["mlflow.experimentKind"] == "custom_model_development"
    # Where the run came from, and the dataset as MLflow inputs (the UI's Dataset column).
    tags = run.data.tags
    assert {"xentlab.version.tensorflow", "xentlab.version.keras", "xentlab.version.mlflow", "xentlab.version.hydra",
            "xentlab.version.numpy", "xentlab.version.python"} <= set(tags)
    if subprocess.run(["git", "-C", str(CONF_DIR.parent), "rev-parse", "HEAD"], capture_output=True).returncode == 0:
        assert len(tags["mlflow.source.git.commit"]) == 40 and tags["xentlab.git.dirty"] in ("true", "false")
    assert tags["xentlab.command"].startswith("xentlab-train trainer.epochs=2 ")
    inputs = {i.dataset.name: i for i in run.inputs.dataset_inputs}
    assert set(inputs) == {"digits-n600"} and len(run.inputs.dataset_inputs) == 3  # data.limit=600 names it
    contexts = {t.value for i in run.inputs.dataset_inputs for t in i.tags if t.key == "mlflow.data.context"}
    assert contexts == {"training", "validation", "test"}
    # A secret given on the command line reaches no param, tag or artifact; other extra tags do.
    assert tags["api_token"] == "***" and tags["team"] == "vision"
    overrides_yaml = MlflowClient(store).download_artifacts(run.info.run_id, "overrides.yaml", str(tmp_path))
    logged = open(overrides_yaml).read() + open(
        MlflowClient(store).download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))).read()
    assert "HUNTER2" not in logged + tags["xentlab.command"] + str(run.data.params) + str(tags)
    assert "api_token=***" in logged
    assert set(CONTRACT) <= set(run.data.metrics)
    assert {"nll", "val_nll", "test_nll"} <= set(run.data.metrics)  # one scale for every loss variant
    from xentlab.metric_table import CLASSIFICATION, task_metrics

    # Calibration and imbalance metrics too: per epoch, per validation epoch and on the test split.
    per_position = ["loss", *(m.name for m in task_metrics(CLASSIFICATION) if m.computed != "shot")]
    assert {f"{p}{m}" for m in per_position for p in ("", "val_", "test_")} <= set(run.data.metrics)
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= set(run.data.metrics)
    client = MlflowClient(store)
    val_loss = client.get_metric_history(run.info.run_id, "val_loss")
    assert sorted(m.step for m in val_loss) == [0, 1]
    assert run.data.metrics["test_accuracy"] > 0.3  # chance is 0.1 on ten classes
    assert run.data.metrics["test_auc"] > 0.6  # chance is 0.5
    params = run.data.params
    assert params["loss.from_logits"] == "False" and params["labels.encoding"] == "sparse"
    assert params["hardware.strategy"] == "cpu" and params["data.train_size"] == "600"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "overrides.yaml", "model_summary.txt", "evaluation"} <= artifacts
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert {"evaluation/confusion_matrix.png", "evaluation/roc_curves.png", "evaluation/learning_curves.png",
            "evaluation/per_class.json", "evaluation/reliability.json", "evaluation/reliability.png"} <= plots
    # MLflow 3 keeps models as logged models linked to the run; runs:/<id>/model still resolves.
    import mlflow

    import xentlab.core.losses  # noqa: F401  (registers the loss and metric classes the saved model names)
    import xentlab.core.metric_set  # noqa: F401  (registers every metric class a saved model refers to)

    mlflow.set_tracking_uri(store)
    model = mlflow.keras.load_model(f"runs:/{run.info.run_id}/model")
    assert model.output_shape == (None, 10)
    info = mlflow.models.get_model_info(f"runs:/{run.info.run_id}/model")
    assert info.signature is not None
    # The tracking URI was absolute: nothing was written into Hydra's job directory or the cwd.
    assert not list(tmp_path.glob("outputs/**/mlflow.db")) and not (tmp_path / "mlruns").exists()


@pytest.mark.slow
def test_default_store_is_absolute_under_the_launch_directory(tmp_path):
    result = run_cli(TINY + ["data=digits", "model=mlp"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    db = tmp_path / "outputs" / "mlflow.db"
    assert db.is_file()
    (run,) = runs_of(f"sqlite:///{db}")
    assert run.info.artifact_uri.startswith((tmp_path / "outputs" / "mlartifacts").as_uri())


# ------------------------------------------------------------------------------------------ option matrix
# Every option of every config group trains at least once in `make test`: one short run per data source, each
# also carrying options of the other groups that go with that data, so 13 runs cover the whole matrix (the test
# below checks that they do). Files come from conftest's fixtures; "{name}" is filled with the fixture's path.
TINY_LSTM = ["model=char_lstm", "model.embedding_dim=8", "model.lstm_units=8", "model.sample_length=5",
             "data.seq_len=20", "data.stride=20", "data.path={text_file}"]
MATRIX = {
    "digits": ["model=mnist_cnn", "loss=focal", "labels=one_hot", "weighting=effective_number", "optimizer=adam",
               "strategy=cpu", "calibration=temperature"],
    "mnist": ["data.path={mnist_npz}", "model=mlp", "loss=poly1", "weighting=inverse_sqrt", "optimizer=sgd"],
    "fashion_mnist": ["data.path={fashion_dir}", "model=auto", "loss=logit_adjusted", "optimizer=rmsprop"],
    "breast_cancer": ["model=mlp", "loss=binary", "weighting=balanced", "labels=sparse", "labels.ignore_class=99"],
    "imbalanced": ["model=mlp", "loss=weighted_binary", "labels=one_hot", "weighting=custom",
                   "weighting.weights=[1,2,2,3]"],
    "periods": ["model=multi_head", "loss=crossentropy", "weighting=none", "optimizer=adadelta"],
    "text": TINY_LSTM,
    "shakespeare": [*TINY_LSTM, "optimizer=rmsprop", "metrics.extra=[auc]"],  # a language model's opt-in metric
    "image_folder": ["data.path={image_dir}", "data.image_size=[16,16]", "model=auto"],
    "csv": ["data.path={table_csv}", "data.label=species", "model=mlp", "+setup=balanced"],
    "parquet": ["data.path={table_parquet}", "data.label=species", "model=mlp", "+setup=focal_effective_number"],
    "npz": ["data.path={arrays_npz}", "model=mlp", "+setup=logit_adjusted"],
    "custom": ["data._target_=sklearn.datasets.load_iris", "data.options={return_X_y: true}", "model=mlp",
               "+setup=crossentropy", "calibration=temperature"],
}
# Hardware this machine lacks (test_strategy checks their errors and that strategy=auto trains as the preset it
# picks), and multi_cpu and multi_worker, which need processes of their own (test_strategy trains both).
NOT_IN_PROCESS = {("strategy", s) for s in ("gpu", "multi_gpu", "tpu", "multi_worker", "multi_cpu")}
# Trained by tests/test_own_model.py: custom needs a user's module (fast there), resnet and keras_app take seconds of
# CPU to trace (slow there).
NOT_IN_PROCESS |= {("model", m) for m in ("custom", "resnet", "keras_app")}
GROUPS = ("data", "model", "loss", "labels", "weighting", "strategy", "optimizer", "trainer", "tracking",
          "calibration", "setup")


def _chosen(data: str, overrides: list[str]) -> set[tuple[str, str]]:
    """The (group, option) pairs one matrix run trains: its own choices, else the primary config's defaults."""
    import yaml

    defaults = {}
    for entry in yaml.safe_load((CONF_DIR / "train.yaml").read_text())["defaults"]:
        if isinstance(entry, dict):
            defaults.update(entry)
    chosen = {g: o for g, o in defaults.items() if g in GROUPS} | {"data": data}
    chosen |= {o.split("=")[0].lstrip("+"): o.split("=")[1] for o in overrides
               if o.split("=")[0].lstrip("+") in GROUPS}
    return set(chosen.items())


def test_the_matrix_trains_every_option_of_every_group():
    every = {(g, f.stem) for g in GROUPS for f in (CONF_DIR / g).glob("*.yaml")} - NOT_IN_PROCESS
    covered = set().union(*(_chosen(data, overrides) for data, overrides in MATRIX.items()))
    assert every - covered == set()


@pytest.mark.parametrize("data", list(MATRIX))
def test_every_option_trains_one_short_epoch(
    data, store, mnist_npz, fashion_dir, text_file, image_dir, table_csv, table_parquet, arrays_npz
):
    from xentlab.cli.train import run

    files = {"mnist_npz": mnist_npz, "fashion_dir": fashion_dir, "text_file": text_file, "image_dir": image_dir,
             "table_csv": table_csv, "table_parquet": table_parquet, "arrays_npz": arrays_npz}
    overrides = [f"data.path={files[o[len('data.path={'):-1]]}" if o.startswith("data.path=") else o
                 for o in MATRIX[data]]
    objective = run(compose([*TINY, f"tracking.uri={store}", f"data={data}", *overrides]))
    (logged,) = runs_of(store)
    assert logged.info.status == "FINISHED"
    assert objective == pytest.approx(logged.data.metrics["val_nll"], rel=1e-6)  # what sweepers minimise
    metrics = logged.data.metrics
    assert {"loss", "accuracy", "val_accuracy", "test_accuracy", "nll"} <= set(metrics)
    if logged.data.params["model.resolved"] == "char_lstm":  # a language model: bits per character too
        assert {"bpc", "val_bpc", "test_bpc", "test_perplexity"} <= set(metrics)
        # Its own set: nll (bpc) and next-token accuracy; anything else only when asked for by name.
        assert not {"ece", "val_balanced_accuracy", "test_macro_f1", "test_classwise_ece"} & set(metrics)
        assert ({"auc", "val_auc", "test_auc"} <= set(metrics)) == ("metrics.extra=[auc]" in overrides)
        assert metrics["val_bpc"] == pytest.approx(metrics["val_nll"] / math.log(2), rel=1e-6)
        assert metrics["test_bpc"] == pytest.approx(metrics["test_nll"] / math.log(2), rel=1e-6)
        assert metrics["test_perplexity"] == pytest.approx(math.exp(metrics["test_nll"]), rel=1e-6)
    else:
        assert not {"bpc", "val_bpc", "test_bpc"} & set(metrics)
        assert {"auc", "val_auc", "test_auc", "val_ece", "test_worst_class_recall"} <= set(metrics)
    if "calibration=temperature" in overrides:
        assert "test_nll_calibrated" in metrics
    if "labels.ignore_class=99" in overrides:  # the plan's warning reaches the run
        assert logged.data.tags["xentlab.warning"].startswith("labels.ignore_class=99 masks nothing")


def test_sparse_and_one_hot_give_the_same_loss_on_the_same_batch():
    import keras

    from xentlab.cli.train import prepare

    losses = {}
    for encoding in ("sparse", "one_hot"):
        config = _container([*TINY, f"labels={encoding}", "strategy=cpu"])
        prepared = prepare(config)
        x, y = next(iter(prepared.val_ds))
        keras.utils.set_random_seed(0)
        probs = prepared.model(x, training=False)
        losses[encoding] = float(prepared.model.loss(y, probs))
        assert y.shape == ((32,) if encoding == "sparse" else (32, 10))
    assert losses["sparse"] == pytest.approx(losses["one_hot"], abs=1e-6)


@pytest.mark.slow
def test_sparse_and_one_hot_runs_give_the_same_val_loss(tmp_path):
    from xentlab.cli.train import run

    values = {}
    for encoding in ("sparse", "one_hot"):
        store = f"sqlite:///{tmp_path / encoding}.db"
        values[encoding] = run(compose(["trainer.epochs=2", "trainer.batch_size=32", "data.limit=128",
                                        "trainer.deterministic=true", "tracking.log_model=false",
                                        "tracking.log_plots=false", f"labels={encoding}", f"tracking.uri={store}"]))
    assert values["sparse"] == pytest.approx(values["one_hot"], abs=1e-4)


@pytest.mark.slow
def test_masked_na_labels_train_like_the_subset_without_them(tmp_path):
    """The seed's two answers to an n/a label: mask it (labels.ignore_class=-1) or drop those examples
    (data.drop_na=true). With full batches, which then hold the same labelled examples, the runs are equal."""
    from mlflow.tracking import MlflowClient

    from xentlab.cli.train import run
    from xentlab.data import DataError

    common = ["model=mlp", "model.dropout=0.0", "data.limit=256", "data.na_fraction=0.25", "trainer.epochs=3",
              "trainer.batch_size=1024", "trainer.deterministic=true", "tracking.log_model=false",
              "tracking.log_plots=false", "tracking.system_metrics=false"]
    metrics, sizes = {}, {}
    for name, extra in {"masked": ["labels.ignore_class=-1"], "dropped": ["data.drop_na=true"]}.items():
        store = f"sqlite:///{tmp_path / name}.db"
        run(compose([*common, *extra, f"tracking.uri={store}"]))
        (logged,) = runs_of(store)
        metrics[name], sizes[name] = logged.data.metrics, int(logged.data.params["data.train_size"])
        history = MlflowClient(store).get_metric_history(logged.info.run_id, "loss")
        metrics[name]["loss_curve"] = [m.value for m in sorted(history, key=lambda m: m.step)]
    assert sizes["masked"] == 256 and 150 < sizes["dropped"] < 230  # about a quarter dropped
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "val_auc", "test_loss", "test_accuracy", "test_auc"):
        assert metrics["masked"][key] == pytest.approx(metrics["dropped"][key], abs=1e-4), key
    assert metrics["masked"]["loss_curve"] == pytest.approx(metrics["dropped"]["loss_curve"], abs=1e-4)
    assert len(set(metrics["masked"]["loss_curve"])) == 3  # it trained

    with pytest.raises(ValueError, match="labels.ignore_class"):  # n/a labels that nobody masks
        run(compose([*common, f"tracking.uri=sqlite:///{tmp_path / 'unmasked'}.db"]))
    with pytest.raises(DataError, match="mask the n/a positions instead"):
        run(compose(["+experiment=periods", "data.na_fraction=0.1", "data.drop_na=true", "trainer.dry_run=true"]))


def _container(overrides):
    from omegaconf import OmegaConf

    return OmegaConf.to_container(compose(overrides), resolve=True)


# ------------------------------------------------------------------------------------------ failures
def test_mnist_offline_without_cache_names_the_file_and_data_path(tmp_path, monkeypatch):
    from xentlab.data import DataError, images

    monkeypatch.setattr(images, "KERAS_CACHE", tmp_path)

    def offline():
        raise OSError("network unreachable")

    with pytest.raises(DataError, match=r"mnist\.npz.*data\.path="):
        images._mnist_format("mnist", None, tmp_path / "mnist.npz", images._read_mnist_npz, offline, 0.1, 0)


@pytest.mark.timeout(1200)
def test_ctrl_c_marks_the_run_killed(tmp_path, store):
    """Ctrl-C mid-training ends the run KILLED. The test waits on conditions, not on the clock: for the first epoch
    line (a loaded machine may take minutes to get there), then for the exit; 10,000 epochs, so an interrupt that
    was lost shows as a process that never ends, whatever the load."""
    import queue
    import threading

    args = ["trainer.epochs=10000", "data.limit=400", f"tracking.uri={store}", "trainer.verbose=line"]
    cmd = [sys.executable, "-c", "from xentlab.cli.train import main; main()", *args]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:  # drains the pipe, so the run never blocks on a full one
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    try:
        seen = []
        while not seen or "val_loss" not in seen[-1]:  # until the first epoch has ended
            seen.append(lines.get(timeout=600))
            assert seen[-1] is not None, "the run ended before its first epoch:\n" + "".join(seen[:-1])[-3000:]
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=300)  # seconds when the machine is idle
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    (logged,) = runs_of(store)
    assert logged.info.status == "KILLED"
    assert "KeyboardInterrupt" in logged.data.tags["xentlab.error"]


@pytest.mark.slow
def test_dry_run_validates_and_builds_without_logging(tmp_path, store):
    result = run_cli(["trainer.dry_run=true", f"tracking.uri={store}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "dry run: config and data valid" in result.stdout
    assert "Total params" in result.stdout
    assert runs_of(store) == []


def test_flat_features_train_with_the_default_model(tmp_path, store):
    result = run_cli(["data=breast_cancer", *TINY, f"tracking.uri={store}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = runs_of(store)
    assert run.info.status == "FINISHED" and run.data.params["model.resolved"] == "mlp"
    assert run.info.run_name == "mlp/crossentropy/sparse/none"


def test_an_expected_error_prints_one_block_without_traceback_and_fails_the_run(tmp_path, store):
    result = run_cli(["data=breast_cancer", "model=mnist_cnn", *TINY, f"tracking.uri={store}"], cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "Error executing job" not in result.stderr
    assert "model=mnist_cnn needs images" in result.stderr and "use model=mlp" in result.stderr
    (run,) = runs_of(store)
    assert run.info.status == "FAILED"
    assert f"({run.info.run_id}) is marked FAILED" in result.stderr
    assert "model=mnist_cnn needs images" in run.data.tags["xentlab.error"]
    # trainer.debug=true shows the traceback for the same error.
    debug = run_cli(["data=breast_cancer", "model=mnist_cnn", *TINY, f"tracking.uri={store}", "trainer.debug=true",
                     "trainer.resume=never"], cwd=tmp_path)
    assert debug.returncode != 0 and "Traceback" in debug.stderr

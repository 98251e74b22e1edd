"""Data users bring: image folders streamed from disk, CSV/Parquet tables, npz arrays and their own loaders.

Loaders are tested directly (cheap, and the many error cases); a handful of runs go through the real CLI.
"""

from __future__ import annotations

import json
import shutil
import textwrap

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from conftest import IMAGE_CLASSES, TINY, blobs_table, compose, run_cli, runs_of, write_images
from xentlab.config import checks
from xentlab.data import DataBundle, DataError, load_data

SPLIT = {"val_fraction": 0.2, "test_fraction": 0.2, "split_seed": 0}
IMAGES = {"image_size": [16, 16], "color_mode": "grayscale", **SPLIT}


def _per_class(store: str, run_id: str, tmp_path) -> dict:
    path = MlflowClient(store).download_artifacts(run_id, "evaluation/per_class.json", str(tmp_path))
    return json.loads(open(path).read())["all"]


def _finished(store: str):
    (run,) = runs_of(store)
    assert run.info.status == "FINISHED", run.data.tags.get("xentlab.error")
    return run


def _sizes(run) -> dict[str, int]:
    return {split: int(run.data.params[f"data.{split}_size"]) for split in ("train", "val", "test")}


# ------------------------------------------------------------------------------------------ image folders
def test_image_folder_lists_paths_and_labels_from_class_folders(image_dir):
    bundle = load_data("image_folder", path=str(image_dir), **IMAGES)
    assert bundle.class_names == sorted(IMAGE_CLASSES) and bundle.num_classes == 3
    assert bundle.streamed and bundle.x_train.dtype.kind == "U"  # paths, not pixels
    assert bundle.input_shape == (16, 16, 1) and bundle.input_dtype == "float32"
    assert sum(bundle.sizes().values()) == 120 and bundle.sizes()["test"] == 24  # 0.2 of 120
    for x, y in bundle.splits().values():
        folders = [p.split("/")[-2] for p in x]
        assert [bundle.class_names[c] for c in y] == folders  # each label is its file's folder
        assert set(y) == {0, 1, 2}  # stratified: every class in every split
    listed = np.concatenate([bundle.x_train, bundle.x_val, bundle.x_test])
    assert len(set(listed)) == 120  # no image in two splits


def test_image_folder_limit_takes_every_class(image_dir):
    bundle = load_data("image_folder", path=str(image_dir), limit=12, **IMAGES)
    assert len(bundle.x_train) == 12 and set(bundle.y_train) == {0, 1, 2}


def test_image_folder_class_names_and_paths_may_be_non_ascii(tmp_path):
    write_images(tmp_path / "données", {"ñandú": 5, "zèbre": 5})
    bundle = load_data("image_folder", path=str(tmp_path / "données"), **IMAGES)
    assert bundle.class_names == ["zèbre", "ñandú"]  # sorted by code point, as Python sorts the folder names
    assert bundle.features("train").shape == (6, 16, 16, 1)


def test_image_folder_with_split_folders_keeps_them_and_splits_off_a_missing_test(tmp_path):
    write_images(tmp_path / "train", {"a": 20, "b": 30})
    write_images(tmp_path / "val", {"a": 4, "b": 6}, seed=1)
    bundle = load_data("image_folder", path=str(tmp_path), **IMAGES)
    assert bundle.sizes() == {"train": 40, "val": 10, "test": 10}  # test: 0.2 of train/, val: val/ as it is
    assert all("/val/" in p for p in bundle.x_val) and not any("/val/" in p for p in bundle.x_test)
    assert bundle.meta["layout"] == "split folders (train, val)"


def test_decoded_images_are_the_files_pixels_scaled_to_unit_range(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = {c: rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8) for c in ("a", "b")}
    for c, p in pixels.items():
        (tmp_path / c).mkdir()
        for i in range(5):
            Image.fromarray(p).save(tmp_path / c / f"{i}.png")  # lossless: decoding must give the pixels back
    bundle = load_data("image_folder", path=str(tmp_path), image_size=[16, 16], color_mode="rgb", **SPLIT)
    images = bundle.features("train")
    assert images.shape == (len(bundle.x_train), 16, 16, 3) and images.dtype == np.float32
    for image, label in zip(images, bundle.y_train, strict=True):
        np.testing.assert_allclose(image, pixels[bundle.class_names[label]] / 255.0, atol=1e-6)
    gray = load_data("image_folder", path=str(tmp_path), image_size=[8, 8], color_mode="grayscale", **SPLIT)
    small = gray.features("val", 2)
    assert small.shape == (2, 8, 8, 1) and 0.0 <= small.min() and small.max() <= 1.0


def test_streamed_training_set_matches_the_same_images_held_in_memory(image_dir):
    """The streamed pipeline is the in-memory one with decoding moved inside: same order, weights, n/a masking."""
    from xentlab.core.pipeline import make_dataset
    from xentlab.core.targets import LabelContract
    from xentlab.core.weighting import class_weights, label_counts

    bundle = load_data("image_folder", path=str(image_dir), na_fraction=0.2, **IMAGES)
    labels = LabelContract(3, encoding="one_hot", ignore_class=-1)
    weights = class_weights(label_counts(bundle.y_train, labels), "balanced")
    common = {"batch_size": 16, "labels": labels, "class_weights": weights, "shuffle": True, "seed": 3,
              "epochs": (1, 3)}
    streamed = list(make_dataset(bundle.x_train, bundle.y_train, decode=bundle.decode, **common))
    in_memory = list(make_dataset(bundle.features("train"), bundle.y_train, **common))
    assert len(streamed) == len(in_memory) == 2 * -(-len(bundle.x_train) // 16)
    for (xs, ys, ws), (xm, ym, wm) in zip(streamed, in_memory, strict=True):
        np.testing.assert_allclose(xs.numpy(), xm.numpy(), atol=1e-6)  # resize may differ by an ulp
        np.testing.assert_array_equal(ys.numpy(), ym.numpy())
        np.testing.assert_allclose(ws.numpy(), wm.numpy())
    assert (bundle.y_train == -1).any()  # n/a labels were drawn ...
    assert any((w.numpy() == 0).any() for _, _, w in streamed)  # ... and weigh nothing


def _corrupt(kind: str):
    def make(root):
        write_images(root, {"a": 4, "b": 4})
        if kind == "text":
            (root / "a" / "fake.png").write_text("not an image")
        elif kind == "empty":
            (root / "b" / "empty.jpg").write_bytes(b"")
        else:  # a PNG cut short
            data = (root / "a" / "a_1.png").read_bytes()
            (root / "a" / "a_1.png").write_bytes(data[: len(data) // 2])
    return make


def _layout(counts: dict[str, int], loose: int = 0, extra_dirs=()):
    def make(root):
        write_images(root, counts)
        for name in extra_dirs:
            (root / name).mkdir()
        if loose:
            write_images(root / "tmp", {"x": loose})
            for f in (root / "tmp" / "x").iterdir():
                f.rename(root / f.name)
            shutil.rmtree(root / "tmp")
    return make


def _split_folders_with_extra(root):
    write_images(root / "train", {"a": 4, "b": 4})
    (root / "validation").mkdir()


def _unknown_val_class(root):
    write_images(root / "train", {"a": 4, "b": 4})
    write_images(root / "val", {"a": 2, "c": 2})


BAD_FOLDERS = {
    "empty_folder": (_layout({}), "has no class sub-folders; expected DIR/<class>/<image>"),
    "images_without_class_folders": (_layout({}, loose=3), "has no class sub-folders (it holds 3 images directly)"),
    "one_class": (_layout({"a": 5}), "has one class folder (a); classification needs at least 2 classes"),
    "class_folder_without_images": (_layout({"a": 5, "b": 5}, extra_dirs=["c"]), "c holds no images"),
    "text_file_named_png": (_corrupt("text"), "1 of 9 image files under"),
    "empty_jpeg": (_corrupt("empty"), "empty.jpg. Remove or replace them"),
    "truncated_png": (_corrupt("truncated"), "a_1.png. Remove or replace them"),
    "split_folders_with_another": (_split_folders_with_extra, "found also ['validation']"),
    "val_class_unknown_to_train": (_unknown_val_class, "has class folders ['c'] that the training split lacks"),
}


@pytest.mark.parametrize("case", sorted(BAD_FOLDERS))
def test_bad_image_folders_fail_with_a_message_naming_the_problem(case, tmp_path):
    make, message = BAD_FOLDERS[case]
    make(tmp_path)
    with pytest.raises(DataError) as raised:
        load_data("image_folder", path=str(tmp_path), **IMAGES)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"path": None}, "data=image_folder needs data.path=DIR"),
        ({"path": "/no/such/folder"}, "data.path=/no/such/folder is not a folder"),
        ({"color_mode": "sepia"}, "data.color_mode must be one of ['grayscale', 'rgb'], got 'sepia'"),
        ({"image_size": [16]}, "data.image_size must be [height, width] in pixels, got [16]"),
    ],
)
def test_bad_image_folder_options(options, message, image_dir):
    with pytest.raises(DataError) as raised:
        load_data("image_folder", **{**IMAGES, "path": str(image_dir), **options})
    assert message in str(raised.value)


def test_color_mode_is_a_closed_choice_at_compose_time():
    with pytest.raises(Exception, match="data.color_mode=sepia") as raised:
        compose(["data=image_folder", "data.color_mode=sepia"])
    assert "Invalid value 'sepia', expected one of [grayscale, rgb]" in str(raised.value.__cause__)


def test_checks_accept_path_arrays_and_report_empty_or_missing_splits(image_dir):
    bundle = load_data("image_folder", path=str(image_dir), **IMAGES)
    checks.check_bundle(bundle, ignore_class=None)  # paths: no NaN check, no error
    bundle.x_test, bundle.y_test = bundle.x_test[:0], bundle.y_test[:0]
    with pytest.raises(checks.CheckError, match="the test split is empty"):
        checks.check_bundle(bundle, ignore_class=None)
    bundle.x_val = None
    with pytest.raises(checks.CheckError, match="the val split is missing"):
        checks.check_bundle(bundle, ignore_class=None)


# ------------------------------------------------------------------------------------------ tables
def test_csv_string_labels_become_sorted_class_ids_and_features_are_standardised(table_csv):
    bundle = load_data("csv", path=str(table_csv), label="species", **SPLIT)
    frame = blobs_table()
    assert bundle.class_names == ["setosa", "versicolor", "virginica"] and bundle.num_classes == 3
    assert bundle.input_shape == (4,) and bundle.x_train.dtype == np.float32
    assert sum(bundle.sizes().values()) == len(frame)
    np.testing.assert_allclose(bundle.x_train.mean(0), 0.0, atol=1e-5)  # training-split statistics
    np.testing.assert_allclose(bundle.x_train.std(0), 1.0, atol=1e-3)
    # Each example keeps its row's species: find the row by its raw features.
    raw = load_data("csv", path=str(table_csv), label="species", standardize=False, **SPLIT)
    rows = frame.iloc[:, :4].to_numpy()
    for x, y in zip(raw.x_test, raw.y_test, strict=True):
        distance = np.abs(rows - x).max(axis=1)
        assert distance.min() < 1e-5 and frame["species"].iloc[distance.argmin()] == raw.class_names[y]


def test_parquet_reads_like_csv(table_csv, table_parquet):
    a = load_data("csv", path=str(table_csv), label="species", **SPLIT)
    b = load_data("parquet", path=str(table_parquet), label="species", **SPLIT)
    assert a.class_names == b.class_names
    for split in ("train", "val", "test"):
        np.testing.assert_allclose(getattr(a, f"x_{split}"), getattr(b, f"x_{split}"), atol=1e-5)
        np.testing.assert_array_equal(getattr(a, f"y_{split}"), getattr(b, f"y_{split}"))


def test_csv_split_column_and_feature_selection(tmp_path):
    frame = blobs_table(60)
    frame["fold"] = ["train"] * 40 + ["test"] * 20
    frame["species_id"] = frame["species"].map({"setosa": 0, "versicolor": 1, "virginica": 2})
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    bundle = load_data("csv", path=str(path), label="species_id", features=["petal_length", "sepal_length"],
                       split_column="fold", **SPLIT)
    assert bundle.sizes() == {"train": 32, "val": 8, "test": 20}  # val: 0.2 of the train rows
    assert bundle.input_shape == (2,) and bundle.class_names == ["0", "1", "2"]
    np.testing.assert_array_equal(bundle.y_test, frame["species_id"].to_numpy()[40:])  # test rows kept in order


def test_table_n_a_ids_are_not_classes_and_the_label_contract_masks_them(tmp_path):
    from xentlab.core.targets import LabelContract
    from xentlab.core.weighting import label_counts

    frame = blobs_table(60)
    ids = frame["species"].map({"setosa": 0, "versicolor": 1, "virginica": 2}).to_numpy().copy()
    ids[::5] = -1  # the n/a marker of this table
    frame["species"] = ids
    path = tmp_path / "na.csv"
    frame.to_csv(path, index=False)
    bundle = load_data("csv", path=str(path), label="species", **SPLIT)
    assert bundle.num_classes == 3  # classes 0..max id; -1 never counts as one
    y = np.concatenate([bundle.y_train, bundle.y_val, bundle.y_test])
    counts = label_counts(y, LabelContract(bundle.num_classes, ignore_class=-1))
    assert counts.sum() == (ids != -1).sum() and counts.tolist() == np.bincount(ids[ids != -1]).tolist()


def _table(tmp_path, **columns) -> str:
    frame = blobs_table(30)
    for name, values in columns.items():
        frame[name] = values
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    return str(path)


BAD_TABLES = {
    "no_label_option": ({}, {"label": None}, "data=csv needs data.label=COLUMN; the columns of"),
    "missing_label_column": ({}, {"label": "kind"}, "data.label=kind is not a column of"),
    "missing_labels": ({"species": ["a", None] * 15}, {}, "label column 'species' has missing values in 15 rows"),
    "fractional_labels": ({"species": [0.5, 1.0] * 15}, {}, "label column 'species' holds non-whole numbers"),
    "text_feature": ({"colour": ["red", "blue"] * 15}, {}, "feature columns ['colour'] are not numeric"),
    "missing_features": ({"extra": [1.0, None, 2.0] * 10}, {}, "feature columns have missing values"),
    "unknown_feature": ({}, {"features": ["petal_size"]}, "data.features names columns ['petal_size']"),
    "label_as_feature": ({}, {"features": ["species"]}, "data.features includes ['species']"),
    "bad_split_value": ({"fold": ["train", "dev", "test"] * 10}, {"split_column": "fold"}, "found ['dev']"),
    "no_train_rows": ({"fold": ["val", "test"] * 15}, {"split_column": "fold"}, "marks no row as train"),
    "one_class": ({"species": ["a"] * 30}, {}, "fewer than 2 classes"),
    "only_na_ids": ({"species": [-1] * 30}, {}, "fewer than 2 classes"),
}


@pytest.mark.parametrize("case", sorted(BAD_TABLES))
def test_bad_tables_fail_naming_the_column(case, tmp_path):
    columns, options, message = BAD_TABLES[case]
    path = _table(tmp_path, **columns)
    with pytest.raises(DataError) as raised:
        load_data("csv", **{"path": path, "label": "species", **SPLIT, **options})
    assert message in str(raised.value)


# ------------------------------------------------------------------------------------------ npz
def test_npz_keeps_any_shape_splits_off_missing_splits_and_scales(arrays_npz, tmp_path):
    bundle = load_data("npz", path=str(arrays_npz), **SPLIT)
    assert bundle.input_shape == (6, 2) and bundle.num_classes == 4
    assert bundle.sizes() == {"train": 240, "val": 80, "test": 80}
    x = np.arange(40, dtype=np.uint8).reshape(10, 2, 2)
    path = tmp_path / "given.npz"
    np.savez(path, x_train=x, y_train=np.array(["b", "a"] * 5), x_test=x[:4], y_test=np.array(["a"] * 4),
             x_val=x[:2], y_val=np.array(["b", "a"]))
    given = load_data("npz", path=str(path), scale=0.5, **SPLIT)
    assert given.sizes() == {"train": 10, "val": 2, "test": 4} and given.class_names == ["a", "b"]
    np.testing.assert_allclose(given.x_train, x * 0.5)
    np.testing.assert_array_equal(given.y_train, [1, 0] * 5)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros((5, 2)), "y": np.zeros(5)}, "lacks ['x_train', 'y_train']"),
        ({"x_train": np.zeros((5, 2))}, "lacks ['y_train']"),
        ({"x_train": np.zeros((5, 2)), "y_train": np.arange(5), "x_test": np.zeros((2, 2))},
         "has x_test without y_test"),
        ({"x_train": np.zeros((5, 2)), "y_train": np.arange(5), "x_valid": np.zeros((2, 2))},
         "has ['x_valid'], which are not used"),
    ],
)
def test_bad_npz_files(arrays, message, tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError) as raised:
        load_data("npz", path=str(path), **SPLIT)
    assert message in str(raised.value)


def test_npz_that_is_not_an_npz(tmp_path):
    path = tmp_path / "bad.npz"
    path.write_text("hello")
    with pytest.raises(DataError, match="cannot read .* as an .npz of plain arrays"):
        load_data("npz", path=str(path), **SPLIT)
    with pytest.raises(DataError, match="data=npz needs data.path=FILE.npz"):
        load_data("npz", path=None, **SPLIT)


# ------------------------------------------------------------------------------------------ custom loaders
LOADERS = textwrap.dedent(
    """
    import numpy as np
    from xentlab.data import DataBundle

    def _blobs(n, seed=0):
        rng = np.random.default_rng(seed)
        y = rng.integers(0, 3, n)
        return (rng.normal(size=(n, 5)) + 2.0 * np.eye(3, 5)[y]).astype("float32"), y

    def pair(n=90):
        return _blobs(n)

    def keras_layout(split_seed):
        return _blobs(80, split_seed), _blobs(30, split_seed + 1)

    def three(**kwargs):
        return _blobs(60), _blobs(20, 1), _blobs(20, 2)

    def named(n_samples, names=("low", "mid", "high")):
        x, y = _blobs(n_samples)
        return {"x_train": x, "y_train": y, "class_names": list(names), "num_classes": 3}

    def bundle(val_fraction, test_fraction):
        x, y = _blobs(30)
        return DataBundle("mine", x[:10], y[:10], x[10:20], y[10:20], x[20:], y[20:], num_classes=3)

    def wrong():
        return [1, 2, 3]

    not_callable = 42
    """
)


@pytest.fixture
def loaders(tmp_path, monkeypatch):
    (tmp_path / "my_loaders.py").write_text(LOADERS)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_loaders"


@pytest.mark.parametrize(
    ("function", "options", "sizes", "names"),
    [
        ("pair", {}, {"train": 54, "val": 18, "test": 18}, ["0", "1", "2"]),
        ("keras_layout", {}, {"train": 64, "val": 16, "test": 30}, ["0", "1", "2"]),
        ("three", {"anything": 1}, {"train": 60, "val": 20, "test": 20}, ["0", "1", "2"]),
        ("named", {"n_samples": 50}, {"train": 30, "val": 10, "test": 10}, ["low", "mid", "high"]),
        ("bundle", {}, {"train": 10, "val": 10, "test": 10}, ["0", "1", "2"]),
    ],
)
def test_custom_loader_return_forms(function, options, sizes, names, loaders):
    bundle = load_data("custom", _target_=f"{loaders}.{function}", options=options, path=None, **SPLIT)
    assert isinstance(bundle, DataBundle)
    assert bundle.sizes() == sizes and bundle.class_names == names and bundle.input_shape == (5,)
    checks.check_bundle(bundle, ignore_class=None)


@pytest.mark.parametrize(
    ("target", "options", "message"),
    [
        ("wrong", {}, "returned a list; expected a DataBundle, a dict with x_train and y_train"),
        ("named", {}, "needs ['n_samples']; pass them as data.options={n_samples: ...}"),
        ("pair", {"m": 3}, "data.options has ['m'], which my_loaders.pair does not take; its parameters are ['n']"),
        ("not_callable", {}, "is a int, not a function"),
        ("missing_function", {}, "module my_loaders has no missing_function"),
    ],
)
def test_custom_loader_errors_say_what_was_expected(target, options, message, loaders):
    with pytest.raises(DataError) as raised:
        load_data("custom", _target_=f"{loaders}.{target}", options=options, **SPLIT)
    assert message in str(raised.value)


def test_custom_loader_dispatch_errors():
    with pytest.raises(DataError, match="no module nowhere found; put the folder holding it on PYTHONPATH"):
        load_data("custom", _target_="nowhere.load", **SPLIT)
    with pytest.raises(DataError, match="data=custom needs data._target_=package.module.function"):
        load_data("custom", **SPLIT)
    with pytest.raises(DataError, match="data=digits is a built-in source; use data=custom data._target_=a.b"):
        load_data("digits", _target_="a.b", **SPLIT)


# ------------------------------------------------------------------------------------------ through the CLI
def test_image_folder_trains_through_the_cli_streamed(tmp_path, store, image_dir):
    listing = load_data("image_folder", path=str(image_dir), image_size=[16, 16], color_mode="grayscale",
                        val_fraction=0.15, test_fraction=0.15, split_seed=0, limit=96)
    args = [*TINY, "tracking.log_plots=true",
            "tracking.log_model=true", f"tracking.uri={store}", "data=image_folder", f"data.path={image_dir}",
            "data.image_size=[16,16]", "data.color_mode=grayscale", "model=mnist_cnn", "labels=one_hot",
            "weighting=balanced"]
    result = run_cli(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run = _finished(store)
    assert _sizes(run) == listing.sizes() == {"train": 84, "val": 18, "test": 18}  # limit 96 > 84 training images
    assert set(_per_class(store, run.info.run_id, tmp_path)) == set(IMAGE_CLASSES)
    assert run.data.params["data.num_classes"] == "3"
    assert {"test_recall_circle", "test_recall_square", "test_recall_stripe"} <= set(run.data.metrics)
    import mlflow

    mlflow.set_tracking_uri(store)
    info = mlflow.models.get_model_info(f"runs:/{run.info.run_id}/model")
    assert info.signature.inputs.inputs[0].shape == (-1, 16, 16, 1)  # made from decoded images, not paths


def test_image_split_folders_with_na_labels_train_in_process(tmp_path, store):
    from xentlab.cli.train import run as train

    write_images(tmp_path / "imgs" / "train", {"a": 30, "b": 30}, mode="RGB")
    write_images(tmp_path / "imgs" / "test", {"a": 6, "b": 6}, mode="RGB", seed=1)
    train(compose([*TINY, f"tracking.uri={store}", "data=image_folder", f"data.path={tmp_path / 'imgs'}",
                   "data.image_size=[12,12]", "data.na_fraction=0.2", "labels.ignore_class=-1"]))
    run = _finished(store)
    assert _sizes(run) == {"train": 51, "val": 9, "test": 12}  # val: 0.15 of train/ (60)
    assert run.data.params["data.color_mode"] == "rgb"  # logged as the word, not the enum's repr


@pytest.mark.slow
def test_csv_trains_through_the_cli_with_names_from_the_label_column(tmp_path, store):
    frame = blobs_table(200)
    frame["fold"] = np.where(np.arange(200) < 150, "train", np.where(np.arange(200) < 170, "val", "test"))
    path = tmp_path / "flowers.csv"
    frame.to_csv(path, index=False)
    args = [*TINY, "tracking.log_plots=true",
            f"tracking.uri={store}", "data=csv", f"data.path={path}", "data.label=species",
            "data.split_column=fold", "model=mlp", "data.na_fraction=0.1", "labels.ignore_class=-1",
            "weighting=inverse_sqrt"]
    result = run_cli(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run = _finished(store)
    assert _sizes(run) == {"train": 96, "val": 20, "test": 30}
    assert set(_per_class(store, run.info.run_id, tmp_path)) == {"setosa", "versicolor", "virginica"}


def test_npz_and_parquet_train_in_process(tmp_path, arrays_npz, table_parquet):
    from xentlab.cli.train import run as train

    for name, extra in {"npz": [f"data.path={arrays_npz}", "data.scale=0.5", "labels=one_hot"],
                        "parquet": [f"data.path={table_parquet}", "data.label=species", "data.drop_na=true",
                                    "data.na_fraction=0.1"]}.items():
        store = f"sqlite:///{tmp_path / name}.db"
        train(compose([*TINY, f"tracking.uri={store}", f"data={name}", "model=mlp", *extra]))
        run = _finished(store)
        assert int(run.data.params["data.train_size"]) <= 96 and int(run.data.params["data.test_size"]) > 0


def test_custom_loader_trains_through_the_cli(tmp_path, store):
    (tmp_path / "my_loaders.py").write_text(LOADERS)  # the CLI runs in tmp_path: its modules are importable
    args = [*TINY, "tracking.log_plots=true",
            f"tracking.uri={store}", "data=custom", "data._target_=my_loaders.named",
            "data.options={n_samples: 150, names: [low, mid, high]}", "model=mlp"]
    result = run_cli(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run = _finished(store)
    assert _sizes(run) == {"train": 96, "val": 23, "test": 23}  # 15% + 15% of 150 (rounded up); train capped at 96
    assert run.data.params["data._target_"] == "my_loaders.named"
    assert set(_per_class(store, run.info.run_id, tmp_path)) == {"low", "mid", "high"}


@pytest.mark.parametrize(
    ("make", "overrides", "message"),
    [
        ("one_class", [], "has one class folder (a); classification needs at least 2 classes"),
        ("csv", ["data=csv", "data.label=kind"], "data.label=kind is not a column of"),
    ],
)
def test_bad_user_data_fails_the_run_before_training(make, overrides, message, tmp_path, store):
    if make == "one_class":
        write_images(tmp_path / "imgs", {"a": 10})
        overrides = ["data=image_folder", f"data.path={tmp_path / 'imgs'}"]
    else:
        blobs_table(30).to_csv(tmp_path / "t.csv", index=False)
        overrides = [*overrides, f"data.path={tmp_path / 't.csv'}", "model=mlp"]
    result = run_cli([*TINY, f"tracking.uri={store}", *overrides], cwd=tmp_path)
    assert result.returncode != 0 and message in result.stderr
    (run,) = runs_of(store)
    assert run.info.status == "FAILED" and message in run.data.tags["xentlab.error"]
    assert not run.data.metrics  # nothing trained

"""Bad files a user brings: each is refused before training with a message naming the file, the row or the
column and the fix (a DataError: the run is FAILED with it, no traceback). Loaders are called directly on real
files; one run goes through the CLI."""

from __future__ import annotations

import os

import numpy as np
import pytest

from conftest import TINY, blobs_table, run_cli, runs_of, write_images
from xentlab.data import DataError, load_data

SPLIT = {"val_fraction": 0.2, "test_fraction": 0.2, "split_seed": 0}
IMAGES = {"image_size": [16, 16], "color_mode": "grayscale", **SPLIT}


# ---------------------------------------------------------------------------------------------- tables
def _csv(tmp_path, text: str) -> str:
    path = tmp_path / "t.csv"
    path.write_text(text)
    return str(path)


def _rows(n: int, label=lambda i: i % 2, sep: str = ",", labels: int = 1) -> str:
    """A CSV of n rows: two features and `labels` copies of the label column y."""
    header = ["f1", "f2", *["y"] * labels]
    lines = [header] + [[str(i), str(i * 2 % 7), *[str(label(i))] * labels] for i in range(n)]
    return "\n".join(sep.join(line) for line in lines) + "\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # pandas would rename the second y to y.1, a copy of the label among the features (test accuracy 1.0)
        (_rows(30, labels=2),
         "has columns named more than once: ['y'] (a second copy of a column, e.g. the label, would silently become"),
        (_rows(30, sep=";"), "reads as one column 'f1;f2;y' with data.delimiter=','; its header holds ';': set "
                             "data.delimiter=';'"),
        (_rows(30, label=lambda i: "inf" if i == 4 else i % 2),
         "label column 'y' holds values that are not class ids: inf in row 4 (0-based data rows)"),
        (_rows(30, label=lambda i: "1e20" if i in (2, 9) else i % 2), "1e+20 in row 2, 1e+20 in row 9"),
        (_rows(1), "1 example(s) are too few to split the val and test split off: with data.val_fraction=0.2 and "
                   "data.test_fraction=0.2 each split needs at least one example, so at least 3 are needed"),
    ],
    ids=["repeated_header", "semicolons", "inf_label", "huge_label", "one_row"],
)
def test_bad_csv_files_are_refused_naming_what_is_wrong(text, message, tmp_path):
    with pytest.raises(DataError) as raised:
        load_data("csv", path=_csv(tmp_path, text), label="y", **SPLIT)
    assert message in str(raised.value)


@pytest.mark.slow  # the loader test above is the fast one; this follows the refusal into a real run
def test_a_repeated_label_column_fails_the_run_before_training(tmp_path, store):
    """Before: the copy of the label became a feature, and the run FINISHED with test accuracy 1.0."""
    frame = blobs_table(60)
    frame.to_csv(tmp_path / "t.csv", index=False)
    text = (tmp_path / "t.csv").read_text().splitlines()
    rows = [text[0] + ",species", *[f"{line},{line.rsplit(',', 1)[1]}" for line in text[1:]]]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    result = run_cli([*TINY, f"tracking.uri={store}", "data=csv", f"data.path={tmp_path / 't.csv'}",
                      "data.label=species", "model=mlp", "tracking.system_metrics=false"], cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "has columns named more than once: ['species']" in result.stderr
    (run,) = runs_of(store)
    assert run.info.status == "FAILED" and "named more than once" in run.data.tags["xentlab.error"]
    assert not run.data.metrics


# ---------------------------------------------------------------------------------------------- splits
def test_a_class_with_one_example_always_trains(tmp_path):
    """Before: unstratified, the only example of a class landed in val or test for some seeds, never trained on."""
    write_images(tmp_path, {"common": 12, "other": 12, "rare": 1})
    for seed in range(8):
        bundle = load_data("image_folder", path=str(tmp_path), **{**IMAGES, "split_seed": seed})
        rare = bundle.class_names.index("rare")
        assert (bundle.y_train == rare).sum() == 1 and sum(bundle.sizes().values()) == 25, seed
        for name in ("common", "other"):  # the others are still stratified: each split holds both
            k = bundle.class_names.index(name)
            assert all((y == k).any() for y in (bundle.y_train, bundle.y_val, bundle.y_test)), seed


# ---------------------------------------------------------------------------------------------- npz
def test_an_npz_whose_features_and_labels_differ_in_length_is_refused(tmp_path):
    path = tmp_path / "a.npz"
    np.savez(path, x_train=np.zeros((40, 3)), y_train=np.arange(39) % 2)
    with pytest.raises(DataError, match=r"x_train holds 40 examples \(shape \(40, 3\)\) but y_train 39 labels"):
        load_data("npz", path=str(path), **SPLIT)


# ---------------------------------------------------------------------------------------------- image folders
def test_a_link_to_a_missing_image_is_named(tmp_path):
    write_images(tmp_path, {"a": 5, "b": 5})
    os.symlink(tmp_path / "gone.png", tmp_path / "a" / "link.png")
    with pytest.raises(DataError, match=r"1 files under .* are links to files that do not exist: .*a/link.png\. "
                                        r"Remove the links or restore"):
        load_data("image_folder", path=str(tmp_path), **IMAGES)


def test_a_file_name_that_is_not_utf8_is_named(tmp_path):
    write_images(tmp_path, {"a": 5, "b": 5})
    png = next((tmp_path / "a").glob("*.png"))
    os.rename(png, os.path.join(os.fsencode(tmp_path / "a"), b"caf\xe9.png"))  # a Latin-1 name
    with pytest.raises(DataError) as raised:
        load_data("image_folder", path=str(tmp_path), **IMAGES)
    assert "1 names under" in str(raised.value) and "a/caf\\xe9.png. Rename them to UTF-8" in str(raised.value)


def test_a_truncated_jpeg_is_named_and_trailing_bytes_after_a_whole_one_are_not(tmp_path):
    write_images(tmp_path, {"a": 5, "b": 5})
    whole = sorted((tmp_path / "a").glob("*.jpg"))
    whole[0].write_bytes(whole[0].read_bytes() + b"\0" * 16)  # padding after the end marker: still an image
    data = whole[1].read_bytes()
    whole[1].write_bytes(data[: len(data) * 2 // 3])  # the header check passes, decoding fails
    with pytest.raises(DataError) as raised:
        load_data("image_folder", path=str(tmp_path), **IMAGES)
    message = str(raised.value)
    assert f"1 of 10 image files under {tmp_path} are not readable images" in message
    assert str(whole[1]) in message and str(whole[0]) not in message

"""Images in class folders (Keras' layout), listed up front and streamed from disk through tf.data.

The bundle's x arrays hold file paths; `bundle.decode` reads, decodes, resizes and scales a batch of them inside
the input pipeline, so memory does not grow with the number of images.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from xentlab.choices import ColorMode
from xentlab.data.bundle import DataBundle, DataError, complete_splits

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")  # the formats Keras' image_dataset_from_directory reads
SPLIT_FOLDERS = ("train", "val", "test")
COLOR_CHANNELS = {mode.value: mode.channels for mode in ColorMode}
# First bytes of each format TensorFlow's decode_image reads (it goes by content, not by the file's extension).
SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM")
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the empty IEND chunk every complete PNG ends with
JPEG_END = b"\xff\xd9"  # the end-of-image marker of a complete JPEG
LAYOUT_HINT = "expected DIR/<class>/<image> or DIR/train/<class>/<image> (+ optional DIR/val/, DIR/test/)"


def _visible_dirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _files_under(folder: Path) -> tuple[list[str], int]:
    """Image files under `folder` (recursively, in sorted order) and how many other files were passed over."""
    images, others = [], 0
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue  # .DS_Store and the like
            if name.lower().endswith(IMAGE_EXTENSIONS):
                images.append(os.path.join(root, name))
            else:
                others += 1
    return images, others


def list_classes(
    folder: Path, class_names: Sequence[str] | None = None
) -> tuple[np.ndarray, np.ndarray, list[str], int]:
    """Lists `folder/<class>/**/<image>`: paths, integer labels, class names (sorted folder names), files skipped.

    With `class_names` given (the training split's), the folder's classes must be among them; a split may
    lack a class.
    """
    found = _visible_dirs(folder)
    if class_names is None:
        if not found:
            loose, _ = _files_under(folder)
            held = f" (it holds {len(loose)} images directly)" if loose else ""
            raise DataError(f"data=image_folder: {folder} has no class sub-folders{held}; {LAYOUT_HINT}")
        if len(found) < 2:
            raise DataError(
                f"data=image_folder: {folder} has one class folder ({found[0]}); classification needs at least 2 "
                f"classes, one sub-folder each"
            )
        class_names = found
    else:
        unknown = sorted(set(found) - set(class_names))
        if unknown:
            raise DataError(
                f"data=image_folder: {folder} has class folders {unknown} that the training split lacks "
                f"(its classes: {list(class_names)}); the model can only learn classes it trains on"
            )
    paths, labels, skipped = [], [], 0
    for label, name in enumerate(class_names):
        if name not in found:
            continue
        images, others = _files_under(folder / name)
        if not images:
            raise DataError(
                f"data=image_folder: class folder {folder / name} holds no images ({', '.join(IMAGE_EXTENSIONS)}); "
                f"add images or remove the folder"
            )
        paths += images
        labels += [label] * len(images)
        skipped += others
    return np.array(paths, dtype=str), np.array(labels, dtype=np.int64), list(class_names), skipped


def _utf8(path: str) -> bool:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:  # a name in another encoding, as os.fsdecode escapes it
        return False
    return True


def _shown(paths: Sequence[str]) -> str:
    # Names in another encoding are shown with their bytes escaped (\xe9), the way they would have to be typed.
    text = [os.fsencode(p).decode("utf-8", "backslashreplace") for p in paths[:5]]
    return ", ".join(text) + (", ..." if len(paths) > 5 else "")


def check_names(paths: Sequence[str], class_names: Sequence[str], root: Path) -> None:
    """Refuses file and class folder names that are not UTF-8 (TensorFlow reads only UTF-8 paths, and would stop
    mid-training with "Unable to convert element to UTF-8"), and links to files that do not exist."""
    foreign = [p for p in [*class_names, *paths] if not _utf8(p)]
    if foreign:
        raise DataError(
            f"data=image_folder: {len(foreign)} names under {root} are not UTF-8, which TensorFlow cannot read: "
            f"{_shown(foreign)}. Rename them to UTF-8 (e.g. `convmv -f latin1 -t utf-8 -r --notest {root}`)"
        )
    dangling = [p for p in paths if not os.path.exists(p)]
    if dangling:
        raise DataError(
            f"data=image_folder: {len(dangling)} files under {root} are links to files that do not exist: "
            f"{_shown(dangling)}. Remove the links or restore what they point to"
        )


def check_files(paths: list[str], class_names: Sequence[str], root: Path, skipped: int) -> None:
    """Every listed file before training: readable names, no dangling links, image bytes (see check_names and
    unreadable_images); the count of files passed over is printed."""
    check_names(paths, class_names, root)
    bad = unreadable_images(paths)
    if bad:
        raise DataError(
            f"data=image_folder: {len(bad)} of {len(paths)} image files under {root} are not readable images "
            f"(empty, truncated, or not PNG/JPEG/GIF/BMP data): {_shown(bad)}. Remove or replace them"
        )
    if skipped:
        print(f"data=image_folder: passed over {skipped} files under {root} without an image extension", flush=True)


def unreadable_images(paths: Sequence[str]) -> list[str]:
    """Files whose bytes are not an image TensorFlow can decode: empty, another format, or cut short.

    Reads each file's first 8 bytes (and a PNG's last 12, a JPEG's last 2): a check of the whole listing costs
    one small read per file, not a decode. A JPEG that does not end with its end-of-image marker (FF D9; some
    cameras append other bytes) is decoded once, as training would, to tell a truncated file from trailing bytes.
    """
    bad = []
    for path in paths:
        with open(path, "rb") as f:
            head = f.read(8)
            ok = head.startswith(SIGNATURES)
            if ok and head.startswith((SIGNATURES[0], SIGNATURES[1])):
                end = PNG_END if head.startswith(SIGNATURES[0]) else JPEG_END
                f.seek(max(os.fstat(f.fileno()).st_size - len(end), 0))
                ok = f.read() == end or (end == JPEG_END and _decodes(path))
        if not ok:
            bad.append(path)
    return bad


def _decodes(path: str) -> bool:
    import tensorflow as tf  # deferred: only for a JPEG without its end marker

    try:
        tf.io.decode_image(tf.io.read_file(path), expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.DataLossError):
        return False
    return True


def make_decoder(image_size: tuple[int, int], channels: int) -> Callable:
    """A function from a batch of image paths (B,) to float32 images (B, H, W, channels) in [0, 1].

    Each file is read, decoded (PNG, JPEG, GIF's first frame, BMP; converted to `channels`), resized
    bilinearly to `image_size` and divided by 255, as Keras' image_dataset_from_directory does.
    """
    import tensorflow as tf  # deferred: listing and checking a folder needs no TensorFlow

    height, width = image_size
    spec = tf.TensorSpec((height, width, channels), tf.float32)

    def decode_one(path):
        image = tf.io.decode_image(tf.io.read_file(path), channels=channels, expand_animations=False)
        image = tf.image.resize(image, (height, width))  # float32, still 0..255
        return tf.ensure_shape(image, spec.shape) / 255.0

    # A graph function: eager calls (bundle.features) run as fast as the same map inside tf.data.
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def decode(paths):
        return tf.map_fn(decode_one, paths, fn_output_signature=spec)

    return decode


def _shuffled(x: np.ndarray, y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    # A folder listing is sorted by class; shuffled once by the split seed so data.limit takes every class.
    order = np.random.default_rng(seed).permutation(len(x))
    return x[order], y[order]


def _split_folders(root: Path, folders: list[str], split_seed: int) -> tuple[list, list[str], int]:
    """The files of `root`'s train/ (and val/, test/) folders as x, y per split (None for a missing split, which
    complete_splits draws from train), the class names (train's class folders) and the files passed over."""
    extra = sorted(set(folders) - set(SPLIT_FOLDERS))
    if extra:
        raise DataError(
            f"data=image_folder: {root} has a train/ folder, so its sub-folders must be among {SPLIT_FOLDERS}; "
            f"found also {extra}. Rename them or point data.path at one folder of class folders"
        )
    x_train, y_train, class_names, skipped = list_classes(root / "train")
    parts: list = [*_shuffled(x_train, y_train, split_seed)]
    for split in ("val", "test"):
        if split not in folders:
            parts += [None, None]
            continue
        x, y, _, more = list_classes(root / split, class_names)
        if len(x) == 0:
            raise DataError(f"data=image_folder: {root / split} holds no class folders with images")
        parts += [*_shuffled(x, y, split_seed)]
        skipped += more
    return parts, class_names, skipped


def load_image_folder(
    path: str | None, val_fraction: float, test_fraction: float, split_seed: int,
    image_size: Sequence[int] = (64, 64), color_mode: str = "rgb", **_: object,
) -> DataBundle:
    """Images in one sub-folder per class (class names: the sorted folder names), streamed from disk.

    With `train/` (and optionally `val/`, `test/`) sub-folders, each holding class folders, those are the
    splits and a missing val or test split is split off `train/` by `split_seed`; otherwise the class folders
    are split train/val/test (stratified) by `split_seed`, `val_fraction` and `test_fraction`. Files with
    other extensions are passed over (their count is in meta["skipped_files"]). A file with an image
    extension that is not a readable image fails the load, naming it.
    """
    if path is None:
        raise DataError(f"data=image_folder needs data.path=DIR; {LAYOUT_HINT}")
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"data=image_folder: data.path={path} is not a folder; {LAYOUT_HINT}")
    mode = str(color_mode)
    if mode not in COLOR_CHANNELS:
        raise DataError(f"data.color_mode must be one of {sorted(COLOR_CHANNELS)}, got {mode!r}")
    size = tuple(int(v) for v in image_size)
    if len(size) != 2 or min(size) < 1:
        raise DataError(f"data.image_size must be [height, width] in pixels, got {list(image_size)}")

    folders = _visible_dirs(root)
    if "train" in folders:
        parts, class_names, skipped = _split_folders(root, folders, split_seed)
        layout = "split folders (" + ", ".join(s for s in SPLIT_FOLDERS if s in folders) + ")"
    else:
        x, y, class_names, skipped = list_classes(root)
        parts, layout = [x, y], "class folders"
    splits = complete_splits(*parts, val_fraction=val_fraction, test_fraction=test_fraction, seed=split_seed)
    listing = np.concatenate([splits[0], splits[2], splits[4]])
    check_files(listing.tolist(), class_names, root, skipped)
    channels = COLOR_CHANNELS[mode]
    return DataBundle(
        "image_folder", *splits, num_classes=len(class_names), class_names=class_names,
        meta={"source": str(root), "layout": layout, "images": len(listing), "skipped_files": skipped,
              "image_size": list(size), "color_mode": mode},
        decode=make_decoder(size, channels), decoded_shape=(*size, channels),
    )

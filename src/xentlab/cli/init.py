"""`xentlab init [DIR]`: a starter folder for an installed xentlab, with a model and a data loader of the user's own.

It writes a model module and its config (`conf/model/mine.yaml`, `_target_` naming the function), a data loader and
its config (`conf/data/mine.yaml`), and a README of the three commands: train, sweep, look. Nothing is overwritten.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from xentlab.cli.console import command
from xentlab.errors import ExpectedError

FILES = {
    "my_model.py": '''\
"""Your model: a backbone whose output is features. xentlab adds the head the loss needs (width, activation,
float32), so every loss, label encoding and loss.from_logits setting works with it unchanged."""

import keras
from keras import layers


def build(input_shape, width=64, dropout=0.2):
    """Called with the arguments it declares: input_shape (one example's), num_classes, vocab_size, and the keys
    of model.options (conf/model/mine.yaml). Return a whole model instead with model.full_model=true."""
    return keras.Sequential([
        keras.Input(shape=input_shape),
        layers.Flatten(),
        layers.Dense(width, activation="relu"),
        layers.Dropout(dropout),
    ])
''',
    "my_data.py": '''\
"""Your data: returns (x, y) with integer labels; xentlab splits off validation and test by data.split_seed.
Replace the body with your own loading (other return forms: see xentlab.data.custom)."""

from sklearn.datasets import load_digits


def load():
    digits = load_digits()
    return digits.images[..., None] / 16.0, digits.target  # 8x8 grey images in [0, 1], 10 classes
''',
    "conf/model/mine.yaml": '''\
# Your model: model=mine. `_target_` names the function; options are its keyword arguments.
defaults: [base_custom, _self_]
name: mine
_target_: my_model.build
full_model: false   # false: build() returns a backbone and xentlab adds the head; true: your head, checked
options:
  width: 64
''',
    "conf/data/mine.yaml": '''\
# Your data: data=mine. `_target_` names the loader; options are its keyword arguments.
defaults: [base_custom, _self_]
name: mine
_target_: my_data.load
''',
    "README.md": '''\
# My xentlab experiments

Run from this folder (`my_model.py` and `my_data.py` are imported from it; `conf/` adds `model=mine` and
`data=mine` to xentlab's own groups). Runs are stored in `outputs/mlflow.db`.

```bash
xentlab-train --config-dir conf model=mine data=mine trainer.epochs=5       # train one run
xentlab-train --config-dir conf -m model=mine data=mine loss=crossentropy,focal trainer.seed=0,1   # sweep + report
mlflow ui --backend-store-uri sqlite:///outputs/mlflow.db                    # look: http://127.0.0.1:5000
```
''',
}


class StarterExists(ExpectedError, FileExistsError):
    """xentlab init into a folder that already holds starter files."""


def write_starter(folder: Path) -> list[Path]:
    """Writes the starter files into `folder` (made if missing); refuses to overwrite any."""
    existing = [name for name in FILES if (folder / name).exists()]
    if existing:
        raise StarterExists(f"{folder} already has {existing}; pick an empty folder: xentlab init NEW_FOLDER")
    written = []
    for name, text in FILES.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="xentlab", description="xentlab: compare classification loss set-ups. "
                                     "Training is `xentlab-train`; reports `xentlab-compare`.")
    commands = parser.add_subparsers(dest="command", required=True)
    init = commands.add_parser("init", help="write a starter folder: your model, your data, their configs, a README")
    init.add_argument("folder", nargs="?", default=".", help="where (default: here)")
    args = parser.parse_args(argv)
    folder = Path(args.folder)
    written = write_starter(folder)
    print("\n".join(f"wrote {path}" for path in written))
    where = "" if folder.resolve() == Path.cwd().resolve() else f"cd {args.folder} && "
    print(f"next: {where}xentlab-train --config-dir conf model=mine data=mine trainer.epochs=5")
    return 0


if __name__ == "__main__":
    sys.exit(main())

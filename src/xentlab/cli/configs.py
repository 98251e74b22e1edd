"""Where xentlab's configs are and how a script composes them: the checkout's conf/, installed as the package
`xentlab.conf` (see setup.py), found by Hydra as `pkg://xentlab.conf`; a user's folders add groups of their own."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

CONFIG_MODULE = "xentlab.conf"


def compose(overrides: Sequence[str] = (), config_dirs: Sequence[str | Path] = ()):
    """The run config `xentlab-train OVERRIDES` gets (conf/train.yaml composed), for `xentlab.cli.train.run`.

    Args:
        overrides: command-line overrides (`model=resnet`, `trainer.epochs=1`).
        config_dirs: folders of the user's own groups, as `xentlab-train --config-dir DIR` adds them.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from xentlab.config.schema import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    searchpath = [f"file://{Path(d).resolve()}" for d in config_dirs]
    extra = [f"hydra.searchpath=[{','.join(searchpath)}]"] if searchpath else []
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return hydra_compose(config_name="train", overrides=[*extra, *overrides])

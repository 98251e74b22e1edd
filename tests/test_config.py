"""Config composition: every option of every group composes; typos and unknown options fail clearly."""

from __future__ import annotations

import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from conftest import CONF_DIR, REPO, compose

GROUPS = sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir() and any(p.glob("*.yaml")))
OPTIONS = [
    (g, f.stem) for g in GROUPS if g not in ("experiment", "sweep") for f in sorted((CONF_DIR / g).glob("*.yaml"))
]


def test_every_design_group_is_in_the_primary_config():
    cfg = compose([])
    for group in ("data", "model", "loss", "labels", "weighting", "strategy", "optimizer", "trainer", "tracking"):
        assert group in cfg, f"group {group} missing from conf/train.yaml"


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes(group, option):
    cfg = compose([f"{group}={option}"])
    assert OmegaConf.to_container(cfg, resolve=True)[group]  # resolves without missing values


def _cli_in_fresh_python(args: list[str]) -> subprocess.CompletedProcess:
    # Asserts inside the child that a compose failure happens before TensorFlow is imported.
    code = (
        "import sys\n"
        "from xentlab.train import main\n"
        f"sys.argv = ['xentlab-train', *{args!r}]\n"
        "try:\n    main()\nexcept SystemExit as e:\n"
        "    assert 'tensorflow' not in sys.modules, 'tensorflow was imported before the config failed'\n"
        "    raise\n"
    )
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)


def test_mistyped_key_fails_at_compose_time_naming_the_key():
    result = _cli_in_fresh_python(["loss.form_logits=true"])
    assert result.returncode != 0
    assert "form_logits" in result.stderr and "not in" in result.stderr
    assert "tensorflow was imported" not in result.stderr


def test_wrong_value_type_fails_at_compose_time():
    result = _cli_in_fresh_python(["trainer.epochs=many"])
    assert result.returncode != 0
    assert "trainer.epochs" in result.stderr


def test_unknown_option_lists_the_available_ones():
    result = _cli_in_fresh_python(["loss=crossentropyy"])
    assert result.returncode != 0
    assert "Could not find 'loss/crossentropyy'" in result.stderr
    assert "crossentropy" in result.stderr.split("Available options in 'loss'")[1]

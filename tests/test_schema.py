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
    if group == "setup":  # named combinations of other groups' options, added with +setup=NAME
        cfg = OmegaConf.to_container(compose([f"+setup={option}"]), resolve=True, enum_to_str=True)
        assert option in (cfg["loss"]["name"], f"{cfg['loss']['name']}_{cfg['weighting']['scheme']}",
                          {"crossentropy": "crossentropy", "balanced": "balanced"}.get(cfg["weighting"]["scheme"]))
        return
    cfg = compose([f"{group}={option}"])
    assert OmegaConf.to_container(cfg, resolve=True)[group]  # resolves without missing values


def _cli_in_fresh_python(args: list[str]) -> subprocess.CompletedProcess:
    # Asserts inside the child that a compose failure happens before TensorFlow is imported.
    code = (
        "import sys\n"
        "from xentlab.cli.train import main\n"
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


# Every closed choice of the schemas, with a typo a user could make and the values the error must list.
CHOICE_TYPOS = [
    ("labels.encoding", "onehot", ["sparse", "one_hot"]),
    ("weighting.scheme", "balance", ["none", "balanced", "inverse_sqrt", "effective_number", "custom"]),
    ("weighting.normalize", "weight_sun", ["element", "weight_sum"]),
    ("weighting.normalize", "wieght_sum", ["element", "weight_sum"]),
    ("loss.reduction", "mean", ["sum_over_batch_size", "sum", "none"]),
    ("strategy.precision", "float16", ["auto", "float32", "mixed_float16", "mixed_bfloat16"]),
    ("strategy.name", "gpus", ["auto", "cpu", "gpu", "multi_cpu", "multi_gpu", "tpu", "multi_worker"]),
    ("trainer.resume", "always", ["auto", "never"]),
    ("trainer.verbose", "loud", ["auto", "silent", "bar", "line"]),
    ("model.head", "sigmoid", ["auto", "softmax2", "sigmoid1"]),
    ("model.heads", "shard", ["shared", "separate"]),
    ("data.color_mode", "rbg", ["grayscale", "rgb"]),
    ("calibration.method", "platt", ["none", "temperature"]),
]
# The group option whose schema has the key, where the default option's does not.
OPTION_FOR = {"model.heads": ["model=multi_head"], "data.color_mode": ["data=image_folder"]}


@pytest.mark.parametrize(("key", "typo", "allowed"), CHOICE_TYPOS, ids=[f"{k}={t}" for k, t, _ in CHOICE_TYPOS])
def test_a_mistyped_choice_fails_at_compose_time_listing_the_allowed_values(key, typo, allowed):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException) as info:
        compose([*OPTION_FOR.get(key, []), f"{key}={typo}"])
    message = f"{info.value} {info.value.__cause__}"
    assert key in message and repr(typo) in message
    assert f"expected one of [{', '.join(allowed)}]" in message


def _choice_fields() -> dict[str, type]:
    """Every schema field typed with a closed choice (an Enum of xentlab.choices), as "group.field"."""
    from dataclasses import fields
    from typing import get_type_hints

    from xentlab.choices import Choice
    from xentlab.config.schema import SCHEMAS

    found = {}
    for group, nodes in SCHEMAS.items():
        for node in nodes.values():
            hints = get_type_hints(node)
            for f in fields(node):
                if isinstance(hints[f.name], type) and issubclass(hints[f.name], Choice):
                    found[f"{group}.{f.name}"] = hints[f.name]
    return found


def test_every_closed_choice_is_an_enum_and_each_value_reaches_the_runner_as_a_plain_string():
    typed = _choice_fields()
    listed = {key: allowed for key, _, allowed in CHOICE_TYPOS}
    # Every Enum-typed key has a typo test listing exactly its members, and the keys that once were free strings
    # (model.heads) or schema-local Enums (data.color_mode) are typed with the shared choices.
    assert set(typed) == set(listed)
    for key, choice in typed.items():
        assert list(choice.names()) == listed[key], key
        group, name = key.split(".")
        for value in choice.names():
            cfg = OmegaConf.to_container(compose([*OPTION_FOR.get(key, []), f"{key}={value}"]), resolve=True,
                                         enum_to_str=True)
            got = cfg[group][name]
            assert type(got) is str and got == value  # library code gets a str, and parses it to the same member
            assert choice.parse(got, key) is choice(value)


def test_the_normalize_typo_is_refused_by_the_cli_before_tensorflow():
    result = _cli_in_fresh_python(["weighting.normalize=wieght_sum"])
    assert result.returncode != 0
    assert "expected one of [element, weight_sum]" in result.stderr and "weighting.normalize" in result.stderr
    assert "tensorflow was imported" not in result.stderr

"""Evaluation files: the reliability diagram's JSON against a numpy reference, masked positions left out."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xentlab.core.figures import reliability_table, write_evaluation
from xentlab.core.targets import LabelContract

KEYS = {"num_bins", "edges", "count", "accuracy", "confidence", "ece"}


def reference(y, probs, num_bins=15):
    """Per-bin count, accuracy, mean confidence and ECE, written out with Guo et al.'s ((b-1)/B, b/B] bins."""
    conf, correct = probs.max(-1), probs.argmax(-1) == y
    count, acc, mean_conf, ece = [], [], [], 0.0
    for b in range(num_bins):
        inside = (conf > b / num_bins) & (conf <= (b + 1) / num_bins) if b else conf <= 1 / num_bins
        count.append(int(inside.sum()))
        acc.append(float(correct[inside].mean()) if inside.any() else None)
        mean_conf.append(float(conf[inside].mean()) if inside.any() else None)
        if inside.any():
            ece += inside.mean() * abs(acc[-1] - mean_conf[-1])
    return count, acc, mean_conf, ece


def assert_matches(table, y, probs):
    assert set(table) - {"heads"} == KEYS and table["num_bins"] == 15
    assert table["edges"] == pytest.approx(np.linspace(0, 1, 16).tolist()) and len(table["edges"]) == 16
    count, acc, conf, ece = reference(y, probs)
    assert table["count"] == count and all(isinstance(c, int) for c in table["count"])
    for got, want in ((table["accuracy"], acc), (table["confidence"], conf)):
        assert [g is None for g in got] == [w is None for w in want]
        assert [g for g in got if g is not None] == pytest.approx([w for w in want if w is not None], abs=1e-9)
    assert table["ece"] == pytest.approx(ece, abs=1e-9)


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_reliability_json_matches_numpy_over_labelled_positions(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, size=(60, 5))
    logits = rng.normal(size=(60, 5, 4)) * 2
    y[:, ::3] = -1  # masked positions: left out
    labels = LabelContract(4, ignore_class=-1, from_logits=True)
    written = write_evaluation(tmp_path, y=y, outputs=logits, labels=labels, class_names=list("abcd"),
                               history={"loss": [1.0, 0.5]})
    assert {tmp_path / "reliability.json", tmp_path / "reliability.png"} <= set(written)
    assert (tmp_path / "reliability.png").stat().st_size > 0
    table = json.loads((tmp_path / "reliability.json").read_text())
    keep = y != -1
    assert_matches(table, y[keep], softmax(logits)[keep])
    assert sum(table["count"]) == keep.sum() and "heads" not in table


def test_multi_head_reliability_has_every_head_and_all_heads(tmp_path):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, size=(80, 3))
    logits = rng.normal(size=(80, 3, 3)) * np.array([0.5, 2.0, 6.0])[None, :, None]  # heads differ in confidence
    heads = LabelContract(3, label_shape=(3,), num_heads=3)
    write_evaluation(tmp_path, y=y, outputs=softmax(logits), labels=heads, class_names=list("abc"),
                     history={"loss": [1.0]})
    table = json.loads((tmp_path / "reliability.json").read_text())
    probs = softmax(logits)
    assert_matches(table, y.reshape(-1), probs.reshape(-1, 3))
    assert len(table["heads"]) == 3
    for h, head in enumerate(table["heads"]):
        assert set(head) == KEYS
        assert_matches(head, y[:, h], probs[:, h])
    assert len({round(head["ece"], 9) for head in table["heads"]}) == 3


def test_one_sigmoid_unit_and_the_streaming_metric_agree_with_the_table():
    from xentlab.core.metrics import SparseECE

    rng = np.random.default_rng(2)
    z = rng.normal(size=(200, 1)) * 3
    y = rng.integers(0, 2, size=200)
    p = 1 / (1 + np.exp(-z))
    table = reliability_table(y, np.concatenate([1 - p, p], -1))
    assert_matches(table, y, np.concatenate([1 - p, p], -1))
    metric = SparseECE(from_logits=True)
    metric.update_state(y, z.astype(np.float32))
    assert float(metric.result()) == pytest.approx(table["ece"], abs=1e-5)
    empty = reliability_table(np.zeros(0, int), np.zeros((0, 2)))
    assert empty["count"] == [0] * 15 and empty["accuracy"] == [None] * 15 and empty["ece"] == 0.0


def test_known_reliability_all_at_0_8_and_60_percent_right():
    y = np.array([0] * 6 + [1] * 4)
    table = reliability_table(y, np.tile([0.8, 0.2], (10, 1)))
    assert table["count"][11] == 10 and table["accuracy"][11] == pytest.approx(0.6)
    assert table["confidence"][11] == pytest.approx(0.8) and table["ece"] == pytest.approx(0.2)


def _figures_with(names, tmp_path):
    """write_evaluation with these class names: the Python warnings it raised."""
    import warnings

    rng = np.random.default_rng(2)
    y = rng.integers(0, len(names), size=40)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        write_evaluation(tmp_path, y=y, outputs=rng.normal(size=(40, len(names))),
                         labels=LabelContract(len(names), from_logits=True), class_names=names,
                         history={"loss": [1.0]})
    return [str(w.message) for w in caught]


def test_class_names_without_an_installed_glyph_are_said_once_not_warned_per_character(tmp_path, capsys):
    from xentlab.core.figures import fonts_for

    names = ["猫", "犬", "鳥類", "a,b"]
    warned = _figures_with(names, tmp_path)
    assert not [w for w in warned if "missing from font" in w]  # matplotlib warned per character and figure before
    families, missing = fonts_for(names)
    notes = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("note:")]
    if missing:  # no CJK font on this machine: one line naming the characters and the fix
        assert len(notes) == 1 and "猫" in notes[0] and "fonts-noto-cjk" in notes[0]
    else:  # a CJK font is installed: it draws them, nothing to say
        assert len(families) == 2 and not notes
    assert (tmp_path / "confusion_matrix.png").stat().st_size > 0


def test_an_installed_font_with_the_glyphs_draws_the_class_names(tmp_path, capsys):
    # Circled letters are not in matplotlib's default DejaVu Sans, but in STIX, which matplotlib ships.
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    from xentlab.core.figures import fonts_for

    names = ["\u24b6 cat", "\u24b7 dog"]
    families, missing = fonts_for(names)
    assert missing == "" and len(families) == 2
    chosen = font_manager.findfont(font_manager.FontProperties(family=families[1]), fallback_to_default=False)
    assert {0x24B6, 0x24B7} <= set(FT2Font(chosen).get_charmap())
    assert not [w for w in _figures_with(names, tmp_path) if "missing from font" in w]
    assert "note:" not in capsys.readouterr().err
    assert fonts_for(["plain ascii"]) == ([], "")

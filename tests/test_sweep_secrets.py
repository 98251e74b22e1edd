"""Credentials in a sweep: Hydra's escaped overrides are masked like plain ones, the launch lines Hydra logs are
masked, a quoted value holding a comma is one value, and tracking settings are never a sweep axis."""

from __future__ import annotations

import logging
import signal
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import free_port, run_cli, runs_of, start_mlflow_server, stop_mlflow_server
from xentlab.masking import mask_override, mask_text

TINY = ["model=mlp", "trainer.epochs=1", "trainer.batch_size=32", "data.limit=64", "tracking.log_model=false",
        "tracking.log_plots=false", "tracking.system_metrics=false"]


@pytest.mark.parametrize(("given", "shown"), [
    (r"tracking.uri=http\://u\:PASSWORD@127.0.0.1\:5000", r"tracking.uri=http\://u\:***@127.0.0.1\:5000"),
    (r"tracking.uri=http\://u\:hun\,ter2@h\:1", r"tracking.uri=http\://u\:***@h\:1"),
    (r"+tracking.tags.api_token=ab\,cd x=1", r"+tracking.tags.api_token=*** x=1"),
    (r"#0 : loss=focal tracking.uri=http\://u\:PW@h\:1", r"#0 : loss=focal tracking.uri=http\://u\:***@h\:1"),
])
def test_hydras_escaped_overrides_are_masked_as_plain_ones(given, shown):
    assert mask_text(given) == shown and mask_text(shown) == shown
    key, _, value = given.partition("=")
    if " " not in value:
        assert mask_override(given) == shown


def test_hydras_launch_lines_are_masked_whatever_handler_prints_them(caplog):
    from xentlab.cli.sweep import mask_launch_lines

    mask_launch_lines()
    with caplog.at_level(logging.INFO):
        logging.getLogger("hydra._internal.core_plugins.basic_launcher").info(
            "\t#%d : %s", 0, r"tracking.uri=http\://u\:PASSWORD@h\:1 +tracking.tags.api_token=T0KEN")
    assert "PASSWORD" not in caplog.text and "T0KEN" not in caplog.text and r"http\://u\:***@h" in caplog.text


def test_a_quoted_comma_is_one_value_and_tracking_is_never_an_axis():
    from xentlab.cli.sweep import varying_keys
    from xentlab.errors import ExpectedError

    assert varying_keys(["tracking.uri='http://u:hun,ter2@h:1'", "loss=crossentropy,focal"], {}) == ["loss"]
    assert varying_keys([r"data.label=a\,b", "trainer.seed=0,1"], {"weighting": "none,balanced"}) == [
        "trainer.seed", "weighting"]
    with pytest.raises(ExpectedError, match=r"tracking.experiment varies in this sweep.*never a sweep axis") as err:
        varying_keys(["tracking.experiment=a,b"], {})
    assert "hun" not in str(err.value)
    with pytest.raises(ExpectedError, match="tracking.tags.team"):
        varying_keys([], {"+tracking.tags.team": "a,b"})


@pytest.fixture
def server(tmp_path):
    port = free_port()
    proc = start_mlflow_server(port, tmp_path / "server.db", tmp_path / "server-artifacts")
    yield port
    stop_mlflow_server(proc, signal.SIGKILL)


@pytest.mark.slow
def test_no_password_or_token_reaches_a_sweeps_tags_files_names_or_console(tmp_path, server):
    secrets = ("PASSWORD", "hun,ter2", "hun\\,ter2", "S3CRETTOKEN")
    result = run_cli(["-m", *TINY, f"tracking.uri=http://u:PASSWORD@127.0.0.1:{server}",  # Hydra escapes it per job
                      "+tracking.tags.mirror='http://m:hun,ter2@mirror.example:1'",  # quoted: one value, no axis
                      "+tracking.tags.api_token=S3CRETTOKEN", "loss=crossentropy,focal"], cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not [s for s in secrets if s in result.stdout + result.stderr]
    assert "2 jobs: 2 trained" in result.stdout
    plain = f"http://127.0.0.1:{server}"
    runs = runs_of(plain)
    (parent,) = [r for r in runs if r.data.tags.get("xentlab.role") == "sweep"]
    children = [r for r in runs if r.info.run_id != parent.info.run_id]
    assert {c.data.tags["xentlab.variant"] for c in children} == {"crossentropy", "focal"}
    client = MlflowClient(plain)
    logged = [r.info.run_name for r in runs] + [v for r in runs for v in (*r.data.tags.values(),
                                                                         *r.data.params.values())]
    logged += [Path(client.download_artifacts(c.info.run_id, "overrides.yaml", str(tmp_path / c.info.run_id)))
               .read_text() for c in children]
    assert not [text for text in logged if any(s in text for s in secrets)]
    assert r"http\://u\:***@127.0.0.1" in children[0].data.tags["xentlab.command"]
    records = [p.read_text() for p in (tmp_path / "outputs" / "multirun").rglob("sweep*.json")]
    assert records and not [t for t in records if any(s in t for s in secrets)]

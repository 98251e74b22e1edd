"""Secrets never leave the process unmasked: one set of rules (xentlab.masking) for messages, params, tags,
overrides, the rerun command and the uploaded source diff."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import TINY, run_cli, runs_of
from xentlab.masking import mask_override, mask_text, mask_value

# (text as given, text as shown): every URI form and assignment the rules must handle.
URI_FORMS = [
    ("http://alice:s3cretPW@127.0.0.1:5000", "http://alice:***@127.0.0.1:5000"),
    ("http://:TOKEN@host:5000", "http://:***@host:5000"),  # an empty user name: the token is the password
    ("http://bob:p@ss@host/x", "http://bob:***@host/x"),  # '@' in the password: the host is after the last '@'
    ("https://u:a:b:c@h:1/p?q=1", "https://u:***@h:1/p?q=1"),  # ':' in the password
    ("postgresql+psycopg2://admin:hunter2@db.internal/mlflow", "postgresql+psycopg2://admin:***@db.internal/mlflow"),
    ("http://host:5000/api?token=abc123&x=1", "http://host:5000/api?token=***&x=1"),  # a query-string token
    ("http://host/?api_key=k&password=p", "http://host/?api_key=***&password=***"),
    ("url=http://h/?access_token=abc", "url=http://h/?access_token=***"),  # inside a non-secret assignment
    ("see 'tracking.uri=http://u:p@ss@h:1' and http://:t@g", "see 'tracking.uri=http://u:***@h:1' and http://:***@g"),
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),  # nothing to hide
    ("ssh://git@github.com/x.git", "ssh://git@github.com/x.git"),  # a user name alone is not a secret
    ("sqlite:////home/me/outputs/mlflow.db", "sqlite:////home/me/outputs/mlflow.db"),
    ("mail bob@example.com at http://h/a@b", "mail bob@example.com at http://h/a@b"),  # '@' outside the authority
]
ASSIGNMENTS = [
    ("+tracking.tags.api_key=xyz", "+tracking.tags.api_key=***"),
    ("MLFLOW_TRACKING_TOKEN=abc123", "MLFLOW_TRACKING_TOKEN=***"),
    ("export AWS_SECRET_ACCESS_KEY=AKIA/abc+def", "export AWS_SECRET_ACCESS_KEY=***"),
    ('password: "two words"', 'password: "***"'),
    ('{"apiKey": "abc", "n": 1}', '{"apiKey": "***", "n": 1}'),
    ("DB_PASSWORD = 'hunter2'  # local", "DB_PASSWORD = '***'  # local"),
    ("token=${oc.env:MY_TOKEN}", "token=${oc.env:MY_TOKEN}"),  # a reference, not the secret
    ("api_key=null password=", "api_key=null password="),
    ("sort_keys=True data.tokens_per_period=20 monkey=1", "sort_keys=True data.tokens_per_period=20 monkey=1"),
    ("if key == 'x':", "if key == 'x':"),
]


@pytest.mark.parametrize(("given", "shown"), URI_FORMS + ASSIGNMENTS)
def test_one_rule_set_masks_every_uri_form_and_secret_assignment(given, shown):
    assert mask_text(given) == shown
    assert mask_text(shown) == shown  # idempotent: masking twice changes nothing


@pytest.mark.parametrize(
    ("key", "value", "shown"),
    [
        ("tracking.uri", "http://:TOKEN@h:1", "http://:***@h:1"),
        ("tracking.tags.api_key", "plain words with spaces", "***"),  # a secret key: all of its value
        ("+tracking.tags.db_password", "p@ss word", "***"),
        ("secrets.db", "x", "***"),
        ("tracking.tags.team", "vision", "vision"),
        ("data.tokens_per_period", "20", "20"),
        ("tracking.tags.token", None, None),
    ],
)
def test_pairs_follow_the_same_rules(key, value, shown):
    assert mask_value(key, value) == shown
    if value is not None:
        assert mask_override(f"{key}={value}") == f"{key}={shown}"


@pytest.mark.slow  # the table above is the fast test of the rules; this one follows them into a real run
def test_every_logged_place_of_a_run_masks_an_empty_user_token_and_an_at_in_a_password(tmp_path, store):
    """The rerun command tag, overrides.yaml, config.yaml, params and tags of a real run."""
    secrets = ("T0KEN", "p@ss")
    overrides = [*TINY, f"tracking.uri={store}", "model=mlp", "tracking.system_metrics=false",
                 "+tracking.tags.mirror=http://:T0KEN@mirror.example:5000", "+tracking.tags.backup=http://bob:p@ss@h/b"]
    result = run_cli(overrides, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not any(s in result.stdout + result.stderr for s in secrets)
    (run,) = runs_of(store)
    client = MlflowClient(store)
    logged = [run.data.tags["xentlab.command"], *run.data.tags.values(), *run.data.params.values()]
    logged += [_artifact(client, run.info.run_id, name, tmp_path) for name in ("overrides.yaml", "config.yaml")]
    assert not [text for text in logged if any(s in text for s in secrets)]
    assert "http://:***@mirror.example:5000" in run.data.tags["xentlab.command"]
    assert run.data.tags["backup"] == "http://bob:***@h/b"


def _artifact(client: MlflowClient, run_id: str, path: str, tmp_path: Path) -> str:
    return Path(client.download_artifacts(run_id, path, str(tmp_path))).read_text()


# ---------------------------------------------------------------------------------------------- the source diff
def _git(cwd: Path, *args: str) -> None:
    import subprocess

    subprocess.run(["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args], cwd=cwd, check=True,
                   capture_output=True)


def test_the_uploaded_diff_is_the_projects_masked_and_capped(tmp_path):
    """A project nested in a larger repository: only its own changes, with credentials and secret assignments
    masked, cut at the limit."""
    from xentlab.tracking.source import git_state

    repo, project = tmp_path / "monorepo", tmp_path / "monorepo" / "lab"
    package = project / "src" / "pkg"
    package.mkdir(parents=True)
    (project / "pyproject.toml").write_text("[project]\nname = 'lab'\n")
    (package / "settings.py").write_text("DEBUG = False\n")
    (repo / "other_team.txt").write_text("nothing yet\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "start")

    (repo / "other_team.txt").write_text("their_change = 1\n")
    (package / "settings.py").write_text(
        "DEBUG = False\nSTORE = 'postgresql://admin:hunter2@db.internal/mlflow'\nAPI_TOKEN = \"tok-123\"\n"
        "SERVER = 'http://:T0KEN@h:5000'\n")
    state = git_state(package)
    assert state["dirty"] is True and len(state["commit"]) == 40
    diff = state["diff"]
    assert "settings.py" in diff and "postgresql://admin:***@db.internal/mlflow" in diff
    assert 'API_TOKEN = "***"' in diff and "http://:***@h:5000" in diff
    assert not any(s in diff for s in ("hunter2", "tok-123", "T0KEN"))
    assert "other_team" not in diff  # outside the project

    (package / "big.py").write_text("x = 1\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "big")
    (package / "big.py").write_text("".join(f"x{i} = {i}\n" for i in range(20000)))
    capped = git_state(package, limit=10_000)["diff"]
    assert len(capped.encode()) < 10_200 and capped.endswith("are uploaded (tracking.log_diff=false: none)\n")

    _git(repo, "checkout", "--", "lab")  # only the other team's file differs now
    assert git_state(package) == {"commit": git_state(package)["commit"], "dirty": False, "diff": ""}


def test_log_diff_is_an_option_that_does_not_change_the_job():
    from conftest import compose
    from xentlab.tracking.resume import job_key

    assert compose(["tracking.log_diff=false"]).tracking.log_diff is False
    assert job_key({"tracking.log_diff": "false", "model.name": "mlp"}) == job_key(
        {"tracking.log_diff": "true", "model.name": "mlp"})

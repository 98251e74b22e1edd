"""The MLflow UI as a reviewer meets it, in a real Chromium (`make test-ui`; not in `make test`).

A tiny sweep, `mlflow ui` over its store on a free port of 127.0.0.1, and the link the sweep printed: the parent
run's page in the Model-training view, its description holding the verdict, report.html rendered by the artifact
viewer, the children named by variant and seed and grouped by `xentlab.variant`. Screenshots go to outputs/ui/.

Needs Debian's `chromium` (XENTLAB_CHROMIUM, default /usr/bin/chromium) and `playwright` (the `ui` extra), which
`make test-ui` installs; playwright drives that browser, it downloads none.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import REPO, free_port, run_cli

pytestmark = pytest.mark.ui

CHROMIUM = os.environ.get("XENTLAB_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
SHOTS = REPO / "outputs" / "ui"
SWEEP = ["-m", "trainer.epochs=2", "trainer.batch_size=32", "data.limit=64", "model=mlp", "tracking.log_plots=false",
         "tracking.log_model=false", "loss=crossentropy,focal", "trainer.seed=0,1",
         '+hydra.callbacks.sweep_run.baseline="loss=crossentropy"']
WAIT_MS = 120_000  # the UI's first load on a busy 2-core machine


def _serve(store: str, port: int) -> subprocess.Popen:
    """`mlflow ui` as `make ui` starts it, once it answers."""
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store, "--host",
                             "127.0.0.1", "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env={**os.environ, "MLFLOW_TRACKING_URI": ""})
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).close()
            return proc
        except OSError:
            time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGTERM)
    pytest.fail("mlflow ui did not answer within 120 s")


def _plain(markdown: str) -> str:
    """What a Markdown line reads as once rendered: no emphasis or code marks, single spaces."""
    return " ".join(re.sub(r"[*`]", "", markdown).split())


def _in_model_training_view(page) -> None:
    nav = page.locator("nav").first.inner_text()
    assert "Model registry" in nav and "Sessions" not in nav and "Prompts" not in nav, nav
    colour = "e => getComputedStyle(e).color"
    chosen = page.get_by_text("Model training", exact=True).first.evaluate(colour)
    other = page.get_by_text("GenAI", exact=True).first.evaluate(colour)
    assert chosen != other  # the switch shows Model training selected (the darker label)


def _close_assistant(page) -> None:
    """The MLflow Assistant opens by itself on a browser's first visit to a local server; a reviewer closes it."""
    close = page.get_by_role("button", name="Close")
    if close.count():
        close.first.click()
        page.wait_for_timeout(1500)


def _sweep_and_links(tmp_path: Path, port: int) -> dict[str, str]:
    """A tiny sweep through the CLI; the link it printed, and what `make ui` prints for the UI on `port`."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = run_cli([*SWEEP, f"tracking.uri={store}"], cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    printed = re.search(r"sweep verdict and report: (\S+)", result.stdout).group(1)
    experiment_id, parent_id = re.search(r"#/experiments/(\w+)/runs/(\w+)\?workflowType=machine_learning$",
                                         printed).groups()
    links = subprocess.run([sys.executable, "-m", "xentlab.cli.links", "--tracking-uri", store, "--port", str(port)],
                           capture_output=True, text=True, timeout=120)
    base = f"http://127.0.0.1:{port}"
    found = {"store": store, "parent_id": parent_id, "parent": printed.replace("http://127.0.0.1:5000", base),
             "runs": f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"}
    assert found["parent"] in links.stdout and found["runs"] in links.stdout, links.stdout + links.stderr
    found["sweep_runs"] = next(word for word in links.stdout.split() if "searchFilter=" in word)  # its runs alone
    return found


def _parent_page(page, link: str, parent_id: str, note: str, verdict: str) -> None:
    """The printed link: the parent's page in the Model-training view; the verdict on screen before any click."""
    page.goto(link)
    page.get_by_text("Description").first.wait_for(timeout=WAIT_MS)
    page.wait_for_timeout(2000)
    page.screenshot(path=str(SHOTS / "parent_first_visit.png"))
    assert "workflowType=machine_learning" in page.url and f"/runs/{parent_id}" in page.url
    _in_model_training_view(page)
    chip = page.locator(f'[title="{verdict}"]').first  # the verdict tag, above the fold with the Assistant open
    assert chip.is_visible() and chip.bounding_box()["y"] < 900
    _close_assistant(page)
    page.screenshot(path=str(SHOTS / "parent_overview.png"))
    body = " ".join(page.inner_text("body").split())
    assert _plain(note.splitlines()[0]) in body, body[:3000]  # the description's first line, as rendered
    assert "delta_val_nll/focal" in body  # the parent's metrics table: the differences


def _report_html(page) -> None:
    """report.html in the artifact viewer: rendered inside the viewer's frame, the verdict table first."""
    page.get_by_text("Artifacts", exact=True).first.click()
    page.get_by_text("report", exact=True).first.click(timeout=WAIT_MS)
    page.get_by_text("report.html", exact=True).first.click(timeout=WAIT_MS)
    frame = None
    for _ in range(120):
        frame = next((f for f in page.frames if f != page.main_frame and f.url.startswith("blob:")), None)
        if frame is not None and frame.locator("th").count():
            break
        page.wait_for_timeout(500)
    assert frame is not None, [f.url for f in page.frames]
    headers = frame.locator("table").first.locator("th").all_inner_texts()
    assert headers[0] == "variant" and headers[-1] == "verdict", headers
    first_table = frame.locator("table").first.inner_text()
    assert "crossentropy (baseline)" in first_table and "focal" in first_table
    page.screenshot(path=str(SHOTS / "report_html.png"))
    page.get_by_text("val_nll_vs_baseline.png", exact=True).first.click()
    page.wait_for_timeout(3000)
    page.screenshot(path=str(SHOTS / "primary_chart.png"))


def _runs_tables(page, runs: str, sweep_runs: str) -> None:
    """The children named `<variant> s<seed>`; the sweep's runs grouped by xentlab.variant, one group each."""
    page.goto(runs)
    page.get_by_text("sweep/").first.wait_for(timeout=WAIT_MS)
    _close_assistant(page)
    page.locator("[role=gridcell] button[data-component-id*=runnamecellrenderer]").first.click()
    page.get_by_text("crossentropy s0", exact=True).first.wait_for(timeout=WAIT_MS)
    names = {t for t in page.inner_text("body").split("\n") if re.fullmatch(r"\w+ s\d", t)}
    assert names == {"crossentropy s0", "crossentropy s1", "focal s0", "focal s1"}, names
    page.screenshot(path=str(SHOTS / "runs.png"))
    page.goto(sweep_runs)
    page.get_by_text("sweep/").first.wait_for(timeout=WAIT_MS)
    page.get_by_role("button", name="Group by").click()
    page.get_by_text("xentlab.variant", exact=True).first.click()
    page.keyboard.press("Escape")
    page.get_by_text("Group: focal").first.wait_for(timeout=WAIT_MS)
    page.wait_for_timeout(1000)
    lines = page.inner_text("body").split("\n")
    assert [t for t in lines if t.startswith("Group: ")] == ["Group: crossentropy", "Group: focal"], lines
    assert "5 matching runs" in lines  # the parent and its four children, nothing else
    page.screenshot(path=str(SHOTS / "runs_grouped.png"))


def test_the_sweep_link_opens_its_verdict_report_and_readable_children(tmp_path):
    from playwright.sync_api import sync_playwright

    port = free_port()
    found = _sweep_and_links(tmp_path, port)
    tags = MlflowClient(found["store"]).get_run(found["parent_id"]).data.tags
    SHOTS.mkdir(parents=True, exist_ok=True)
    server = _serve(found["store"], port)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = browser.new_page(viewport={"width": 1440, "height": 900})  # a fresh profile: a first visit
            _parent_page(page, found["parent"], found["parent_id"], tags["mlflow.note.content"],
                         tags["xentlab.verdict"])
            _report_html(page)
            _runs_tables(page, found["runs"], found["sweep_runs"])
            browser.close()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)

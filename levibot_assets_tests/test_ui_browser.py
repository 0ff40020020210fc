"""The real UI: the session's `dagster dev` (conftest), headless Chromium renders the asset graph.

Checks what a person would: the lineage page shows the five assets (screenshot + DOM after the
JavaScript ran), and GraphQL reports the nightly schedule and both alert sensors as loaded and on.
Set SAVE_UI_SCREENSHOT=docs/ui-asset-graph.png to keep the screenshot (the README's picture).
"""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from levibot_assets_tests.dagster_dev import graphql

pytestmark = pytest.mark.slow

ASSETS = ["raw_ohlcv", "features", "lgbm_model", "tft_model", "best_release"]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1600,1000",
    "--virtual-time-budget=20000",
]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MIN_SCREENSHOT_BYTES = 30_000  # a blank 1600x1000 page compresses to a few kB


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}", *args],
        capture_output=True,
        timeout=180,
        check=True,
    )


@pytest.fixture(autouse=True)
def _need_chromium():
    if CHROMIUM is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is required in CI: run scripts/install_system_deps.sh")
        pytest.skip("chromium not installed (apt-get install -y chromium; scripts/install_system_deps.sh)")


def test_asset_graph_renders_with_schedule_and_sensors(dagster_dev, tmp_path):
    dagster_ui = dagster_dev.base
    groups = sorted({node["groupName"] for node in graphql(dagster_ui, "{ assetNodes { groupName } }")["assetNodes"]})
    # the global lineage collapses groups; ?expanded= opens them so every asset node is drawn
    url = f"{dagster_ui}/asset-groups?expanded=" + ",".join(f"global@global:{g}" for g in groups)

    screenshot = tmp_path / "asset-graph.png"
    _chromium(tmp_path, f"--screenshot={screenshot}", url)
    data = screenshot.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > MIN_SCREENSHOT_BYTES, len(data)
    if os.environ.get("SAVE_UI_SCREENSHOT"):  # opt-in copy, e.g. docs/ui-asset-graph.png for the README
        shutil.copyfile(screenshot, os.environ["SAVE_UI_SCREENSHOT"])

    dom = _chromium(tmp_path, "--dump-dom", url).stdout.decode("utf-8", "replace")
    missing = [name for name in ASSETS if name not in dom]
    assert not missing, f"asset graph page lacks {missing}"

    repos = graphql(
        dagster_ui,
        """{ repositoriesOrError { ... on RepositoryConnection { nodes {
             schedules { name cronSchedule executionTimezone scheduleState { status } }
             sensors { name sensorState { status } } } } } }""",
    )["repositoriesOrError"]["nodes"]
    schedules = {s["name"]: s for r in repos for s in r["schedules"]}
    sensors = {s["name"]: s["sensorState"]["status"] for r in repos for s in r["sensors"]}
    nightly = schedules["nightly_schedule"]
    assert (nightly["cronSchedule"], nightly["executionTimezone"]) == ("0 3 * * *", "UTC")
    assert nightly["scheduleState"]["status"] == "RUNNING"
    assert sensors == {"asset_check_alerts": "RUNNING", "run_failure_alerts": "RUNNING", "dead_run_reaper": "RUNNING"}

"""The real UI: `dagster dev` on a free port, headless Chromium renders the asset graph.

Checks what a person would: the lineage page shows the five assets (screenshot + DOM after the
JavaScript ran), and GraphQL reports the nightly schedule and both alert sensors as loaded and on.
Set SAVE_UI_SCREENSHOT=docs/ui-asset-graph.png to keep the screenshot (the README's picture).
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[1]
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
STARTUP_TIMEOUT_S = 240
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MIN_SCREENSHOT_BYTES = 30_000  # a blank 1600x1000 page compresses to a few kB


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _graphql(base: str, query: str) -> dict:
    request = urllib.request.Request(
        f"{base}/graphql", data=json.dumps({"query": query}).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        payload = json.load(response)
    assert "errors" not in payload, payload
    return payload["data"]


def _wait_until_up(base: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"dagster dev exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{base}/server_info", timeout=5):
                pass
            if _graphql(base, "{ assetNodes { id } }")["assetNodes"]:  # code location loaded
                return
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(2)
    pytest.fail(f"dagster dev did not serve {base} within {STARTUP_TIMEOUT_S}s:\n{log.read_text()[-3000:]}")


def _stop(process: subprocess.Popen) -> None:
    """SIGINT to the whole process group (webserver, daemon, code server), then SIGKILL if stuck."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}", *args],
        capture_output=True,
        timeout=180,
        check=True,
    )


@pytest.fixture
def dagster_ui(tmp_path):
    """`dagster dev` in its own process group, with a temp DAGSTER_HOME and data directory."""
    home, data = tmp_path / "dagster_home", tmp_path / "data"
    home.mkdir()
    # nux off: the first-visit community dialog would cover the graph in the screenshot
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\nnux:\n  enabled: false\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_")}
    env.update(DAGSTER_HOME=str(home), LEVIBOT_DATA_DIR=str(data))
    port = _free_port()
    log = tmp_path / "dagster-dev.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "dagster", "dev", "-m", "levibot_assets.definitions", "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group, stopped as a whole
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # pytest may run with SIGINT ignored
        )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(base, process, log)
        yield base
    finally:
        _stop(process)


@pytest.fixture(autouse=True)
def _need_chromium():
    if CHROMIUM is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is required in CI: run scripts/install_system_deps.sh")
        pytest.skip("chromium not installed (apt-get install -y chromium; scripts/install_system_deps.sh)")


def test_asset_graph_renders_with_schedule_and_sensors(dagster_ui, tmp_path):
    groups = sorted({node["groupName"] for node in _graphql(dagster_ui, "{ assetNodes { groupName } }")["assetNodes"]})
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

    repos = _graphql(
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

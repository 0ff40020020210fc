"""A UI backfill, launched through the webserver's GraphQL API against a running `dagster dev`.

What a person does in the UI (Materialize → date range × symbols → Launch backfill) is one
launchPartitionBackfill mutation; the daemon in `dagster dev` then runs it. The backfill must
target exactly the partitions asked for (no day pulled in through the features' warm-up day),
run them as one range run (single-run backfill policy), and succeed.
"""
import json
import os
import shutil
import sys
import time
import urllib.error
import urllib.request

import dagster as dg
import pytest

from levibot_assets.core.layout import DataLayout
from levibot_assets_tests import processes
from levibot_assets_tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow

DATES = ["2025-10-10", "2025-10-11", "2025-10-12"]
REQUESTED = [f"{d}|BTCUSDT" for d in DATES]
STARTUP_TIMEOUT_S, BACKFILL_TIMEOUT_S = 240, 300

LAUNCH = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
  }
}"""
STATUS = """
query Status($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    ... on PartitionBackfill { status numPartitions runs(limit: 100) { runId status } }
  }
}"""


def _graphql(base: str, query: str, variables: dict | None = None) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(f"{base}/graphql", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        payload = json.load(response)
    assert "errors" not in payload, payload
    return payload["data"]


def _code_location_loaded(base: str) -> bool:
    try:
        return bool(_graphql(base, "{ assetNodes { id } }")["assetNodes"])
    except (urllib.error.URLError, ConnectionError, OSError):
        return False


def test_ui_backfill_targets_exactly_the_dates_asked_for_and_succeeds(tmp_path, monkeypatch):
    home, data = tmp_path / "home", tmp_path / "data"
    home.mkdir()
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")  # queued runs, pools, run monitoring
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_")}
    env.update(DAGSTER_HOME=str(home), LEVIBOT_DATA_DIR=str(data), LEVIBOT_SOURCE="synthetic",
               LEVIBOT_START_DATE="2025-10-01", LEVIBOT_SYMBOLS="BTCUSDT,ETHUSDT")
    port = processes.free_port()
    base, log = f"http://127.0.0.1:{port}", tmp_path / "dagster-dev.log"
    argv = [sys.executable, "-m", "dagster", "dev", "-m", "levibot_assets.definitions", "-h", "127.0.0.1", "-p", str(port)]
    with processes.running(argv, log, env=env, first_signal=2) as server:  # SIGINT stops dagster dev cleanly
        processes.wait_until(lambda: _code_location_loaded(base), STARTUP_TIMEOUT_S, "dagster dev up", server, log)
        launched = _graphql(base, LAUNCH, {"params": {
            "partitionNames": REQUESTED,
            "assetSelection": [{"path": ["raw_ohlcv"]}, {"path": ["features"]}],
            "fromFailure": False,
        }})["launchPartitionBackfill"]
        assert launched["__typename"] == "LaunchBackfillSuccess", launched
        backfill_id = launched["backfillId"]

        def finished():
            backfill = _graphql(base, STATUS, {"id": backfill_id})["partitionBackfillOrError"]
            return backfill if backfill["status"] not in ("REQUESTED", "CANCELING") else None

        backfill = processes.wait_until(finished, BACKFILL_TIMEOUT_S, "backfill finished", server, log, interval_s=2)

    assert backfill["status"] == "COMPLETED_SUCCESS", (backfill, processes.log_tail(log))
    assert backfill["numPartitions"] == len(REQUESTED)
    assert [r["status"] for r in backfill["runs"]] == ["SUCCESS"]  # the whole range as one run
    monkeypatch.setenv("DAGSTER_HOME", str(home))  # dagster.yaml reads it
    with dg.DagsterInstance.get() as instance:
        for asset in ("raw_ohlcv", "features"):
            assert {str(k) for k in instance.get_materialized_partitions(dg.AssetKey(asset))} == set(REQUESTED)
    layout = DataLayout(data)
    assert sorted(p.parent.name for p in (data / "features").rglob("*.parquet")) == DATES  # no 2025-10-13
    assert all(layout.table("raw_ohlcv", d, "BTCUSDT").exists() for d in DATES)
    assert not (data / "alerts.jsonl").exists() or not (data / "alerts.jsonl").read_text().strip()

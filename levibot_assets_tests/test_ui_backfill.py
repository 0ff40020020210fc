"""A UI backfill, launched through the webserver's GraphQL API against a running `dagster dev`.

What a person does in the UI (Materialize → date range × symbols → Launch backfill) is one
launchPartitionBackfill mutation; the daemon in `dagster dev` then runs it. The backfill must
target exactly the partitions asked for (no day pulled in through the features' warm-up day),
run them as one range run (single-run backfill policy), and succeed.
"""
import dagster as dg
import pytest

from levibot_assets.core.layout import DataLayout
from levibot_assets_tests import processes
from levibot_assets_tests.dagster_dev import graphql

pytestmark = pytest.mark.slow

DATES = ["2025-10-10", "2025-10-11", "2025-10-12"]
REQUESTED = [f"{d}|BTCUSDT" for d in DATES]
BACKFILL_TIMEOUT_S = 300

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


def test_ui_backfill_targets_exactly_the_dates_asked_for_and_succeeds(dagster_dev, monkeypatch):
    base, log = dagster_dev.base, dagster_dev.log
    launched = graphql(base, LAUNCH, {"params": {
        "partitionNames": REQUESTED,
        "assetSelection": [{"path": ["raw_ohlcv"]}, {"path": ["features"]}],
        "fromFailure": False,
    }})["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill_id = launched["backfillId"]

    def finished():
        backfill = graphql(base, STATUS, {"id": backfill_id})["partitionBackfillOrError"]
        return backfill if backfill["status"] not in ("REQUESTED", "CANCELING") else None

    backfill = processes.wait_until(finished, BACKFILL_TIMEOUT_S, "backfill finished", dagster_dev.process, log,
                                    interval_s=2)

    assert backfill["status"] == "COMPLETED_SUCCESS", (backfill, processes.log_tail(log))
    assert backfill["numPartitions"] == len(REQUESTED)
    assert [r["status"] for r in backfill["runs"]] == ["SUCCESS"]  # the whole range as one run
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_dev.home))  # dagster.yaml reads it
    with dg.DagsterInstance.get() as instance:
        for asset in ("raw_ohlcv", "features"):
            assert {str(k) for k in instance.get_materialized_partitions(dg.AssetKey(asset))} == set(REQUESTED)
    data = dagster_dev.data
    layout = DataLayout(data)
    assert sorted(p.parent.name for p in (data / "features").rglob("*.parquet")) == DATES  # no 2025-10-13
    assert all(layout.table("raw_ohlcv", d, "BTCUSDT").exists() for d in DATES)
    assert not (data / "alerts.jsonl").exists() or not (data / "alerts.jsonl").read_text().strip()

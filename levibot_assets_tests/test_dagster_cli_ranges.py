"""The README's three backfills through Dagster's own CLI: `dagster asset materialize --partition-range`.

Data, then models, then the whole graph, as a user types them, into a SQLite DAGSTER_HOME with the
project's dagster.yaml. Each command is one run whose assets take the range in date order; a
range with a bad day goes on with its good ones.
"""
import datetime as dt
import json
import os
import shutil
import subprocess

import dagster as dg
import pytest

from levibot_assets.core.layout import DataLayout
from levibot_assets.core.release.deploy import read_history
from levibot_assets_tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow

DAGSTER = REPO_ROOT / ".venv" / "bin" / "dagster"


def _materialize(env: dict, select: str, partition_range: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(DAGSTER), "asset", "materialize", "-m", "levibot_assets.definitions", "--select", select,
         "--partition-range", partition_range],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600,
    )


def test_data_model_and_full_graph_backfills_through_the_dagster_cli(tmp_path, monkeypatch):
    home, data = tmp_path / "home", tmp_path / "data"
    home.mkdir()
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "LEVIBOT_"))}
    env.update(DAGSTER_HOME=str(home), LEVIBOT_DATA_DIR=str(data), LEVIBOT_START_DATE="2025-10-01",
               LEVIBOT_SYMBOLS="BTCUSDT,ETHUSDT", LEVIBOT_TRAIN_DAYS="3", LEVIBOT_OPTUNA_TRIALS="1",
               LEVIBOT_TFT_MAX_MINUTES="0.05", LEVIBOT_THREADS="1",
               LEVIBOT_EXECUTOR="in_process")  # the steps in the CLI's process: no interpreter start per step
    layout = DataLayout(data)

    data_run = _materialize(env, "raw_ohlcv,features", "2025-10-02|BTCUSDT...2025-10-05|ETHUSDT")
    assert data_run.returncode == 0, data_run.stderr[-3000:]
    for day in ("2025-10-02", "2025-10-03", "2025-10-04", "2025-10-05"):
        for symbol in ("BTCUSDT", "ETHUSDT"):
            assert layout.table("features", day, symbol).exists(), (day, symbol)

    model_run = _materialize(env, "lgbm_model", "2025-10-04|BTCUSDT...2025-10-05|BTCUSDT")
    assert model_run.returncode == 0, model_run.stderr[-3000:]
    for day, train_days in (("2025-10-04", ["2025-10-02", "2025-10-03"]), ("2025-10-05", ["2025-10-03", "2025-10-04"])):
        metrics = json.loads((layout.model_dir(day, "BTCUSDT") / "lgbm_metrics.json").read_text())
        assert metrics["test_date"] == day and metrics["train_days"] == train_days

    graph_run = _materialize(env, "*", "2025-10-06|BTCUSDT...2025-10-07|BTCUSDT")
    assert graph_run.returncode == 0, graph_run.stderr[-3000:]
    summaries = [json.loads(layout.release_summary(day).read_text())["symbols"]["BTCUSDT"]
                 for day in ("2025-10-06", "2025-10-07")]
    # in date order: the second day's champion is whatever the first day left in service
    first_in_service = summaries[0]["current_release"]
    assert summaries[1]["champion_release"] == first_in_service
    promotions = [e["release"] for e in read_history(layout, "BTCUSDT") if e["event"] == "promote"]
    assert promotions == sorted(promotions)

    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs()
        assert len(runs) == 3 and all(r.is_success for r in runs)
        materialized = {str(k) for k in instance.get_materialized_partitions(dg.AssetKey("best_release"))}
    assert materialized == {"2025-10-06|BTCUSDT", "2025-10-07|BTCUSDT"}


def test_a_range_with_a_bad_day_builds_the_good_days_downstream_on_the_multiprocess_executor(tmp_path):
    """Each step runs in its own process (Dagster's default executor): the later step learns from the
    run's events which days the earlier one could not store, skips those only, and fails the run."""
    from levibot_assets.core.ohlcv import BARS_PER_DAY
    from levibot_assets_tests.test_source_files import vision_rows, write_vision

    home, data, dumps = tmp_path / "home", tmp_path / "data", tmp_path / "dumps"
    for folder in (home, dumps):
        folder.mkdir()
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    days = [dt.date(2025, 1, 2), dt.date(2025, 1, 3), dt.date(2025, 1, 4)]
    for day in days:  # the middle day's file stops at 20:25, as a dump cut short
        write_vision(dumps, "BTCUSDT", day, vision_rows(day, "us", skip=range(1226, BARS_PER_DAY) if day == days[1] else range(0)))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "LEVIBOT_"))}
    env.update(DAGSTER_HOME=str(home), LEVIBOT_DATA_DIR=str(data), LEVIBOT_START_DATE="2025-01-01",
               LEVIBOT_SYMBOLS="BTCUSDT", LEVIBOT_SOURCE="files", LEVIBOT_FILES_DIR=str(dumps), LEVIBOT_THREADS="1",
               LEVIBOT_EXECUTOR="multiprocess")
    layout = DataLayout(data)

    run = _materialize(env, "raw_ohlcv,features", "2025-01-02|BTCUSDT...2025-01-04|BTCUSDT")

    assert run.returncode != 0
    output = run.stdout + run.stderr
    assert "2025-01-03|BTCUSDT: not stored, upstream raw_ohlcv: MarketDataError" in output
    assert "ends early on 2025-01-03" in output
    for asset in ("raw_ohlcv", "features"):
        assert [d for d in days if layout.table(asset, d, "BTCUSDT").exists()] == [days[0], days[2]], asset

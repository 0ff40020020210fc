"""The project's instance storage (levibot_assets/instance/storage.py): fewer, cheaper events for range
runs, the same per-partition view in the UI as stock Dagster storage, on SQLite and PostgreSQL."""
import shutil
import threading
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable
from dagster._serdes import deserialize_value, serialize_value

from levibot_assets.instance import storage as instance_storage
from levibot_assets.definitions import build_resources
from levibot_assets_tests.graph import raw_ohlcv
from levibot_assets_tests.postgres import postgres_server  # noqa: F401  (fixture)
from levibot_assets_tests.test_range_runs import (
    ASSETS,
    BAD_DAY,
    DATES,
    SYMBOLS,
    NegativePricesOnOneDay,
    _assert_check_partitions_evaluated,
    _assert_recorded_in_date_order,
    _range,
)

REPO = Path(__file__).resolve().parents[1]
FEATURE_CHECKS = ("finite_values", "complete_after_warmup", "label_balance")


def _project_instance(home: Path, monkeypatch, storage: dict | None = None) -> dg.DagsterInstance:
    """An instance from the repository's dagster.yaml (its storage block replaced when given)."""
    home.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load((REPO / "dagster.yaml").read_text())
    if storage is not None:
        config["storage"] = storage
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return dg.DagsterInstance.from_config(str(home))


@pytest.fixture(params=["sqlite", "postgres"])
def project_instance(request, tmp_path, monkeypatch):
    if request.param == "sqlite":
        instance = _project_instance(tmp_path / "home", monkeypatch)
    else:
        server = request.getfixturevalue("postgres_server")
        env = server.dagster_env(server.create_database(f"storage_{abs(hash(request.node.name))}"))
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        pg = yaml.safe_load((REPO / "docker/dagster.yaml").read_text())["storage"]  # the deployment's
        instance = _project_instance(tmp_path / "home", monkeypatch, pg)
    with instance:
        yield instance


def _planned(instance, run_id: str) -> list:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED).records
    return [r.event_log_entry.dagster_event.event_specific_data for r in records]


def test_the_pinned_dagster_gets_the_kept_storage_not_the_fallback(project_instance):
    assert instance_storage.HOOKS_PRESENT
    events = project_instance.event_log_storage
    assert isinstance(events, instance_storage.RangeRunEvents)
    assert events.supports_partition_subset_in_asset_materialization_planned_events


def test_a_range_run_shows_each_partition_as_stock_storage_does(project_instance, levibot_env):
    settings = levibot_env()
    keys = [f"{d}|{s}" for d in DATES for s in SYMBOLS]
    result = dg.materialize(ASSETS, resources=build_resources(settings), instance=project_instance,
                            tags=_range(DATES[0], DATES[-1], SYMBOLS[0], SYMBOLS[-1]))
    assert result.success
    # one planned event per asset for the whole range instead of one per partition
    planned = _planned(project_instance, result.run_id)
    assert sorted(p.asset_key.path[0] for p in planned) == ["features", "raw_ohlcv"]
    assert all(p.partition is None and set(p.partitions_subset.get_partition_keys()) == set(keys) for p in planned)
    for asset in ("raw_ohlcv", "features"):
        _assert_recorded_in_date_order(project_instance, dg.AssetKey(asset), keys)
        statuses = project_instance.get_status_by_partition(dg.AssetKey(asset), keys, raw_ohlcv.partitions_def)
        assert {k: s.value for k, s in statuses.items()} == {k: "MATERIALIZED" for k in keys}
    _assert_check_partitions_evaluated(project_instance, dg.AssetKey("features"), set(keys))


def test_a_failed_run_marks_exactly_the_partitions_that_were_not_stored(project_instance, levibot_env):
    settings = levibot_env()
    keys = [f"{d}|BTCUSDT" for d in DATES]
    result = dg.materialize(ASSETS, instance=project_instance, tags=_range(DATES[0], DATES[-1], "BTCUSDT", "BTCUSDT"),
                            raise_on_error=False,
                            resources={**build_resources(settings), "market_data": NegativePricesOnOneDay()})
    assert not result.success
    bad = f"{BAD_DAY}|BTCUSDT"
    for asset in ("raw_ohlcv", "features"):  # features goes on with the good days (partition_runs)
        statuses = project_instance.get_status_by_partition(dg.AssetKey(asset), keys, raw_ohlcv.partitions_def)
        assert {k: s and s.value for k, s in statuses.items()} == {
            k: "FAILED" if k == bad else "MATERIALIZED" for k in keys}, asset
    # the checks of features on the bad day (never computed) stay planned, each row holding its
    # partition's plan only; the good days' were evaluated
    with project_instance.event_log_storage.index_connection() as conn:
        rows = conn.execute(AssetCheckExecutionsTable.select().where(
            AssetCheckExecutionsTable.c.run_id == result.run_id,
            AssetCheckExecutionsTable.c.asset_key == dg.AssetKey("features").to_string())).mappings().all()
    assert {(r["check_name"], r["partition"]) for r in rows} == {(c, k) for c in FEATURE_CHECKS for k in keys}
    for row in rows:
        assert row["execution_status"] == ("PLANNED" if row["partition"] == bad else "SUCCEEDED")
        if row["partition"] == bad:
            plan = deserialize_value(row["evaluation_event"]).dagster_event.event_specific_data
            assert list(plan.partitions_subset.get_partition_keys()) == [bad]


def test_the_webserver_sees_each_new_event_of_a_running_run(tmp_path, monkeypatch, levibot_env):
    """The webserver watches <run_id>.db, which a kept connection no longer rewrites (WAL)."""
    settings = levibot_env()
    with _project_instance(tmp_path / "home", monkeypatch) as instance:
        run = dg.materialize([ASSETS[0]], resources=build_resources(settings), instance=instance,
                             partition_key=f"{DATES[0]}|BTCUSDT").dagster_run
        seen = threading.Event()

        def callback(entry, cursor):
            if entry.message == "a new event":
                seen.set()

        instance.event_log_storage.watch(run.run_id, None, callback)
        try:
            instance.report_engine_event("a new event", run)
            assert seen.wait(30), "the watcher never saw the event"
            database = Path(instance.event_log_storage.path_for_shard(run.run_id))
            written = database.stat().st_mtime_ns
            assert instance.all_logs(run.run_id)  # a read touches nothing: the watcher itself reads
            assert database.stat().st_mtime_ns == written
        finally:
            instance.event_log_storage.end_watch(run.run_id, callback)


def test_stock_sqlite_storage_stays_one_line_away(tmp_path, monkeypatch, levibot_env):
    settings = levibot_env()
    stock = {"sqlite": {"base_dir": {"env": "DAGSTER_HOME"}}}
    with _project_instance(tmp_path / "home", monkeypatch, stock) as instance:
        assert not isinstance(instance.event_log_storage, instance_storage.RangeRunEvents)
        result = dg.materialize(ASSETS, resources=build_resources(settings), instance=instance,
                                tags=_range(DATES[0], DATES[-1], "BTCUSDT", "BTCUSDT"))
        assert result.success
        assert len(_planned(instance, result.run_id)) == 2 * len(DATES)  # stock: one per partition and asset
    shutil.rmtree(tmp_path / "home")


def _index_rows(instance) -> tuple[list, list, list]:
    """What a range run left in the index database, without ids, run ids and times: check rows (each
    naming the event it stored and the materialization it targets by partition), event copies, asset rows."""
    from dagster._core.storage.event_log.schema import AssetKeyTable, SqlEventLogStorageTable

    with instance.event_log_storage.index_connection() as conn:
        events = {r["id"]: r for r in conn.execute(SqlEventLogStorageTable.select()).mappings().all()}
        checks = conn.execute(AssetCheckExecutionsTable.select()).mappings().all()
        assets = conn.execute(AssetKeyTable.select()).mappings().all()
    check_rows = []
    for row in checks:
        stored = events.get(row["evaluation_event_storage_id"])
        if row["execution_status"] != "PLANNED":
            assert stored is not None and stored["event"] == row["evaluation_event"]  # the row holds the stored event
        target = events.get(row["materialization_event_storage_id"])
        check_rows.append((row["asset_key"], row["check_name"], row["partition"], row["execution_status"],
                           target and (target["dagster_event_type"], target["partition"])))
    copies = [(r["dagster_event_type"], r["asset_key"], r["partition"]) for r in events.values()]
    for row in assets:  # the last materialization as Dagster's serdes writes it, naming its stored event
        if row["last_materialization"] is not None:
            record = deserialize_value(row["last_materialization"])
            assert serialize_value(record) == row["last_materialization"]
            assert events[record.storage_id]["event"] == serialize_value(record.event_log_entry)
    asset_rows = [(r["asset_key"], deserialize_value(r["last_materialization"]).event_log_entry.dagster_event.partition,
                   r["last_run_id"] is not None, r["last_materialization_timestamp"] is not None)
                  for r in assets if r["last_materialization"]]
    return sorted(check_rows, key=str), sorted(copies, key=str), sorted(asset_rows)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_lean_event_writes_leave_the_rows_stock_writes(backend, request, tmp_path, monkeypatch, levibot_env):
    """lean_event_writes (the default) serializes a check evaluation or a materialization once (SQLite:
    one transaction per database): the same rows as with it off, for passed, failed and never-run checks."""
    settings = levibot_env()
    instance_file = "dagster.yaml" if backend == "sqlite" else "docker/dagster.yaml"
    base = yaml.safe_load((REPO / instance_file).read_text())["storage"]
    rows = {}
    for lean in (True, False):
        if backend == "postgres":
            server = request.getfixturevalue("postgres_server")
            for name, value in server.dagster_env(server.create_database(f"lean_{lean}".lower())).items():
                monkeypatch.setenv(name, value)
        storage = {"custom": {**base["custom"], "config": {**base["custom"]["config"], "lean_event_writes": lean}}}
        with _project_instance(tmp_path / f"home-{lean}", monkeypatch, storage) as instance:
            assert instance.event_log_storage.lean_event_writes is lean
            result = dg.materialize(ASSETS, instance=instance, tags=_range(DATES[0], DATES[-1], "BTCUSDT", "BTCUSDT"),
                                    raise_on_error=False,
                                    resources={**build_resources(settings), "market_data": NegativePricesOnOneDay()})
            assert not result.success  # BAD_DAY fails its blocking check; the others are stored
            rows[lean] = _index_rows(instance)
    assert rows[True] == rows[False]
    statuses = {status for _, _, _, status, _ in rows[True][0]}
    assert {"SUCCEEDED", "FAILED", "PLANNED"} <= statuses


def test_the_storage_names_the_materialization_a_run_just_stored(project_instance, levibot_env):
    """What the check evaluations after a partition's materialization target (assets/partition_runs.py):
    the record Dagster's lookup returns, and nothing for another run, asset or partition."""
    settings = levibot_env()
    result = dg.materialize([ASSETS[0]], resources=build_resources(settings), instance=project_instance,
                            tags=_range(DATES[0], DATES[1], "BTCUSDT", "BTCUSDT"))
    assert result.success
    events, asset, key = project_instance.event_log_storage, dg.AssetKey("raw_ohlcv"), f"{DATES[1]}|BTCUSDT"
    (record,) = project_instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset, asset_partitions=[key]), limit=1).records
    target = events.materialization_just_stored(result.run_id, asset, key)
    assert (target.storage_id, target.run_id, target.timestamp) == (record.storage_id, record.run_id, record.timestamp)
    assert events.materialization_just_stored(result.run_id, asset, f"{DATES[0]}|BTCUSDT") is None  # not the last
    assert events.materialization_just_stored("another-run", asset, key) is None
    assert events.materialization_just_stored(result.run_id, dg.AssetKey("features"), key) is None

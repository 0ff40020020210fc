"""Instance storage for range runs: Dagster's SQLite and PostgreSQL storage, at a cost per event that
does not dwarf the work (issue 20).

A range run records a materialization and check evaluations per partition. Stock Dagster 1.13
pays for each event far more than the insert itself:
- SQLite (`storage: sqlite`) builds a new SQLAlchemy engine and connection per event, for the run's
  database and again for the index database; closing the last connection of a WAL database
  checkpoints it. `LevibotSqliteStorage` keeps one engine per database (the index, the runs
  database and the few newest run databases) with its connection open. The webserver learns of a
  run's new events by watching its `<run_id>.db` file, which a kept connection no longer rewrites
  (its writes go to the WAL): each write to a run database therefore touches that file's mtime.
  The event log's connections run with `synchronous=NORMAL` (see SYNCHRONOUS). A check
  evaluation's index copy and check row are written in one transaction (stock: two), and the asset
  table's columns are inspected once, not at every materialization (`lean_event_writes`).
- PostgreSQL (`dagster_postgres`) connects anew per event (`NullPool`, 8-10 ms a connect against
  0.1 ms an insert) and sends a NOTIFY per event that no reader of this release listens to.
  `LevibotPostgresStorage` keeps a small pool per storage (as dagster-postgres' own webserver
  setting does, recycled hourly) and sends no NOTIFY.
- Both (`lean_event_writes`): a check evaluation or a materialization is serialized once (stock:
  again for its check row or its asset's last-materialization record), with statements compiled
  once; the rows are stock's.
- Both: a range run plans each asset once for the whole range instead of once per partition
  (`one_planned_event_per_run`, Dagster's DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS as
  instance config, so every process of the instance agrees: CLI, daemon, webserver, run workers),
  and each check's planned row of a partition holds that partition's plan, not the whole range's
  (24 KiB a row at a year x 3 symbols in stock Dagster, written once per partition: quadratic).
  Dagster then no longer marks a range's unfinished partitions failed when the run fails; the
  assets record a plan for each partition that failed, so exactly those show as failed
  (assets/partition_runs.py). The storage also names the materialization a run just stored
  (`materialization_just_stored`), which the check evaluations that follow it target: Dagster's
  lookup of a partition's latest materialization is a query per partition and asset.

Stock behaviour stays one line away: `keep_connections: false` / `one_planned_event_per_run: false` /
`lean_event_writes: false`, or the stock `storage: sqlite:` / `storage: postgres:` blocks. The
overridden hooks are private Dagster API, checked at import: where one is missing (another Dagster
release) these classes behave exactly as the stock ones and say so once in the log.
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections import OrderedDict
from typing import Any, Iterator

import sqlalchemy as db
import sqlalchemy.exc as db_exc
import sqlalchemy.pool as db_pool
from dagster._config import BoolSource, Enum, EnumValue, Field, StringSource
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData as TargetMaterialization,
)
from dagster._core.definitions.asset_key import AssetKey
from dagster._core.errors import DagsterInvariantViolationError
from dagster._core.events import ASSET_CHECK_EVENTS, ASSET_EVENTS, DagsterEventType
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable, AssetKeyTable, SqlEventLogStorageTable
from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage
from dagster._core.storage.event_log.sqlite.sqlite_event_log import INDEX_SHARD_NAME, SqliteEventLogStorage
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage
from dagster._core.storage.sql import create_engine
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from dagster._core.storage.sqlite_storage import (
    DagsterSqliteStorage,
    _event_logs_directory,
    _runs_directory,
    _schedule_directory,
)
from dagster._core.storage.schedules.sqlite.sqlite_schedule_storage import SqliteScheduleStorage
from dagster._serdes import ConfigurableClass, ConfigurableClassData, serialize_value
from dagster._time import datetime_from_timestamp
from dagster._utils import mkdir_p

log = logging.getLogger(__name__)

KEPT_RUN_DATABASES = 4  # run databases whose connection stays open besides the index and runs ones
# SQLite's `synchronous` of the event log databases. In WAL mode NORMAL syncs the WAL at checkpoints
# instead of at every commit (stock: FULL, an fsync per event, 3-4 commits an event): a power loss or
# OS crash may roll back the newest events, never corrupt the database; a process crash loses nothing.
SYNCHRONOUS = {"NORMAL": "NORMAL", "FULL": "FULL"}
PG_POOL_SIZE = 1  # a run worker writes its events from one thread
PG_MAX_OVERFLOW = 10  # concurrent requests of a webserver or daemon open more, closed on return
PG_POOL_RECYCLE_S = 3600

_HOOKS = {  # private Dagster internals used here: checked so another release falls back to stock
    SqliteEventLogStorage: (
        "_connect", "_initdb", "_initialized_dbs", "_db_lock", "path_for_shard", "conn_string_for_shard", "run_connection",
    ),
    SqliteRunStorage: ("connect", "_conn_string"),
    SqlEventLogStorage: (
        "_store_asset_check_evaluation_planned", "_event_insert_timestamp", "prepare_insert_event",
        "_store_asset_event_tags", "store_asset_check_event", "index_transaction", "_event_to_row",
        "_get_asset_entry_values", "_has_asset_key_index_cols_on_connection", "_store_asset_event",
        "_update_asset_check_evaluation",
    ),
}


def _hooks_present() -> bool:
    """Each hook is a method of the class or an attribute its __init__ sets."""
    missing = [
        f"{cls.__name__}.{name}"
        for cls, names in _HOOKS.items()
        for name in names
        if not hasattr(cls, name) and name not in cls.__init__.__code__.co_names
    ]
    if missing:
        log.warning("levibot instance storage: this Dagster lacks %s; using the stock storage", ", ".join(missing))
    return not missing


HOOKS_PRESENT = _hooks_present()


def _check_result_statement(partitioned: bool):
    """Stock's update of a planned check row by a result (sql_event_log._update_asset_check_evaluation),
    built once with bound parameters (stock builds the statement with its values at every event)."""
    table = AssetCheckExecutionsTable
    where = [table.c[k] == db.bindparam(f"b_{k}") for k in ("asset_key", "check_name", "run_id")]
    where.append(table.c.partition == db.bindparam("b_partition") if partitioned else table.c.partition.is_(None))
    columns = ("execution_status", "evaluation_event", "evaluation_event_timestamp", "evaluation_event_storage_id",
               "materialization_event_storage_id", "partition")
    return table.update().where(db.and_(*where)).values({k: db.bindparam(f"b_{k}") for k in columns})


_CHECK_RESULT, _CHECK_RESULT_UNPARTITIONED = _check_result_statement(True), _check_result_statement(False)
_INSERT_RETURNING_ID = SqlEventLogStorageTable.insert().returning(SqlEventLogStorageTable.c.id)


def _record_json(storage_id: int, event_json: str) -> str:
    """serialize_value(EventLogRecord(storage_id, event)) from the event's JSON: Dagster's serdes writes
    a record's fields in name order (test_instance_storage checks the result against serialize_value)."""
    return f'{{"__class__": "EventLogRecord", "event_log_entry": {event_json}, "storage_id": {int(storage_id)}}}'


def _check_updated(event: EventLogEntry, updated: int) -> None:
    """Stock's invariant after storing a check evaluation: at most one planned row took it."""
    if updated > 1:
        raise DagsterInvariantViolationError(
            f"Updated {updated} rows for asset check evaluation {event.dagster_event.event_specific_data.asset_check_key} "
            "as a result of duplicate AssetCheckPlanned events."
        )


class RangeRunEvents:
    """Mixin for a SqlEventLogStorage: one planned event per asset and run, compact check plans."""

    one_planned_event_per_run = True
    lean_event_writes = True
    _last_materialization: tuple[str, str, str | None, TargetMaterialization] | None = None
    _last_serialized: tuple[EventLogEntry, str] | None = None  # the event store_event is writing, and its JSON

    def _event_to_row(self, event: EventLogEntry) -> dict[str, Any]:
        row = super()._event_to_row(event)
        self._last_serialized = (event, row["event"])
        return row

    def _serialized(self, event: EventLogEntry) -> str | None:
        """The JSON of `event` if store_event serialized it last (other threads' events: None)."""
        last = self._last_serialized
        return last[1] if self.lean_event_writes and last is not None and last[0] is event else None

    def _get_asset_entry_values(self, event: EventLogEntry, event_id: int, has_asset_key_index_cols: bool) -> dict[str, Any]:
        """Stock's values of the asset's row; for a materialization the last-materialization record is
        built from the event's JSON just written (stock serializes the event a second time)."""
        serialized = self._serialized(event)
        if serialized is None or not event.dagster_event.is_step_materialization:
            return super()._get_asset_entry_values(event, event_id, has_asset_key_index_cols)
        values = {"last_materialization": _record_json(event_id, serialized), "last_run_id": event.run_id}
        if has_asset_key_index_cols:
            values["last_materialization_timestamp"] = datetime_from_timestamp(event.timestamp)
        return values

    def _update_asset_check_evaluation(self, event: EventLogEntry, event_id: int | None) -> None:
        """Stock's, with the event's JSON just written (stock serializes it again) and a prebuilt statement."""
        serialized = self._serialized(event)
        if serialized is None or event_id is None:
            return super()._update_asset_check_evaluation(event, event_id)
        with self.index_connection() as conn:
            updated = self._record_check_evaluation(conn, event, event_id, serialized)
        _check_updated(event, updated)

    def _record_check_evaluation(self, conn: db.engine.Connection, event: EventLogEntry, event_id: int, serialized: str) -> int:
        """Stock's _update_asset_check_evaluation on `conn` with the event serialized already: the
        planned row of (asset, check, run, partition) takes the result, or a new row when none was planned."""
        evaluation = event.dagster_event.event_specific_data
        target = evaluation.target_materialization_data
        status = AssetCheckExecutionRecordStatus.SUCCEEDED if evaluation.passed else AssetCheckExecutionRecordStatus.FAILED
        row = dict(
            asset_key=evaluation.asset_key.to_string(),
            check_name=evaluation.check_name,
            run_id=event.run_id,
            partition=evaluation.partition,
            execution_status=status.value,
            evaluation_event=serialized,
            evaluation_event_timestamp=self._event_insert_timestamp(event),
            evaluation_event_storage_id=event_id,
            materialization_event_storage_id=target.storage_id if target else None,
        )
        update = _CHECK_RESULT_UNPARTITIONED if evaluation.partition is None else _CHECK_RESULT
        updated = conn.execute(update, {f"b_{k}": v for k, v in row.items()}).rowcount
        if updated == 0:
            updated = conn.execute(AssetCheckExecutionsTable.insert(), row).rowcount
        return updated

    def _store_asset_event(self, conn, event: EventLogEntry, event_id: int) -> None:
        super()._store_asset_event(conn, event, event_id)
        self._remember_materialization(event, event_id)

    def _remember_materialization(self, event: EventLogEntry, event_id: int) -> None:
        dagster_event = event.dagster_event
        if dagster_event is not None and dagster_event.is_step_materialization and dagster_event.asset_key:
            target = TargetMaterialization(storage_id=event_id, run_id=event.run_id, timestamp=event.timestamp)
            self._last_materialization = (event.run_id, dagster_event.asset_key.to_string(), dagster_event.partition, target)

    def materialization_just_stored(self, run_id: str, asset_key: AssetKey, partition: str) -> TargetMaterialization | None:
        """The materialization of `partition` that run `run_id` stored last in this process, as the
        target of the check evaluations that follow it (assets/partition_runs.py), or None when the last
        one this process stored is another: then the caller asks the database, as Dagster does."""
        last = self._last_materialization
        if last is not None and last[:3] == (run_id, asset_key.to_string(), partition):
            return last[3]
        return None

    @property
    def supports_partition_subset_in_asset_materialization_planned_events(self) -> bool:
        return self.one_planned_event_per_run or super().supports_partition_subset_in_asset_materialization_planned_events

    def _store_asset_check_evaluation_planned(self, event, event_id):
        """Stock's rows (one per partition), each holding a plan of its partition only (stock: of the
        whole range, so a year's plans are quadratic in size), inserted in one statement as stock does."""
        planned = event.dagster_event.event_specific_data
        subset = planned.partitions_subset
        if subset is None or not self.one_planned_event_per_run:
            return super()._store_asset_check_evaluation_planned(event, event_id)
        timestamp = self._event_insert_timestamp(event)

        def row(key: str) -> dict[str, Any]:
            one = planned.__class__(
                asset_key=planned.asset_key,
                check_name=planned.check_name,
                partitions_subset=subset.empty_subset().with_partition_keys([key]),
            )
            own = event._replace(dagster_event=event.dagster_event._replace(event_specific_data=one))
            return dict(
                asset_key=planned.asset_key.to_string(),
                check_name=planned.check_name,
                partition=key,
                run_id=event.run_id,
                execution_status=AssetCheckExecutionRecordStatus.PLANNED.value,
                evaluation_event=serialize_value(own),
                evaluation_event_timestamp=timestamp,
                evaluation_event_storage_id=event_id,
            )

        with self.index_connection() as conn:
            conn.execute(AssetCheckExecutionsTable.insert(), [row(key) for key in subset.get_partition_keys()])


class KeptSqliteEventLogStorage(RangeRunEvents, SqliteEventLogStorage):
    """SqliteEventLogStorage with one engine per database whose connection stays open."""

    def __init__(
        self,
        base_dir: str,
        inst_data: ConfigurableClassData | None = None,
        one_planned_event_per_run: bool = True,
        synchronous: str = "NORMAL",
        lean_event_writes: bool = True,
    ):
        self.one_planned_event_per_run = one_planned_event_per_run
        self.synchronous = SYNCHRONOUS[synchronous.upper()]
        self.lean_event_writes = lean_event_writes
        self._engines: OrderedDict[str, db.engine.Engine] = OrderedDict()
        self._engines_pid = os.getpid()
        self._tables: set[str] = set()
        self._asset_key_index_cols = False
        super().__init__(base_dir, inst_data=inst_data)

    def _set_synchronous(self, dbapi_connection, _record) -> None:
        dbapi_connection.execute(f"PRAGMA synchronous={self.synchronous}")

    def _engine(self, shard: str) -> db.engine.Engine:
        if self._engines_pid != os.getpid():  # a forked child: never use the parent's sqlite connections
            self._engines, self._engines_pid = OrderedDict(), os.getpid()
        engine = self._engines.get(shard)
        if engine is None:
            conn_string = self.conn_string_for_shard(shard)
            if shard not in self._initialized_dbs:  # as stock: creates the database if it does not exist
                initial = create_engine(conn_string, poolclass=db_pool.NullPool, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS})
                self._initdb(initial)
                initial.dispose()
                self._initialized_dbs.add(shard)
            engine = create_engine(
                conn_string,
                poolclass=db_pool.QueuePool,
                pool_size=1,
                max_overflow=0,  # _connect holds _db_lock: one connection per database at a time
                connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "check_same_thread": False},
            )
            db.event.listen(engine, "connect", self._set_synchronous)
            self._engines[shard] = engine
            run_shards = [s for s in self._engines if s != INDEX_SHARD_NAME]
            for old in run_shards[: max(0, len(run_shards) - KEPT_RUN_DATABASES)]:
                self._engines.pop(old).dispose()
        self._engines.move_to_end(shard)
        return engine

    @contextlib.contextmanager
    def _connect(self, shard: str) -> Iterator[db.engine.Connection]:
        with self._db_lock:
            engine = self._engine(shard)
            with engine.connect() as conn:
                sqlite_connection = conn.connection.dbapi_connection
                changes = sqlite_connection.total_changes
                with conn.begin():
                    yield conn
                wrote = sqlite_connection.total_changes != changes
            if wrote and shard != INDEX_SHARD_NAME:  # the webserver's watcher of this run reads its new
                with contextlib.suppress(FileNotFoundError):  # events (never after a read: the watcher reads)
                    os.utime(self.path_for_shard(shard))

    def has_table(self, table_name: str) -> bool:
        """Stock builds an engine per call (several per event); a table that exists stays."""
        if table_name in self._tables:
            return True
        if super().has_table(table_name):  # stock, outside _db_lock: it is called inside connections
            self._tables.add(table_name)
            return True
        return False

    def store_event(self, event: EventLogEntry) -> None:
        """Stock's store_event, except for a run's check evaluations (3-4 per partition and asset) and
        materializations: each database written in one transaction (stock: a check evaluation's index
        copy and its check row in two) with a statement compiled once. The rows are stock's."""
        kind = event.dagster_event_type if self.lean_event_writes and event.is_dagster_event and event.run_id else None
        checks = kind == DagsterEventType.ASSET_CHECK_EVALUATION and self.supports_asset_checks  # else stock names the migration
        if not (checks or (kind == DagsterEventType.ASSET_MATERIALIZATION and event.dagster_event.asset_key)):
            return super().store_event(event)
        row = self._event_to_row(event)
        with self.run_connection(event.run_id) as conn:
            conn.execute(SqlEventLogStorageTable.insert(), row)
        with self.index_connection() as conn:
            event_id = conn.execute(SqlEventLogStorageTable.insert(), row).inserted_primary_key[0]
            if checks:
                updated = self._record_check_evaluation(conn, event, event_id, row["event"])
            else:
                self._store_asset_event_tags(conn, [event], [event_id])
                self._store_asset_event(conn, event, event_id)
        if checks:
            _check_updated(event, updated)

    def _has_asset_key_index_cols_on_connection(self, conn: db.engine.Connection) -> bool:
        """Stock inspects the asset table's columns at every materialization; columns that exist stay."""
        if not (self.lean_event_writes and self._asset_key_index_cols):
            self._asset_key_index_cols = super()._has_asset_key_index_cols_on_connection(conn)
        return self._asset_key_index_cols

    def _store_asset_event(self, conn: db.engine.Connection, event: EventLogEntry, event_id: int) -> None:
        """Stock inserts the asset's row at every event and, as it exists after the first, updates it
        after the IntegrityError: here the update comes first, the insert only when no row was there."""
        if not (self.lean_event_writes and event.dagster_event and event.dagster_event.asset_key):
            return super()._store_asset_event(conn, event, event_id)
        values = self._get_asset_entry_values(event, event_id, self._has_asset_key_index_cols_on_connection(conn))
        if not values:
            return
        key = event.dagster_event.asset_key.to_string()
        update = AssetKeyTable.update().values(**values).where(AssetKeyTable.c.asset_key == key)
        if conn.execute(update).rowcount == 0:
            try:
                conn.execute(AssetKeyTable.insert().values(asset_key=key, **values))
            except db_exc.IntegrityError:  # another process inserted it since
                conn.execute(update)
        self._remember_materialization(event, event_id)

    def _dispose_engines(self) -> None:
        with self._db_lock:
            if self._engines_pid == os.getpid():
                for engine in self._engines.values():
                    engine.dispose()
            self._engines = OrderedDict()

    def wipe(self) -> None:
        self._dispose_engines()  # wipe deletes run databases: no connection may keep one alive
        self._tables = set()
        self._asset_key_index_cols = False
        super().wipe()

    def dispose(self) -> None:
        self._dispose_engines()
        super().dispose()


class KeptSqliteRunStorage(SqliteRunStorage):
    """SqliteRunStorage with one engine whose connection stays open (more only while threads overlap)."""

    def __init__(self, conn_string: str, inst_data: ConfigurableClassData | None = None):
        super().__init__(conn_string, inst_data)
        self._engine_lock = threading.Lock()
        self._kept: tuple[int, db.engine.Engine] | None = None

    def _engine(self) -> db.engine.Engine:
        with self._engine_lock:
            if self._kept is None or self._kept[0] != os.getpid():
                engine = create_engine(
                    self._conn_string, poolclass=db_pool.QueuePool, pool_size=1, max_overflow=-1,
                    connect_args={"check_same_thread": False},
                )
                self._kept = (os.getpid(), engine)
            return self._kept[1]

    @contextlib.contextmanager
    def connect(self) -> Iterator[db.engine.Connection]:
        with self._engine().connect() as conn:
            with conn.begin():
                yield conn

    def dispose(self) -> None:
        with self._engine_lock:
            if self._kept is not None and self._kept[0] == os.getpid():
                self._kept[1].dispose()
            self._kept = None
        super().dispose()


class LevibotSqliteStorage(DagsterSqliteStorage, ConfigurableClass):
    """`storage: sqlite:` with kept connections and range-run events (see the module docstring).

    dagster.yaml:  storage: {custom: {module: levibot_assets.instance.storage, class: LevibotSqliteStorage,
                   config: {base_dir: {env: DAGSTER_HOME}}}}
    """

    def __init__(
        self,
        base_dir: str,
        inst_data: ConfigurableClassData | None = None,
        keep_connections: bool = True,
        one_planned_event_per_run: bool = True,
        synchronous: str = "NORMAL",
        lean_event_writes: bool = True,
    ):
        if not HOOKS_PRESENT:
            super().__init__(base_dir, inst_data=inst_data)
            return
        self.base_dir = base_dir
        events_dir, runs_dir = _event_logs_directory(base_dir), _runs_directory(base_dir)
        mkdir_p(events_dir)
        if keep_connections:
            self._run_storage = KeptSqliteRunStorage.from_local(runs_dir)
            self._event_log_storage = KeptSqliteEventLogStorage(
                events_dir, one_planned_event_per_run=one_planned_event_per_run, synchronous=synchronous,
                lean_event_writes=lean_event_writes,
            )
        else:
            self._run_storage = SqliteRunStorage.from_local(runs_dir)
            self._event_log_storage = _StockSqliteEvents(events_dir, one_planned_event_per_run, lean_event_writes)
        self._schedule_storage = SqliteScheduleStorage.from_local(_schedule_directory(base_dir))
        self._inst_data = inst_data
        super(DagsterSqliteStorage, self).__init__()

    @classmethod
    def config_type(cls):
        return {
            "base_dir": StringSource,
            "keep_connections": Field(BoolSource, is_required=False, default_value=True),
            "one_planned_event_per_run": Field(BoolSource, is_required=False, default_value=True),
            "synchronous": Field(Enum("SqliteSynchronous", [EnumValue(v) for v in SYNCHRONOUS]), is_required=False,
                                 default_value="NORMAL", description="SQLite synchronous of the event log (kept connections)"),
            "lean_event_writes": Field(BoolSource, is_required=False, default_value=True,
                                       description="each check evaluation and materialization serialized once"),
        }

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData | None, config_value: dict[str, Any]):
        mkdir_p(config_value["base_dir"])
        return cls(inst_data=inst_data, **config_value)


class _StockSqliteEvents(RangeRunEvents, SqliteEventLogStorage):
    """Stock SQLite connections, range-run events (keep_connections: false)."""

    def __init__(self, base_dir: str, one_planned_event_per_run: bool = True, lean_event_writes: bool = True):
        self.one_planned_event_per_run = one_planned_event_per_run
        self.lean_event_writes = lean_event_writes
        super().__init__(base_dir)


def _pg_classes():
    """The PostgreSQL classes, defined only where dagster-postgres is installed (the deployment)."""
    from dagster_postgres.event_log.event_log import PostgresEventLogStorage
    from dagster_postgres.run_storage.run_storage import PostgresRunStorage
    from dagster_postgres.schedule_storage.schedule_storage import PostgresScheduleStorage
    from dagster_postgres.storage import DagsterPostgresStorage
    from dagster_postgres.utils import create_pg_engine, get_token_provider_from_config, pg_config, pg_url_from_config

    class PooledPostgresEventLogStorage(RangeRunEvents, PostgresEventLogStorage):
        def store_event(self, event: EventLogEntry) -> None:
            """Stock's store_event without its NOTIFY per event (a round trip of 4-5 per event), which
            dagster-postgres keeps only for webservers of older releases (it watches by polling now);
            every service of the deployment runs this same image."""
            if self.lean_event_writes:  # a statement compiled once, the row as its parameters
                insert, row = _INSERT_RETURNING_ID, self._event_to_row(event)
            else:
                insert, row = self.prepare_insert_event(event).returning(SqlEventLogStorageTable.c.id), None
            with self._connect() as conn:
                event_id = int(conn.execute(insert, row).scalar_one())
            if event.is_dagster_event and event.dagster_event_type in ASSET_EVENTS and event.dagster_event.asset_key:
                with self.index_transaction() as conn:
                    self._store_asset_event_tags(conn, [event], [event_id])
                    self._store_asset_event(conn, event, event_id)
            if event.is_dagster_event and event.dagster_event_type in ASSET_CHECK_EVENTS:
                self.store_asset_check_event(event, event_id)

    class LevibotPostgresStorage(DagsterPostgresStorage, ConfigurableClass):
        """`storage: postgres:` with a kept connection pool per storage and range-run events."""

        def __init__(
            self,
            postgres_url: str,
            should_autocreate_tables: bool = True,
            inst_data: ConfigurableClassData | None = None,
            token_provider=None,
            keep_connections: bool = True,
            one_planned_event_per_run: bool = True,
            lean_event_writes: bool = True,
        ):
            self.postgres_url = postgres_url
            self.should_autocreate_tables = should_autocreate_tables
            self._inst_data = inst_data
            self._run_storage = PostgresRunStorage(postgres_url, should_autocreate_tables, token_provider=token_provider)
            events_class = PooledPostgresEventLogStorage if HOOKS_PRESENT else PostgresEventLogStorage
            self._event_log_storage = events_class(postgres_url, should_autocreate_tables, token_provider=token_provider)
            self._event_log_storage.one_planned_event_per_run = one_planned_event_per_run
            self._event_log_storage.lean_event_writes = lean_event_writes
            self._schedule_storage = PostgresScheduleStorage(postgres_url, should_autocreate_tables, token_provider=token_provider)
            if keep_connections:
                for storage in (self._run_storage, self._event_log_storage, self._schedule_storage):
                    # same engine as stock (AUTOCOMMIT), pooled instead of NullPool
                    storage._engine.dispose()
                    storage._engine = create_pg_engine(
                        postgres_url, token_provider, isolation_level="AUTOCOMMIT", pool_size=PG_POOL_SIZE,
                        max_overflow=PG_MAX_OVERFLOW, pool_recycle=PG_POOL_RECYCLE_S,
                    )
            super(DagsterPostgresStorage, self).__init__()

        @classmethod
        def config_type(cls):
            return {
                **pg_config(),
                "keep_connections": Field(BoolSource, is_required=False, default_value=True),
                "one_planned_event_per_run": Field(BoolSource, is_required=False, default_value=True),
                "lean_event_writes": Field(BoolSource, is_required=False, default_value=True),
            }

        @classmethod
        def from_config_value(cls, inst_data: ConfigurableClassData | None, config_value: dict[str, Any]):
            return cls(
                inst_data=inst_data,
                postgres_url=pg_url_from_config(config_value),
                should_autocreate_tables=config_value.get("should_autocreate_tables", True),
                token_provider=get_token_provider_from_config(config_value),
                keep_connections=config_value.get("keep_connections", True),
                one_planned_event_per_run=config_value.get("one_planned_event_per_run", True),
                lean_event_writes=config_value.get("lean_event_writes", True),
            )

    return LevibotPostgresStorage


def __getattr__(name: str):
    if name == "LevibotPostgresStorage":  # Dagster loads the class by name from dagster.yaml
        cls = _pg_classes()
        globals()[name] = cls
        return cls
    raise AttributeError(name)

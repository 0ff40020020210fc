"""Runs whose processes died (SIGKILL, OOM killer, host crash) are marked failed and give back their
pool slots, so a killed run never blocks later runs.

Why Dagster alone is not enough here (1.13):
- `run_monitoring` fails runs stuck in STARTING/NOT_STARTED (start_timeout_seconds) and frees the
  pool slots of runs that have ended (free_slots_after_run_end_seconds). It cannot see a dead run
  in STARTED: DefaultRunLauncher does not support run worker health checks
  (supports_check_run_worker_health is False), and a run started in-process by
  `dagster asset materialize` / `levibot materialize` has no launcher at all.
- A killed run therefore stays STARTED forever: it counts against the `levibot/symbol` tag limit
  and keeps its claimed slot of pool "exchange", so every later raw_ohlcv step waits forever.

What Dagster records: every event carries the pid of the process that wrote it (DagsterEvent.pid):
RUN_START comes from the run worker (the CLI process itself for in-process runs), step events
from the step workers of the multiprocess executor. No host name is recorded, and a pid means
nothing on another machine or in another container (PID namespace). So:

1. `RunHostRecorder`, a logging handler the instance attaches to every run's log manager
   (`python_logs.dagster_handler_config` in dagster.yaml), tags a run `levibot/run_host=<hostname>`
   when its RUN_START is logged, in the process that starts it. Dagster calls this handler after
   its own, which has already stored RUN_START (the run is STARTED) by then, and nothing of the run
   passes through the log manager before RUN_START: a process killed in between leaves a STARTED
   run without the tag.
2. `reap_dead_runs` judges the STARTED runs that ran on this host:
   - those tagged with this host's name;
   - those without any host tag, only when the instance keeps its runs in a local SQLite file
     (`SqliteRunStorage`, the local dagster.yaml): SQLite storage is for one machine, so every one
     of its runs ran here, and an untagged one is a run killed between RUN_START and its tag (or
     started by a process without the handler); its RUN_START pid says whether it still runs. With
     a shared database (PostgreSQL, docker/dagster.yaml) an untagged run may belong to another
     container or host, whose pids mean nothing here: it is never judged.
   Such a run is dead when none of its worker pids (RUN_START and step events) is alive here:
   absent, a zombie, or a process that started after the pid's first event (the pid was reused).
   It is then reported failed (RUN_FAILURE, reason UNEXPECTED_TERMINATION: the failure alert goes
   out) and its pool slots and pending steps are freed. Finished runs that still hold slots are
   freed as well. A live run is never failed: its RUN_START pid is alive from before its tag is
   written until it ends.
3. It runs (a) at the RUN_START of every run on the host, before that run claims any slot, so the
   CLI path heals itself without a daemon; (b) when a step of a run on the host finds its pool
   full (Dagster's "Step blocked by limit for pool" engine event, repeated every 5 minutes while
   it waits), so a run that started before the slot's holder was killed is not left waiting for
   it; and (c) in the `dead_run_reaper` sensor, evaluated by the daemon inside the code server:
   the container/host where DefaultRunLauncher runs the workers.
4. A run killed before its RUN_START (NOT_STARTED, or STARTING) holds no slot, but without a daemon
   it would stay NOT_STARTED forever: no pid of it is recorded (Dagster's ASSET_MATERIALIZATION_PLANNED
   events carry none). Every pass therefore also applies run_monitoring's own start rule (Dagster's
   monitor_starting_run: failed with START_TIMEOUT once start_timeout_seconds have passed since it
   was created, or launched), which the daemon applies when there is one. It needs no pid or host.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import socket
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

try:
    import fcntl
except ImportError:  # Windows: no lock; a run may then be reported failed twice
    fcntl = None

import dagster as dg
from dagster._core.events import JobFailureData, RunFailureReason
from dagster._core.log_manager import LOG_RECORD_METADATA_ATTR
from dagster._daemon.monitoring.run_monitoring import monitor_starting_run

# dagster.yaml installs RunHostRecorder through Dagster's yaml logging handlers, which Dagster marks
# beta on every run; we use them knowingly, so that one warning stays off the user's console.
warnings.filterwarnings("ignore", message="Handling yaml-defined logging configuration is currently in beta")

HOST_TAG = "levibot/run_host"
# The pid's process must have started before the pid's first event; /proc's boot time has whole
# seconds, so allow a little.
PID_START_SLACK_S = 2.0
MAX_RUNS_PER_PASS = 500


def host_name() -> str:
    return socket.gethostname()


NOT_YET_STARTED = (dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING)
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reaped:
    run_id: str
    pids: tuple[int, ...]  # none for a run that never started

    @property
    def why(self) -> str:
        return f"its processes {list(self.pids)} are gone" if self.pids else "it never started"


def _boot_time() -> float | None:
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except OSError:
        pass
    return None


def _proc_state_and_start(pid: int) -> tuple[str, float | None] | None:
    """(state letter, start time as a Unix timestamp) from /proc; None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return ("?", None)
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
    boot = _boot_time()
    start = None
    if boot is not None:
        start = boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime in ticks
    return fields[0], start


def pid_alive(pid: int, seen_at: float) -> bool:
    """Whether the process that wrote an event at `seen_at` (Unix time) as `pid` still runs here."""
    if pid <= 0:
        return False
    if Path("/proc").is_dir() and Path("/proc/self/stat").exists():
        info = _proc_state_and_start(pid)
        if info is None:
            return False
        state, started = info
        if state in ("Z", "X"):  # exited, not yet reaped by its parent
            return False
        if started is not None and started > seen_at + PID_START_SLACK_S:
            return False  # the pid now belongs to a younger process
        return True
    try:  # no /proc (macOS): existence only
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def worker_pids(instance: dg.DagsterInstance, run_id: str) -> dict[int, float]:
    """pid -> time of its first event, for the processes that executed the run.

    RUN_START is written by the run worker (or the CLI process); step events by step workers.
    Events about the run from the webserver or the daemon (enqueue, launch, monitoring) have no
    step key and are not RUN_START, so their long-lived pids never count as the run's.
    """
    pids: dict[int, float] = {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or not event.pid:
            continue
        if event.event_type == dg.DagsterEventType.RUN_START or event.step_key:
            pids.setdefault(event.pid, entry.timestamp)
    return pids


@contextlib.contextmanager
def _host_lock(instance: dg.DagsterInstance):
    """An exclusive lock of the reapers on this host (a file of the instance's root directory)."""
    root = instance.root_directory if instance.is_persistent else None
    if fcntl is None or not root or not os.path.isdir(root):
        yield
        return
    with open(os.path.join(root, ".levibot_reaper.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def runs_share_this_host(instance: dg.DagsterInstance) -> bool:
    """Whether every run of the instance ran on this machine: runs kept in a local SQLite file."""
    from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage

    return isinstance(instance.run_storage, SqliteRunStorage)


def _free_slots(instance: dg.DagsterInstance, run_id: str) -> None:
    storage = instance.event_log_storage
    if storage.supports_global_concurrency_limits:
        storage.free_concurrency_slots_for_run(run_id)


def reap_dead_runs(
    instance: dg.DagsterInstance, host: str | None = None, exclude: Iterable[str] = ()
) -> list[Reaped]:
    """Fail this host's STARTED runs whose worker processes are all gone; free their slots.

    This host's runs: tagged `levibot/run_host=<host>`, or untagged on a local SQLite instance
    (see the module docstring).

    Also fails the runs that never started (4. in the module docstring) and frees the slots that
    finished runs still hold. Returns the runs it failed.
    """
    host = host or host_name()
    excluded = set(exclude)
    reaped = []
    untagged_ran_here = runs_share_this_host(instance)
    records = instance.get_run_records(
        filters=dg.RunsFilter(
            statuses=[dg.DagsterRunStatus.STARTED], tags={} if untagged_ran_here else {HOST_TAG: host}
        ),
        limit=MAX_RUNS_PER_PASS,
    )
    for record in records:
        run = record.dagster_run
        if run.run_id in excluded or run.tags.get(HOST_TAG, host) != host:
            continue  # judged only on the host it ran on
        pids = worker_pids(instance, run.run_id)
        if not pids or any(pid_alive(pid, seen) for pid, seen in pids.items()):
            continue
        # Passes on this host (runs starting together) fail it once. A pass killed after writing
        # RUN_FAILURE but before the run's status leaves it STARTED: the next pass fails it again.
        with _host_lock(instance):
            current = instance.get_run_by_id(run.run_id)
            if current is None or current.status != dg.DagsterRunStatus.STARTED:
                continue  # it ended (or another pass failed it) while we looked
            instance.report_run_failed(
                current,
                f"Run worker process(es) {sorted(pids)} on {host} are gone (killed, e.g. SIGKILL or the "
                "OOM killer) while the run was STARTED: marked failed, its pool slots freed.",
                JobFailureData(error=None, failure_reason=RunFailureReason.UNEXPECTED_TERMINATION),
            )
        _free_slots(instance, run.run_id)
        reaped.append(Reaped(run.run_id, tuple(sorted(pids))))
    reaped += _fail_runs_that_never_started(instance, excluded)
    _free_slots_of_finished_runs(instance)
    return reaped


def _fail_runs_that_never_started(instance: dg.DagsterInstance, excluded: set[str]) -> list[Reaped]:
    """NOT_STARTED/STARTING runs past run_monitoring's start_timeout_seconds, failed by Dagster's own rule."""
    timeout = instance.run_monitoring_start_timeout_seconds
    if not instance.run_monitoring_enabled or timeout <= 0:
        return []
    cutoff = dt.datetime.fromtimestamp(time.time() - timeout, dt.timezone.utc)  # launched after created
    records = instance.get_run_records(
        filters=dg.RunsFilter(statuses=list(NOT_YET_STARTED), created_before=cutoff), limit=MAX_RUNS_PER_PASS
    )
    reaped = []
    for record in records:
        if record.dagster_run.run_id in excluded:
            continue
        with _host_lock(instance):
            current = next(iter(instance.get_run_records(dg.RunsFilter(run_ids=[record.dagster_run.run_id]))), None)
            if current is None or current.dagster_run.status not in NOT_YET_STARTED:
                continue  # it started (or another pass failed it) while we looked
            monitor_starting_run(instance, current, log)
        if instance.get_run_by_id(current.dagster_run.run_id).status == dg.DagsterRunStatus.FAILURE:
            reaped.append(Reaped(current.dagster_run.run_id, ()))
    return reaped


def _free_slots_of_finished_runs(instance: dg.DagsterInstance) -> None:
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return
    holders = storage.get_concurrency_run_ids()
    if not holders:
        return
    finished = instance.get_run_records(
        filters=dg.RunsFilter(
            run_ids=list(holders),
            statuses=[dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED],
        )
    )
    for record in finished:
        storage.free_concurrency_slots_for_run(record.dagster_run.run_id)


_instance_lock = threading.Lock()
_instance: dg.DagsterInstance | None = None


def _home_instance() -> dg.DagsterInstance | None:
    global _instance
    if not os.environ.get("DAGSTER_HOME"):
        return None
    with _instance_lock:
        if _instance is None:
            _instance = dg.DagsterInstance.get()
        return _instance


def _blocked_by_pool(event) -> bool:
    """Dagster's engine event for a step that waits for a slot of a full pool."""
    if event.event_type != dg.DagsterEventType.ENGINE_EVENT or not event.step_key:
        return False
    metadata = getattr(event.event_specific_data, "metadata", None) or {}
    return "pool" in metadata and "blocked by limit for pool" in (event.message or "")


class RunHostRecorder(logging.Handler):
    """On RUN_START: tag the run with this host, then reap this host's dead runs; reap them again
    whenever a step of the run waits for a full pool.

    Configured in dagster.yaml under python_logs.dagster_handler_config, so it runs in every
    process that starts a run of the instance in $DAGSTER_HOME (CLI, run workers of the code
    server). It never raises into the run: a failure is one line on stderr.
    """

    def emit(self, record: logging.LogRecord) -> None:
        meta = getattr(record, LOG_RECORD_METADATA_ATTR, None)
        if not meta:
            return
        event = meta.get("dagster_event")
        if event is None:
            return
        starts = event.event_type == dg.DagsterEventType.RUN_START
        if not starts and not _blocked_by_pool(event):
            return
        run_id = meta.get("run_id")
        try:
            instance = _home_instance()
            if instance is None or not run_id or instance.get_run_by_id(run_id) is None:
                return  # a run of another (e.g. ephemeral) instance
            host = host_name()
            if starts:
                instance.add_run_tags(run_id, {HOST_TAG: host})
            for dead in reap_dead_runs(instance, host=host, exclude=[run_id]):
                print(
                    f"{time.strftime('%Y-%m-%d %H:%M:%S')} levibot reaper: run {dead.run_id} failed "
                    f"({dead.why}), pool slots freed",
                    file=sys.stderr,
                )
        except Exception as error:  # noqa: BLE001  (logging must never break the run)
            print(f"levibot reaper: skipped at {event.event_type_value} of {run_id}: {error!r}", file=sys.stderr)


@dg.sensor(
    name="dead_run_reaper",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Marks failed the runs of this host whose processes were killed (still STARTED, every worker "
        "pid gone) and the runs that never started, and frees their pool slots, so they block no later run."
    ),
)
def dead_run_reaper(context: dg.SensorEvaluationContext):
    reaped = reap_dead_runs(context.instance)
    if not reaped:
        return dg.SkipReason(f"no dead STARTED run on {host_name()}")
    for dead in reaped:
        context.log.warning(f"run {dead.run_id}: {dead.why}; marked failed, pool slots freed")
    return None

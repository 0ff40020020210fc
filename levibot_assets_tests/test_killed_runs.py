"""Issue #10: a run killed with SIGKILL never blocks later runs.

Unit tests: `reap_dead_runs` / the `dead_run_reaper` sensor against a test instance with fabricated
STARTED runs (a dead pid, a live pid, another host, a reused pid).

End to end (slow): the project's dagster.yaml in a temporary DAGSTER_HOME (SQLite), synthetic data.
`dagster asset materialize --select raw_ohlcv,features` is started 30+ times for different days and
SIGKILLed at random instants; afterwards a CLI run and a run queued for the daemon must both
succeed, no run may be left STARTED, no pool slot held, and every parquet file on disk must be
complete. The CLI runs are forked from a "zygote" process that has already imported Dagster and
the project: each child then runs Dagster's real CLI entry point (`dagster._cli.main`) with the
command's argv, which saves the ~5 s import per start and keeps the 30 kills within budget.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from dagster._core.events import DagsterEvent
from dagster._core.test_utils import create_run_for_test

from levibot_assets.reaper import HOST_TAG, dead_run_reaper, host_name, pid_alive, reap_dead_runs
from levibot_assets_tests import processes

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SYMBOL = "BTCUSDT"
POOL = "exchange"
KILLS = 30
RUN_TIMEOUT_S = 240.0


# ---------------------------------------------------------------- unit: the reaper's judgement


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def _started_run(instance: dg.DagsterInstance, pid: int, host: str, tags: dict | None = None) -> str:
    run = create_run_for_test(
        instance, job_name="__ASSET_JOB", status=dg.DagsterRunStatus.STARTED, tags={HOST_TAG: host, **(tags or {})}
    )
    instance.report_dagster_event(
        DagsterEvent(event_type_value=dg.DagsterEventType.RUN_START.value, job_name="__ASSET_JOB", pid=pid),
        run.run_id,
    )
    instance.event_log_storage.claim_concurrency_slot(POOL, run.run_id, "raw_ohlcv")
    return run.run_id


def test_sensor_fails_dead_started_runs_of_this_host_and_frees_their_slots():
    with dg.instance_for_test() as instance:
        instance.event_log_storage.set_concurrency_slots(POOL, 4)
        dead = _started_run(instance, _dead_pid(), host_name(), {"levibot/symbol": SYMBOL})
        alive = _started_run(instance, os.getpid(), host_name())
        elsewhere = _started_run(instance, _dead_pid(), "another-host")
        claimed = {s.run_id for s in instance.event_log_storage.get_concurrency_info(POOL).claimed_slots}
        assert claimed == {dead, alive, elsewhere}

        result = dead_run_reaper(dg.build_sensor_context(instance=instance))

        assert result is None  # not a SkipReason: it reaped something
        assert instance.get_run_by_id(dead).status == dg.DagsterRunStatus.FAILURE
        assert instance.get_run_by_id(alive).status == dg.DagsterRunStatus.STARTED
        assert instance.get_run_by_id(elsewhere).status == dg.DagsterRunStatus.STARTED
        claimed = {s.run_id for s in instance.event_log_storage.get_concurrency_info(POOL).claimed_slots}
        assert claimed == {alive, elsewhere}
        (failure,) = instance.all_logs(dead, of_type=dg.DagsterEventType.RUN_FAILURE)
        assert "are gone" in failure.message
        # A second pass finds nothing more to do.
        assert isinstance(dead_run_reaper(dg.build_sensor_context(instance=instance)), dg.SkipReason)


def test_a_run_stays_started_while_any_step_worker_lives():
    with dg.instance_for_test() as instance:
        run_id = _started_run(instance, _dead_pid(), host_name())  # the CLI process was killed...
        instance.report_dagster_event(  # ...but its step worker (this process) still runs
            DagsterEvent(
                event_type_value=dg.DagsterEventType.STEP_START.value,
                job_name="__ASSET_JOB",
                step_key="raw_ohlcv",
                pid=os.getpid(),
            ),
            run_id,
        )
        assert reap_dead_runs(instance) == []
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED


def test_a_reused_pid_does_not_keep_a_dead_run_alive():
    # This process started long after an event written a year ago: that pid's process is gone.
    assert not pid_alive(os.getpid(), seen_at=time.time() - 365 * 86400)
    assert pid_alive(os.getpid(), seen_at=time.time())
    assert not pid_alive(_dead_pid(), seen_at=time.time())


def test_finished_runs_give_back_slots_they_still_hold():
    with dg.instance_for_test() as instance:
        instance.event_log_storage.set_concurrency_slots(POOL, 1)
        run = create_run_for_test(instance, job_name="__ASSET_JOB", status=dg.DagsterRunStatus.FAILURE)
        instance.event_log_storage.claim_concurrency_slot(POOL, run.run_id, "raw_ohlcv")
        reap_dead_runs(instance)
        assert instance.event_log_storage.get_concurrency_info(POOL).claimed_slots == []


# ---------------------------------------------------------------- end to end: SIGKILL at random


ZYGOTE = r"""
import json, os, signal, sys
import dagster._cli
import levibot_assets.definitions  # the import every CLI start would pay
signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # killed children are reaped by the kernel
print("ready", flush=True)
for line in sys.stdin:
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
        os.setsid()  # its own process group: the test kills the run and its step workers together
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        fd = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        sys.argv = ["dagster", *request["argv"]]
        code = 1
        try:
            dagster._cli.main()
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    print(pid, flush=True)
"""


class Zygote:
    """A process with Dagster and the project imported that forks one CLI process per request."""

    def __init__(self, process: subprocess.Popen):
        self.process = process

    def start(self, argv: list[str], log: Path) -> int:
        self.process.stdin.write(json.dumps({"argv": argv, "log": str(log)}) + "\n")
        self.process.stdin.flush()
        return int(self.process.stdout.readline())


@contextlib.contextmanager
def zygote(env: dict, log: Path):
    process = subprocess.Popen(
        [sys.executable, "-c", ZYGOTE], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=open(log, "ab"), text=True, start_new_session=True,
    )
    try:
        assert process.stdout.readline().strip() == "ready", processes.log_tail(log)
        yield Zygote(process)
    finally:
        processes.stop(process)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def _materialize_argv(date: dt.date) -> list[str]:
    return ["asset", "materialize", "-m", "levibot_assets.definitions", "--select", "raw_ohlcv,features",
            "--partition", f"{date.isoformat()}|{SYMBOL}"]


def _run_of(instance: dg.DagsterInstance, date: dt.date) -> list[dg.DagsterRun]:
    return list(instance.get_runs(dg.RunsFilter(tags={"dagster/partition": f"{date.isoformat()}|{SYMBOL}"})))


def _finished(instance: dg.DagsterInstance, date: dt.date):
    runs = [r for r in _run_of(instance, date) if r.is_finished]
    return runs[0] if runs else None


def _event_time(instance, run_id: str, event_type, step_key: str | None = None) -> float | None:
    for entry in instance.all_logs(run_id, of_type=event_type):
        if step_key is None or entry.step_key == step_key:
            return entry.timestamp
    return None


def _assert_tables_complete(data_dir: Path) -> int:
    """Every raw_ohlcv/features parquet file is readable and complete: raw_ohlcv is exactly the day
    the (deterministic) synthetic source delivers, features has one row per bar of that day."""
    from levibot_assets.resources.market_data import MarketDataResource

    source = MarketDataResource(source="synthetic")
    checked = 0
    for asset in ("raw_ohlcv", "features"):
        for path in sorted((data_dir / asset).glob(f"*/{SYMBOL}.parquet")):
            frame = pd.read_parquet(path)  # a torn file raises here
            date = path.parent.name
            day = source.fetch_day(SYMBOL, dt.date.fromisoformat(date))
            if asset == "raw_ohlcv":
                pd.testing.assert_frame_equal(frame, day)
            else:
                assert len(frame) == len(day), (path, len(frame))
                assert frame["timestamp"].dt.strftime("%Y-%m-%d").eq(date).all(), path
            checked += 1
    return checked


@pytest.mark.slow
def test_sigkilled_runs_never_block_later_runs(tmp_path, monkeypatch):
    home, data_dir = tmp_path / "dagster_home", tmp_path / "data"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))  # the test reads the same instance
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEVIBOT_", "DAGSTER_"))}
    env.update(
        DAGSTER_HOME=str(home), LEVIBOT_DATA_DIR=str(data_dir), LEVIBOT_SOURCE="synthetic",
        LEVIBOT_START_DATE="2023-03-01", LEVIBOT_SYMBOLS=SYMBOL, LEVIBOT_THREADS="1",
    )
    logs = tmp_path / "logs"
    logs.mkdir()
    rng = random.Random(int(os.environ.get("KILL_SEED", time.time_ns() % 2**32)))
    first = dt.date(2023, 3, 2)
    dates = [first + dt.timedelta(days=i) for i in range(KILLS + 3)]
    measure_day, kill_days, cli_day, daemon_day = dates[0], dates[1 : KILLS + 1], dates[KILLS + 1], dates[KILLS + 2]
    timings: dict[str, float] = {}
    started_at = time.monotonic()

    with dg.DagsterInstance.from_config(str(home)) as instance, zygote(env, logs / "zygote.log") as fork:
        timings["zygote_ready_s"] = time.monotonic() - started_at

        # 1. One uninterrupted run: its duration is the range the kill instants are drawn from.
        t0 = time.time()
        pid = fork.start(_materialize_argv(measure_day), logs / f"{measure_day}.log")
        run = processes.wait_until(lambda: _finished(instance, measure_day), RUN_TIMEOUT_S, "measured run",
                                   log_path=logs / f"{measure_day}.log")
        assert run.status == dg.DagsterRunStatus.SUCCESS, processes.log_tail(logs / f"{measure_day}.log")
        duration = _event_time(instance, run.run_id, dg.DagsterEventType.RUN_SUCCESS) - t0
        slot_claimed = _event_time(instance, run.run_id, dg.DagsterEventType.STEP_WORKER_STARTING, "raw_ohlcv") - t0
        timings.update(normal_run_s=duration, slot_claimed_after_s=slot_claimed)

        # 2. Kill at random instants. Most kills fall in the run's first part (run created, RUN_START,
        # pool slot claimed, step worker starting), a stratified few anywhere in its whole duration.
        whole_run = {i * KILLS // 5 for i in range(5)}
        delays = []
        for i, day in enumerate(kill_days):
            if i in whole_run:
                k = sorted(whole_run).index(i)
                delay = rng.uniform(k * duration / 5, (k + 1) * duration / 5)
            else:
                delay = rng.uniform(0.0, slot_claimed + 1.5)
            pid = fork.start(_materialize_argv(day), logs / f"{day}.log")
            time.sleep(delay)
            _kill_group(pid)
            delays.append(round(delay, 2))
        timings["kill_loop_s"] = time.monotonic() - started_at - timings["zygote_ready_s"] - duration

        killed = [r for day in kill_days for r in _run_of(instance, day)]
        held_slot = [
            r for r in killed
            if _event_time(instance, r.run_id, dg.DagsterEventType.STEP_WORKER_STARTING, "raw_ohlcv")
            and not _event_time(instance, r.run_id, dg.DagsterEventType.STEP_SUCCESS, "raw_ohlcv")
        ]
        # The loop really produced the situation: runs killed while holding the pool slot.
        assert len(held_slot) >= 3, (delays, [(r.run_id, r.status) for r in killed])

        # 3. The next CLI run (no daemon running) and a run the daemon dequeues must both succeed.
        daemon_log = logs / "daemon.log"
        cli_pid = fork.start(_materialize_argv(cli_day), logs / f"{cli_day}.log")
        with processes.running([str(BIN / "dagster-daemon"), "run", "-m", "levibot_assets.definitions"],
                               daemon_log, env=env) as daemon:
            tags = {"dagster/partition": f"{daemon_day}|{SYMBOL}", "dagster/partition/date": str(daemon_day),
                    "dagster/partition/symbol": SYMBOL, "levibot/symbol": SYMBOL}
            launch = fork.start(["job", "launch", "-m", "levibot_assets.definitions", "-j", "__ASSET_JOB",
                                 "-o", "raw_ohlcv,features", "--tags", json.dumps(tags)], logs / "launch.log")
            cli_run = processes.wait_until(lambda: _finished(instance, cli_day), RUN_TIMEOUT_S, "CLI run after kills",
                                           log_path=logs / f"{cli_day}.log")
            assert cli_run.status == dg.DagsterRunStatus.SUCCESS, processes.log_tail(logs / f"{cli_day}.log")
            daemon_run = processes.wait_until(lambda: _finished(instance, daemon_day), RUN_TIMEOUT_S,
                                              "queued run after kills", daemon, daemon_log)
            assert daemon_run.status == dg.DagsterRunStatus.SUCCESS, processes.log_tail(daemon_log)
            assert daemon_run.tags.get("levibot/symbol") == SYMBOL
            for through_the_queue in (dg.DagsterEventType.RUN_ENQUEUED, dg.DagsterEventType.RUN_STARTING):
                assert _event_time(instance, daemon_run.run_id, through_the_queue), through_the_queue
        for pid in (cli_pid, launch):
            _kill_group(pid)
        timings["total_s"] = time.monotonic() - started_at

        # 4. Nothing is left blocking: no killed run STARTED (or counting against the tag limit),
        # no pool slot claimed, and the killed runs that held one are failed by the reaper.
        for r in killed:
            status = instance.get_run_by_id(r.run_id).status
            assert status not in (dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING), (r.run_id, status)
        for r in held_slot:
            assert instance.get_run_by_id(r.run_id).status == dg.DagsterRunStatus.FAILURE
        assert instance.event_log_storage.get_concurrency_info(POOL).claimed_slots == []
        reaped = [r for r in killed
                  if any("are gone" in (e.message or "") for e in instance.all_logs(r.run_id, of_type=dg.DagsterEventType.RUN_FAILURE))]
        assert len(reaped) >= len(held_slot)

    # 5. The files: every parquet present is complete (atomic writes), the following runs' included.
    checked = _assert_tables_complete(data_dir)
    for day in (measure_day, cli_day, daemon_day):
        for asset in ("raw_ohlcv", "features"):
            assert (data_dir / asset / day.isoformat() / f"{SYMBOL}.parquet").is_file(), (asset, day)
    print(f"\nkilled-runs timings: {timings}; delays {delays}; killed runs {len(killed)}, "
          f"holding the pool slot {len(held_slot)}, reaped {len(reaped)}; parquet files checked {checked}")

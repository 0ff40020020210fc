"""LEVIBOT_EXECUTOR=celery on a real broker: redis-server, a PostgreSQL instance, two Celery workers,
and the data directory on S3 (moto's server on 127.0.0.1), as hosts that share no disk would have it.

Everything runs as local processes with the deployment's commands: `redis-server` (password set, so
the test also checks that the secret never reaches the run storage), the instance of
docker/dagster.yaml on a throwaway PostgreSQL, two workers `celery -A
levibot_assets.instance.executors:celery_app worker -Q dagster -c 1` (w1, w2) and runs launched with
one orchestrator process that launches them as `dagster asset materialize --partition-range` does
(it submits every step to the queue; see celery_cluster.py). One test walks through, in order:

1. a range run D1|BTCUSDT...D3|SOLUSDT of raw_ohlcv + features: its files equal, byte for byte,
   those of the same range materialized in-process;
2. three per-symbol range runs at once: with one task per worker at a time, both workers take steps
   (each step's worker is read from dagster-celery's "Executing steps ... in celery worker" event);
3. a run whose raw_ohlcv worker is SIGKILLed (its whole process group) once it has started the step:
   the executor sees the worker stop answering, queues the step again and the other worker finishes
   the run; every object is whole (equal to the reference) since each is written by one PUT.

Skips without redis-server/PostgreSQL, except in CI (CI=true), where it fails:
scripts/install_system_deps.sh installs both.
"""
from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import time
from contextlib import ExitStack
from pathlib import Path

import dagster as dg
import pytest

from levibot_assets_tests.graph import features, raw_ohlcv
from levibot_assets.core.layout import DataLayout
from levibot_assets.definitions import build_resources
from levibot_assets.partitions import RANGE_END_TAG, RANGE_START_TAG, partition_key
from levibot_assets_tests import processes
from levibot_assets_tests.celery_cluster import Orchestrator, find_redis, start_redis, start_workers
from levibot_assets_tests.postgres import in_ci, postgres_server  # noqa: F401  (fixture)
from levibot_assets_tests.stored_files import parquet_files

pytest.importorskip("dagster_celery", reason="the celery extra is not installed: pip install -e '.[celery]'")

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
DATES = [dt.date(2025, 10, 12), dt.date(2025, 10, 13), dt.date(2025, 10, 14)]
RUN_TIMEOUT_S = 120.0
WORKER_LOST_S = 3  # the executor's patience with a silent worker (LEVIBOT_CELERY_WORKER_LOST_S)
REDIS_PASSWORD = "s3cret-broker-pw"


def _range(first: str, last: str) -> str:
    return f"{partition_key(DATES[0], first)}...{partition_key(DATES[-1], last)}"


@pytest.fixture(scope="module")
def redis_bin() -> str:
    found = find_redis()
    if found is None:
        message = "redis-server not found: run scripts/install_system_deps.sh"
        if in_ci():
            pytest.fail(f"CI=true and {message}", pytrace=False)
        pytest.skip(message)
    return found


def _reference(levibot_env, tmp_path: Path) -> dict[str, bytes]:
    """The range materialized in this process by the in-process executor."""
    settings = levibot_env(DATA_DIR=tmp_path / "reference", SOURCE="synthetic", SYMBOLS=",".join(SYMBOLS))
    tags = {RANGE_START_TAG: str(partition_key(DATES[0], SYMBOLS[0])), RANGE_END_TAG: str(partition_key(DATES[-1], SYMBOLS[-1]))}
    with dg.instance_for_test() as instance:
        assert dg.materialize([raw_ohlcv, features], resources=build_resources(settings), instance=instance, tags=tags).success
    files = parquet_files(tmp_path / "reference")
    assert len(files) == 2 * len(DATES) * len(SYMBOLS)
    return files


def _step_workers(instance: dg.DagsterInstance, run_id: str) -> list[tuple[str, str]]:
    """(step key, Celery worker) of every task dagster-celery started for the run, in order."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT).records
    out = []
    for record in records:
        entry = record.event_log_entry
        metadata = entry.dagster_event.event_specific_data.metadata if entry.dagster_event else {}
        if "Celery worker" in metadata:
            out.append((entry.step_key, metadata["Celery worker"].value))
    return out


def test_celery_workers_execute_range_runs_and_survive_a_killed_worker(
    postgres_server, redis_bin, levibot_env, s3_data_dir, tmp_path, monkeypatch  # noqa: F811
):
    reference = _reference(levibot_env, tmp_path)
    db = postgres_server.create_database("dagster_celery")
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(DOCKER / "dagster.yaml", home / "dagster.yaml")  # the deployment's instance, verbatim
    data_dir = DataLayout(s3_data_dir).root  # the AWS_* variables of the fixture reach the workers below
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEVIBOT_", "DAGSTER_"))}
    env.update(postgres_server.dagster_env(db))
    env.update(
        DAGSTER_HOME=str(home),
        DAGSTER_COMPUTE_LOGS_DIR=str(tmp_path / "compute_logs"),
        LEVIBOT_DATA_DIR=str(data_dir),
        LEVIBOT_SOURCE="synthetic",
        LEVIBOT_START_DATE="2025-10-01",
        LEVIBOT_SYMBOLS=",".join(SYMBOLS),
        LEVIBOT_THREADS="1",
        LEVIBOT_EXECUTOR="celery",
        LEVIBOT_CELERY_WORKER_LOST_S=str(WORKER_LOST_S),
        PYTHONWARNINGS="ignore",
    )
    for name, value in postgres_server.dagster_env(db).items():
        monkeypatch.setenv(name, value)
    host = os.uname().nodename

    with ExitStack() as stack:
        redis_port = start_redis(stack, redis_bin, tmp_path, password=REDIS_PASSWORD)
        env["LEVIBOT_CELERY_BROKER"] = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{redis_port}/0"
        orchestrator = Orchestrator(stack, env, tmp_path)  # imports the code location while the workers start
        workers = {name: proc for name, (proc, _) in start_workers(stack, env, tmp_path).items()}

        # 1. one range run over every date and symbol
        (result,) = orchestrator.run([_range(SYMBOLS[0], SYMBOLS[-1])])
        assert result["success"], result
        assert parquet_files(data_dir) == reference, "celery range run differs from the in-process run"

        # 2. three per-symbol runs at once: both workers take steps
        results = orchestrator.run([_range(s, s) for s in SYMBOLS])
        assert all(r["success"] for r in results), results
        assert parquet_files(data_dir) == reference

        instance = stack.enter_context(dg.DagsterInstance.from_config(str(home)))
        runs = instance.get_runs()
        assert len(runs) == 4 and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        placed = {run.run_id: _step_workers(instance, run.run_id) for run in runs}
        for run_id, steps in placed.items():
            assert sorted(step for step, _ in steps) == ["features", "raw_ohlcv"], (run_id, steps)
        used = {worker for steps in placed.values() for _, worker in steps}
        assert used == {f"w1@{host}", f"w2@{host}"}, placed

        # 3. SIGKILL the worker running raw_ohlcv; the other one finishes the run
        data_dir.fs.rm(data_dir.path, recursive=True)
        orchestrator.send([_range(SYMBOLS[0], SYMBOLS[-1])])
        known = {r.run_id for r in runs}

        def started_worker():
            new = [r for r in instance.get_runs(limit=5) if r.run_id not in known]
            if new:
                steps = _step_workers(instance, new[0].run_id)
                if steps:
                    return new[0].run_id, steps[0]
            return None

        run_id, (step, node) = processes.wait_until(started_worker, RUN_TIMEOUT_S, "first celery step", interval_s=0.1)
        assert step == "raw_ohlcv"
        victim = node.split("@")[0]
        processes.stop(workers[victim], first_signal=signal.SIGKILL, timeout_s=1)
        (result,) = orchestrator.receive()
        assert result["success"], result
        survivor = ({"w1", "w2"} - {victim}).pop()

        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.SUCCESS
        steps = _step_workers(instance, run_id)
        messages = [r.event_log_entry.user_message for r in instance.get_records_for_run(run_id).records]
        requeued = [m for m in messages if f"Celery worker {node} stopped answering" in m]
        succeeded = {r.event_log_entry.step_key for r in instance.get_records_for_run(
            run_id, of_type=dg.DagsterEventType.STEP_SUCCESS).records}
        assert succeeded == {"raw_ohlcv", "features"}
        if requeued:  # killed mid-step: the step ran again on the survivor
            assert steps == [("raw_ohlcv", node), ("raw_ohlcv", f"{survivor}@{host}"), ("features", f"{survivor}@{host}")]
        else:  # the step had ended before the kill: the survivor took the next one
            assert steps == [("raw_ohlcv", node), ("features", f"{survivor}@{host}")], steps
        assert parquet_files(data_dir) == reference, "a file differs after the worker was killed"
        stored = [str(p) for p in data_dir.rglob("*") if p.is_file()]
        assert len(stored) == 2 * len(reference), stored  # whole parquet objects and their .sha256: no temp or partial one
        print(f"killed {node} {'mid-step (step re-queued)' if requeued else 'between steps'}")

    # the broker password never reached the run storage (snapshots, run config, event log)
    conn = postgres_server.connect(db)
    try:
        with conn.cursor() as cur:
            for table in ("runs", "snapshots", "event_logs"):
                cur.execute(f"SELECT count(*) FROM {table} WHERE CAST({table} AS text) LIKE %s", (f"%{REDIS_PASSWORD}%",))
                assert cur.fetchone()[0] == 0, f"broker password found in {table}"
    finally:
        conn.close()

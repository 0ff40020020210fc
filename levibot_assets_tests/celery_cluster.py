"""A local Celery deployment for tests and benchmarks: redis-server, two workers, one orchestrator process.

The code location takes ~8 s of CPU to import (torch, lightning, sklearn), so runs are not launched
with one `dagster asset materialize` each: one orchestrator process (`python -m
levibot_assets_tests.celery_cluster`) imports it once and reads commands on stdin, one JSON list of
partition ranges per line; each range becomes one run of raw_ohlcv+features, the runs of a line at
the same time (forked children), launched exactly as `dagster asset materialize --partition-range`
does (execute_job of the implicit asset job with the range tags). It answers one JSON line per
command: [{"range", "run_id", "success", "seconds"}, ...].
"""
from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Mapping

from levibot_assets_tests import processes

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 120.0


def find_redis() -> str | None:
    return shutil.which("redis-server") or ("/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None)


def _redis_up(port: int, password: str | None) -> bool:
    import redis

    try:
        return bool(redis.Redis(host="127.0.0.1", port=port, password=password, socket_timeout=2).ping())
    except redis.exceptions.RedisError:
        return False


def start_redis(stack: ExitStack, redis_bin: str, workdir: Path, password: str | None = None) -> int:
    """redis-server on 127.0.0.1 at a free port, no persistence, stopped with the stack; returns the port."""
    port = processes.free_port()
    argv = [redis_bin, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)]
    if password:
        argv += ["--requirepass", password]
    log = workdir / "redis.log"
    proc = stack.enter_context(processes.running(argv, log))
    processes.wait_until(lambda: _redis_up(port, password), START_TIMEOUT_S, "redis-server", proc, log)
    return port


def start_workers(stack: ExitStack, env: Mapping[str, str], workdir: Path, names=("w1", "w2")) -> dict:
    """`celery -A levibot_assets.instance.executors:celery_app worker -Q dagster -c 1` per name; waits until each is ready."""
    workers = {}
    for name in names:
        log = workdir / f"worker-{name}.log"
        workers[name] = (stack.enter_context(processes.running(
            [str(BIN / "celery"), "-A", "levibot_assets.instance.executors:celery_app", "worker", "-Q", "dagster",
             "-n", f"{name}@%h", "-c", "1", "--without-gossip", "--without-mingle", "-l", "INFO"],
            log, env=env,
        )), log)
    for name, (proc, log) in workers.items():
        processes.wait_until(lambda: " ready." in log.read_text(errors="replace"), START_TIMEOUT_S,
                             f"celery worker {name}", proc, log)
    return workers


class Orchestrator:
    """The orchestrator process: `run(ranges)` launches runs and waits for their answer line."""

    def __init__(self, stack: ExitStack, env: Mapping[str, str], workdir: Path):
        import subprocess

        self.log = workdir / "orchestrator.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "levibot_assets_tests.celery_cluster"], env=dict(env), cwd=REPO,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log.open("wb"), text=True,
        )
        stack.callback(self.close)
        ready = self.proc.stdout.readline()
        assert ready.strip() == '"ready"', f"orchestrator did not start: {ready!r}\n{processes.log_tail(self.log)}"

    def send(self, ranges: list[str]) -> None:
        self.proc.stdin.write(json.dumps(ranges) + "\n")
        self.proc.stdin.flush()

    def receive(self) -> list[dict]:
        line = self.proc.stdout.readline()
        assert line, f"orchestrator exited ({self.proc.poll()})\n{processes.log_tail(self.log, 8000)}"
        return json.loads(line)

    def run(self, ranges: list[str]) -> list[dict]:
        self.send(ranges)
        return self.receive()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except Exception:
                self.proc.kill()
                self.proc.wait()


# --- inside the orchestrator process ------------------------------------------------------------


def _one_run(partition_range: str, answers) -> None:
    try:
        _execute(partition_range, answers)
    except BaseException as exc:  # the parent waits for one answer per run
        answers.put({"range": partition_range, "run_id": None, "success": False, "error": repr(exc)})
        raise


def _execute(partition_range: str, answers) -> None:
    import dagster as dg
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    from levibot_assets.partitions import RANGE_END_TAG, RANGE_START_TAG

    start, end = partition_range.split("...")
    repo = ReconstructableRepository.for_module("levibot_assets.definitions", "defs", working_directory=os.getcwd())
    job = repo.get_reconstructable_job("__ASSET_JOB")
    began = time.monotonic()
    with dg.DagsterInstance.get() as instance:
        result = dg.execute_job(
            job, instance, tags={RANGE_START_TAG: start, RANGE_END_TAG: end},
            asset_selection=[dg.AssetKey("raw_ohlcv"), dg.AssetKey("features")], raise_on_error=False,
        )
        answers.put({"range": partition_range, "run_id": result.run_id, "success": result.success,
                     "seconds": round(time.monotonic() - began, 2)})


def main() -> None:
    import levibot_assets.definitions  # noqa: F401  (imported once, before the forks)

    ctx = multiprocessing.get_context("fork")
    print(json.dumps("ready"), flush=True)
    for line in sys.stdin:
        ranges = json.loads(line)
        answers = ctx.Queue()
        children = [ctx.Process(target=_one_run, args=(r, answers)) for r in ranges]
        for child in children:
            child.start()
        results = [answers.get() for _ in children]
        for child in children:
            child.join()
        print(json.dumps(sorted(results, key=lambda r: ranges.index(r["range"]))), flush=True)


if __name__ == "__main__":
    main()

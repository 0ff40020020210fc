"""One `dagster dev` (webserver + daemon) for the tests that drive the real UI and its GraphQL API.

Started once per test session (it costs a minute on 2 cores), with the project's dagster.yaml, a
temporary DAGSTER_HOME and data directory, the synthetic source and two symbols; stopped by PID.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from levibot_assets_tests import processes
from levibot_assets_tests.conftest import REPO_ROOT

STARTUP_TIMEOUT_S = 240
SYMBOLS = "BTCUSDT,ETHUSDT"
START_DATE = "2025-10-01"


@dataclass(frozen=True)
class DagsterDev:
    base: str  # http://127.0.0.1:<port>
    home: Path  # DAGSTER_HOME
    data: Path  # LEVIBOT_DATA_DIR
    log: Path
    process: object


def graphql(base: str, query: str, variables: dict | None = None) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(f"{base}/graphql", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        payload = json.load(response)
    assert "errors" not in payload, payload
    return payload["data"]


def _code_location_loaded(base: str) -> bool:
    try:
        return bool(graphql(base, "{ assetNodes { id } }")["assetNodes"])
    except (urllib.error.URLError, ConnectionError, OSError):
        return False


@contextlib.contextmanager
def running_dagster_dev(workdir: Path) -> Iterator[DagsterDev]:
    home, data = workdir / "home", workdir / "data"
    home.mkdir(parents=True)
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")  # queued runs, pools, run monitoring, nux off
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "LEVIBOT_"))}
    env.update(DAGSTER_HOME=str(home), LEVIBOT_DATA_DIR=str(data), LEVIBOT_SOURCE="synthetic",
               LEVIBOT_START_DATE=START_DATE, LEVIBOT_SYMBOLS=SYMBOLS)
    port = processes.free_port()
    base, log = f"http://127.0.0.1:{port}", workdir / "dagster-dev.log"
    argv = [sys.executable, "-m", "dagster", "dev", "-m", "levibot_assets.definitions", "-h", "127.0.0.1", "-p", str(port)]
    with processes.running(argv, log, env=env, first_signal=2) as server:  # SIGINT stops dagster dev cleanly
        processes.wait_until(lambda: _code_location_loaded(base), STARTUP_TIMEOUT_S, "dagster dev up", server, log)
        yield DagsterDev(base, home, data, log, server)

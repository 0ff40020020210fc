"""The docker-compose topology without containers: the same commands against a real PostgreSQL.

`dagster api grpc` (user_code), `dagster-webserver` and `dagster-daemon run` start as local processes
with DAGSTER_HOME holding docker/dagster.yaml verbatim (its env vars point at the test server) and a
workspace that differs from docker/workspace.yaml only in host and port. Through the webserver's
GraphQL API the test checks the code location loads, queues a run of one raw_ohlcv partition, and
waits for the daemon to dequeue it and the gRPC server to execute it; then the parquet file must be
on disk and the run's events in PostgreSQL's event_logs table.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from contextlib import ExitStack
from pathlib import Path

import pytest
import yaml
from dagster import DagsterEventType as T

from levibot_assets.core.layout import DataLayout
from levibot_assets_tests import processes
from levibot_assets_tests.postgres import postgres_server  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow

DOCKER = Path(__file__).resolve().parents[1] / "docker"
BIN = Path(sys.executable).parent
DATE, SYMBOL = "2025-10-13", "BTCUSDT"
START_TIMEOUT_S = 120.0
RUN_TIMEOUT_S = 120.0

WORKSPACE_QUERY = """
{ workspaceOrError { __typename ... on Workspace { locationEntries { name locationOrLoadError {
    __typename
    ... on RepositoryLocation { repositories { name assetNodes { assetKey { path } } } }
    ... on PythonError { message }
} } } } }
"""

LAUNCH_RUN = """
mutation($params: ExecutionParams!) { launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on PythonError { message stack }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
} }
"""

RUN_STATUS = """
query($runId: ID!) { runOrError(runId: $runId) { __typename ... on Run { status } } }
"""


def _graphql(port: int, query: str, variables: dict | None = None) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        payload = json.loads(response.read())
    assert "errors" not in payload, payload["errors"]
    return payload["data"]


def _webserver_up(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def _grpc_up(port: int) -> bool:
    from dagster._grpc.client import DagsterGrpcClient

    try:
        DagsterGrpcClient(port=port, host="127.0.0.1").ping("up?")
        return True
    except Exception:  # the server is not listening yet
        return False


def _loaded_location(port: int) -> dict | None:
    entries = _graphql(port, WORKSPACE_QUERY)["workspaceOrError"]["locationEntries"]
    (entry,) = entries
    location = entry["locationOrLoadError"]
    if location is None:  # still loading
        return None
    assert location["__typename"] == "RepositoryLocation", location
    return entry


def _write_instance(tmp_path: Path, grpc_port: int) -> tuple[Path, Path]:
    """DAGSTER_HOME with docker/dagster.yaml as is; the docker workspace re-pointed at localhost."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(DOCKER / "dagster.yaml", home / "dagster.yaml")
    workspace = yaml.safe_load((DOCKER / "workspace.yaml").read_text())
    (location,) = workspace["load_from"]
    location["grpc_server"].update(host="127.0.0.1", port=grpc_port)
    workspace_path = home / "workspace.yaml"
    workspace_path.write_text(yaml.safe_dump(workspace))
    return home, workspace_path


def _env(home: Path, data_dir: Path, logs_dir: Path, server, db: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEVIBOT_", "DAGSTER_"))}
    env.update(server.dagster_env(db))
    env.update(
        DAGSTER_HOME=str(home),
        DAGSTER_COMPUTE_LOGS_DIR=str(logs_dir),
        LEVIBOT_DATA_DIR=str(data_dir),
        LEVIBOT_SOURCE="synthetic",
        LEVIBOT_START_DATE="2025-10-01",
        LEVIBOT_SYMBOLS=SYMBOL,
        LEVIBOT_THREADS="1",
    )
    return env


def test_compose_services_run_one_partition_through_the_queue(postgres_server, tmp_path):  # noqa: F811
    db = postgres_server.create_database("dagster_topology")
    grpc_port, web_port = processes.free_port(), processes.free_port()
    home, workspace = _write_instance(tmp_path, grpc_port)
    data_dir, logs_dir = tmp_path / "data", tmp_path / "compute_logs"
    env = _env(home, data_dir, logs_dir, postgres_server, db)
    logs = {name: tmp_path / f"{name}.log" for name in ("user_code", "webserver", "daemon")}

    with ExitStack() as stack:
        # The commands of docker-compose.yml, with loopback addresses and free ports.
        user_code = stack.enter_context(processes.running(
            [str(BIN / "dagster"), "api", "grpc", "-m", "levibot_assets.definitions", "-h", "127.0.0.1", "-p", str(grpc_port)],
            logs["user_code"], env=env,
        ))
        processes.wait_until(lambda: _grpc_up(grpc_port), START_TIMEOUT_S, "gRPC server", user_code, logs["user_code"])
        health = subprocess.run(  # the compose healthcheck that webserver and daemon wait for
            [str(BIN / "dagster"), "api", "grpc-health-check", "-p", str(grpc_port)],
            env=env, capture_output=True, text=True, timeout=START_TIMEOUT_S,
        )
        assert health.returncode == 0, health.stdout + health.stderr
        webserver = stack.enter_context(processes.running(
            [str(BIN / "dagster-webserver"), "-w", str(workspace), "-h", "127.0.0.1", "-p", str(web_port)],
            logs["webserver"], env=env,
        ))
        daemon = stack.enter_context(processes.running(
            [str(BIN / "dagster-daemon"), "run", "-w", str(workspace)], logs["daemon"], env=env,
        ))
        processes.wait_until(lambda: _webserver_up(web_port), START_TIMEOUT_S, "webserver", webserver, logs["webserver"])

        entry = processes.wait_until(lambda: _loaded_location(web_port), START_TIMEOUT_S, "code location")
        assert entry["name"] == "levibot_assets"
        (repository,) = entry["locationOrLoadError"]["repositories"]
        assert ["raw_ohlcv"] in [node["assetKey"]["path"] for node in repository["assetNodes"]]

        # As the UI materializes one partition: the implicit asset job, the asset, partition tags.
        tags = {"dagster/partition": f"{DATE}|{SYMBOL}", "dagster/partition/date": DATE, "dagster/partition/symbol": SYMBOL}
        params = {
            "selector": {
                "repositoryLocationName": entry["name"],
                "repositoryName": repository["name"],
                "jobName": "__ASSET_JOB",
                "assetSelection": [{"path": ["raw_ohlcv"]}],
            },
            "runConfigData": {},
            "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
        }
        launched = _graphql(web_port, LAUNCH_RUN, {"params": params})["launchRun"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        run_id = launched["run"]["runId"]
        assert launched["run"]["status"] == "QUEUED", "the QueuedRunCoordinator hands runs to the daemon"

        def finished():
            status = _graphql(web_port, RUN_STATUS, {"runId": run_id})["runOrError"]["status"]
            return status if status in ("SUCCESS", "FAILURE", "CANCELED") else None

        status = processes.wait_until(finished, RUN_TIMEOUT_S, "queued run", daemon, logs["daemon"])
        assert status == "SUCCESS", processes.log_tail(logs["user_code"]) + processes.log_tail(logs["daemon"])

    assert DataLayout(data_dir).table("raw_ohlcv", DATE, SYMBOL).is_file()
    conn = postgres_server.connect(db)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT dagster_event_type, asset_key, partition FROM event_logs WHERE run_id = %s", (run_id,)
            )
            events = cur.fetchall()
    finally:
        conn.close()
    types = {event_type for event_type, _, _ in events}
    # Enqueued by the webserver, launched by the daemon, executed by a worker of the gRPC server.
    path = (T.RUN_ENQUEUED, T.RUN_STARTING, T.RUN_START, T.STEP_SUCCESS, T.ASSET_MATERIALIZATION, T.RUN_SUCCESS)
    assert {t.value for t in path} <= types, types
    materializations = [(key, part) for t, key, part in events if t == T.ASSET_MATERIALIZATION.value]
    assert materializations == [('["raw_ohlcv"]', f"{DATE}|{SYMBOL}")]
    assert list(logs_dir.rglob("*.out")) or list(logs_dir.rglob("*.err")), "step logs land in DAGSTER_COMPUTE_LOGS_DIR"

"""docker/: the compose file, the Dagster instance config, the workspace and the Dockerfile agree.

No Docker daemon is needed: the files are parsed and cross-checked (ports, commands, mounts,
environment), the instance config is validated by Dagster itself, and secrets are checked to stay
out of the image. test_deployment_topology.py runs the same commands against a real PostgreSQL.
"""
from __future__ import annotations

import importlib
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
DAGSTER_SERVICES = ("user_code", "webserver", "daemon")
SECRET_NAMES = ("DAGSTER_PG_PASSWORD", "LEVIBOT_ALERT_WEBHOOK")
_INTERPOLATION = re.compile(r"(?<!\$)\$\{([A-Z0-9_]+)(?::?[-?]([^}]*))?\}")


def _yaml(name: str) -> dict:
    return yaml.safe_load((DOCKER / name).read_text())


def _interpolate_defaults(text: str) -> str:
    """What docker compose makes of ${VAR:-default} with VAR unset (the default, or empty)."""
    return _INTERPOLATION.sub(lambda m: m.group(2) or "", text)


def _env_names_in(node) -> set[str]:
    """Every `{env: NAME}` in a Dagster config tree."""
    if isinstance(node, dict):
        if set(node) == {"env"}:
            return {node["env"]}
        return set().union(*(_env_names_in(v) for v in node.values())) if node else set()
    if isinstance(node, list):
        return set().union(*(_env_names_in(v) for v in node)) if node else set()
    return set()


def _option(command: list[str], flag: str) -> str:
    assert flag in command, f"{flag} missing from {command}"
    return command[command.index(flag) + 1]


def _mounts(service: dict) -> dict[str, str]:
    """container path -> volume name."""
    return {m.split(":")[1]: m.split(":")[0] for m in service.get("volumes", [])}


def _dockerfile_env() -> dict[str, str]:
    text = (DOCKER / "Dockerfile").read_text().replace("\\\n", " ")
    env = {}
    for line in text.splitlines():
        if line.strip().startswith("ENV "):
            for token in shlex.split(line.strip()[4:]):
                name, _, value = token.partition("=")
                env[name] = value
    return env


@pytest.fixture(scope="module")
def compose() -> dict:
    return _yaml("docker-compose.yml")


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def test_services_present(services):
    assert set(services) == {"postgres", *DAGSTER_SERVICES}


def test_user_code_serves_the_definitions_module_on_the_workspace_port(services):
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["dagster"]
    command = services["user_code"]["command"]
    assert command[:3] == ["dagster", "api", "grpc"]
    assert _option(command, "-m") == pyproject["module_name"]
    assert _option(command, "-h") == "0.0.0.0"

    (location,) = _yaml("workspace.yaml")["load_from"]
    grpc = location["grpc_server"]
    assert grpc["host"] == "user_code"
    assert grpc["port"] == int(_option(command, "-p"))
    assert grpc["location_name"] == pyproject["code_location_name"] == "levibot_assets"
    healthcheck = services["user_code"]["healthcheck"]["test"]
    assert _option(healthcheck, "-p") == _option(command, "-p")


def test_webserver_and_daemon_load_the_workspace_baked_into_dagster_home(services):
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert "COPY docker/dagster.yaml docker/workspace.yaml ${DAGSTER_HOME}/" in dockerfile
    home = _dockerfile_env()["DAGSTER_HOME"]
    web, daemon = services["webserver"]["command"], services["daemon"]["command"]
    assert web[0] == "dagster-webserver" and daemon[:2] == ["dagster-daemon", "run"]
    for command in (web, daemon):
        assert _option(command, "-w") == f"{home}/workspace.yaml"
    for name in DAGSTER_SERVICES:
        assert services[name]["environment"]["DAGSTER_HOME"] == home


def test_webserver_published_on_loopback_only_by_default(services):
    (published,) = services["webserver"]["ports"]
    host_ip, host_port, container_port = _interpolate_defaults(published).split(":")
    assert host_ip == "127.0.0.1"
    assert host_port == container_port == _option(services["webserver"]["command"], "-p")
    exposed = [name for name, service in services.items() if service.get("ports") and name != "webserver"]
    assert exposed == [], "only the webserver publishes a port (PostgreSQL and gRPC stay internal)"


def test_every_env_var_of_dagster_yaml_is_set_for_every_dagster_service(services):
    needed = _env_names_in(_yaml("dagster.yaml"))
    assert {"DAGSTER_PG_HOST", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB", "DAGSTER_PG_PORT"} <= needed
    for name in DAGSTER_SERVICES:
        missing = needed - set(services[name]["environment"])
        assert not missing, f"{name} lacks {sorted(missing)} that docker/dagster.yaml reads"
    assert services["user_code"]["environment"]["DAGSTER_PG_HOST"] == "postgres"


def test_postgres_credentials_match_between_server_and_clients(services):
    server_env, client_env = services["postgres"]["environment"], services["user_code"]["environment"]
    assert server_env["POSTGRES_USER"] == client_env["DAGSTER_PG_USER"]
    assert server_env["POSTGRES_PASSWORD"] == client_env["DAGSTER_PG_PASSWORD"]
    assert server_env["POSTGRES_DB"] == client_env["DAGSTER_PG_DB"]
    assert client_env["DAGSTER_PG_PORT"] == "5432"
    assert ":?" in client_env["DAGSTER_PG_PASSWORD"], "a missing password must stop `compose up` with a message"


def test_data_volume_mounted_at_levibot_data_dir_wherever_steps_can_run(services):
    step_services = [n for n in DAGSTER_SERVICES if "LEVIBOT_DATA_DIR" in services[n]["environment"]]
    assert "user_code" in step_services, "DefaultRunLauncher runs steps in the user code container"
    data_dirs = {services[n]["environment"]["LEVIBOT_DATA_DIR"] for n in step_services}
    assert data_dirs == {_dockerfile_env()["LEVIBOT_DATA_DIR"]}
    (data_dir,) = data_dirs
    volumes = {_mounts(services[n]).get(data_dir) for n in step_services}
    assert len(volumes) == 1 and None not in volumes, f"one volume at {data_dir} in {step_services}: {volumes}"


def test_compute_logs_written_by_run_workers_are_readable_by_the_webserver(services):
    logs_dir = services["user_code"]["environment"]["DAGSTER_COMPUTE_LOGS_DIR"]
    volumes = {_mounts(services[n]).get(logs_dir) for n in ("user_code", "webserver")}
    assert len(volumes) == 1 and None not in volumes


def test_named_volumes_declared(compose, services):
    used = {volume for service in services.values() for volume in _mounts(service).values()}
    assert used <= set(compose["volumes"])


def test_dagster_yaml_is_a_valid_instance_config(monkeypatch, tmp_path):
    from dagster._config import process_config, resolve_to_config_type
    from dagster._core.instance.config import dagster_instance_config

    for name in _env_names_in(_yaml("dagster.yaml")):
        monkeypatch.setenv(name, "5432" if name.endswith("_PORT") else "x")
    config, _ = dagster_instance_config(str(DOCKER), config_filename="dagster.yaml")
    storage = config["storage"]["custom"]  # dagster-postgres with a kept pool (levibot_assets/instance/storage.py)
    assert (storage["module"], storage["class"]) == ("levibot_assets.instance.storage", "LevibotPostgresStorage")
    assert storage["config"]["postgres_db"]["hostname"] == {"env": "DAGSTER_PG_HOST"}
    storage_class = getattr(importlib.import_module(storage["module"]), storage["class"])
    assert process_config(resolve_to_config_type(storage_class.config_type()), storage["config"]).success
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert config["run_launcher"]["class"] == "DefaultRunLauncher"


def test_exchange_pool_is_limited():
    from levibot_assets_tests.graph import raw_ohlcv

    assert raw_ohlcv.op.pool == "exchange"
    pools = _yaml("dagster.yaml")["concurrency"]["pools"]
    assert pools["default_limit"] >= 1 and pools["granularity"] == "op"


@pytest.mark.parametrize("config", [DOCKER / "dagster.yaml", REPO / "dagster.yaml"], ids=["docker", "local"])
def test_runs_of_one_symbol_execute_one_at_a_time(config):
    """Both instance files limit the tag the schedule and `levibot materialize` put on a symbol's runs
    (the Helm values repeat docker/dagster.yaml's limits: test_k8s_config)."""
    from levibot_assets.partitions import SYMBOL_TAG

    limits = yaml.safe_load(config.read_text())["concurrency"]["runs"]["tag_concurrency_limits"]
    assert {"key": SYMBOL_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in limits


def test_no_secret_in_the_image():
    dockerfile = (DOCKER / "Dockerfile").read_text()
    for line in dockerfile.replace("\\\n", " ").splitlines():
        if line.strip().split(" ")[0] in ("ENV", "ARG"):
            assert not re.search(r"KEY|SECRET|PASSWORD|WEBHOOK|TOKEN", line), f"secret-like build setting: {line}"
    assert not re.search(r"^COPY \. ", dockerfile, re.M), "copying the whole context could bake docker/.env in"
    ignore = [r for r in (DOCKER / "Dockerfile.dockerignore").read_text().splitlines() if r and not r.startswith("#")]
    assert ignore[0] == "**" and not any(".env" in rule for rule in ignore if rule.startswith("!"))


def test_secrets_reach_only_the_user_code_container(services):
    assert services["user_code"]["env_file"] == ".env"
    for name in ("webserver", "daemon", "postgres"):
        assert "env_file" not in services[name]
        leaked = set(services[name]["environment"]) & (set(SECRET_NAMES) - {"DAGSTER_PG_PASSWORD"})
        assert not leaked, f"{name} gets {leaked}"


def test_env_example_documents_every_variable_and_holds_no_secret_value():
    compose_text = (DOCKER / "docker-compose.yml").read_text()
    example = dict(
        line.split("=", 1)
        for line in (DOCKER / ".env.example").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    interpolated = {m.group(1) for m in _INTERPOLATION.finditer(compose_text)} - {"LEVIBOT_IMAGE_TAG"}
    assert interpolated <= set(example), f"undocumented in .env.example: {sorted(interpolated - set(example))}"
    for name in SECRET_NAMES:
        assert example[name] == "", f"{name} must be empty in the example"
    settings_source = (REPO / "levibot_assets" / "settings.py").read_text()
    compose_only = {"LEVIBOT_WEB_BIND", "LEVIBOT_WEB_PORT"}
    unknown = [n for n in example if n.startswith("LEVIBOT_") and n not in compose_only and f'"{n}"' not in settings_source]
    assert not unknown, f".env.example sets variables the settings never read: {unknown}"

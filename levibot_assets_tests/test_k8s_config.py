"""docker/helm/values.yaml against dagster-k8s's own config schemas, without a cluster.

The chart turns `runLauncher.config.k8sRunLauncher` (camelCase) into the run launcher config of
dagster.yaml (snake_case) and adds the fields it owns (instance config map, namespace, ...); that
result must validate against K8sRunLauncher.config_type(). The step executor config and the
tft_model op tag `dagster-k8s/config` validate against k8s_job_executor's schema and
USER_DEFINED_K8S_JOB_CONFIG_SCHEMA.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

pytest.importorskip("dagster_k8s", reason="the k8s extra is not installed: pip install -e '.[k8s]'")

from dagster._config import validate_config  # noqa: E402
from dagster_k8s import K8sRunLauncher, k8s_job_executor  # noqa: E402
from dagster_k8s.job import USER_DEFINED_K8S_JOB_CONFIG_SCHEMA, get_user_defined_k8s_config  # noqa: E402

from levibot_assets.instance.executors import build_executor  # noqa: E402

VALUES = yaml.safe_load((Path(__file__).resolve().parents[1] / "docker" / "helm" / "values.yaml").read_text())


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _chart_launcher_config(values: dict) -> dict:
    """What the chart's configmap-instance template writes under run_launcher.config."""
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    config = {_snake(k): v for k, v in launcher.items()}
    for key in ("env_secrets", "env_config_maps"):  # the chart lists {name: ...}; dagster.yaml takes names
        if key in config:
            config[key] = [item["name"] for item in config[key]]
    if "run_k8s_config" in config:
        config["run_k8s_config"] = {_snake(k): v for k, v in config["run_k8s_config"].items()}
    config.update(
        instance_config_map="levibot-dagster-instance",
        dagster_home="/opt/dagster/dagster_home",
        postgres_password_secret=values["global"]["postgresqlSecretName"],
        service_account_name=values["global"]["serviceAccountName"],
        job_namespace="dagster",
        load_incluster_config=True,
    )
    return config


def _assert_valid(schema, value) -> None:
    result = validate_config(schema, value)
    assert result.success, [e.message for e in result.errors]


def test_run_launcher_config_validates_against_k8s_run_launcher_schema():
    _assert_valid(K8sRunLauncher.config_type(), _chart_launcher_config(VALUES))
    assert VALUES["runLauncher"]["type"] == "K8sRunLauncher"


def test_a_misspelt_launcher_field_is_refused():
    bad = {**_chart_launcher_config(VALUES), "env_secret": ["levibot-exchange"]}
    assert not validate_config(K8sRunLauncher.config_type(), bad).success


def test_step_executor_config_validates_against_k8s_job_executor_schema():
    _assert_valid(k8s_job_executor.config_schema.config_type, VALUES["levibotK8sExecutor"])
    assert build_executor("k8s") is k8s_job_executor


def test_tft_gpu_tag_validates_and_selects_gpu_nodes():
    tag_value = VALUES["levibotTftStepK8sConfig"]
    _assert_valid(USER_DEFINED_K8S_JOB_CONFIG_SCHEMA, tag_value)
    parsed = get_user_defined_k8s_config({"dagster-k8s/config": json.dumps(tag_value)})
    assert parsed.pod_spec_config["node_selector"] == {"nvidia.com/gpu.present": "true"}
    assert parsed.container_config["resources"]["limits"]["nvidia.com/gpu"] == "1"
    from levibot_assets_tests.graph import tft_model  # the asset carries the same pod config

    assert json.loads(tft_model.op.tags["dagster-k8s/config"]) == tag_value


def test_values_repeat_the_concurrency_of_dagster_yaml():
    instance = yaml.safe_load((Path(__file__).resolve().parents[1] / "docker" / "dagster.yaml").read_text())
    queued = VALUES["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert queued["maxConcurrentRuns"] == instance["concurrency"]["runs"]["max_concurrent_runs"]
    assert queued["tagConcurrencyLimits"] == instance["concurrency"]["runs"]["tag_concurrency_limits"]
    assert VALUES["additionalInstanceConfig"]["concurrency"]["pools"] == instance["concurrency"]["pools"]

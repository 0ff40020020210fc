"""LEVIBOT_EXECUTOR: the executor of every job, refused at load when unknown; the broker checked at launch."""
from __future__ import annotations

import os
import subprocess
import sys

import dagster as dg
import pytest

from levibot_assets.instance import executors
from levibot_assets.settings import Settings, executor_choice
from levibot_assets_tests import processes


@pytest.mark.parametrize("raw, name", [(None, "multiprocess"), ("", "multiprocess"), ("in_process", "in_process"),
                                       ("In-Process", "in_process"), ("multiprocess", "multiprocess"),
                                       ("celery", "celery"), ("k8s", "k8s")])
def test_names(raw, name):
    env = {} if raw is None else {"LEVIBOT_EXECUTOR": raw}
    assert Settings.from_env(env).executor == executor_choice(raw) == name


def test_defaults_and_choices():
    assert executors.build_executor("in_process") is dg.in_process_executor
    multiprocess = executors.build_executor("multiprocess")
    assert multiprocess.name == "multiprocess" and multiprocess.executor_creation_fn is dg.multiprocess_executor.executor_creation_fn
    config = multiprocess.apply_config_mapping({}).value["config"]  # stock's, but steps fork from a preloaded server
    assert config["start_method"] == {"forkserver": {"preload_modules": executors.STEP_PRELOAD}}
    assert executors.CODE_LOCATION_MODULE in executors.STEP_PRELOAD
    assert not [m for m in executors.STEP_PRELOAD if m.split(".")[0] in ("lightgbm", "torch", "pytorch_forecasting")]
    pytest.importorskip("dagster_celery")
    assert executors.build_executor("celery").name == "celery"


def test_an_unknown_executor_is_refused_at_load_naming_the_variable():
    env = {**os.environ, "LEVIBOT_EXECUTOR": "spark", "PYTHONWARNINGS": "ignore"}
    load = "from levibot_assets.definitions import defs; defs()"  # what loading the code location does
    result = subprocess.run([sys.executable, "-c", load], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "LEVIBOT_EXECUTOR='spark' must be one of in_process, multiprocess, celery, k8s" in result.stderr


def test_every_job_gets_the_configured_executor():
    from levibot_assets.definitions import defs as load

    with dg.instance_for_test():  # Dagster resolves definitions against an instance's state storage
        defs = load()
        for name in ("nightly", "rollback_job"):
            assert defs.resolve_job_def(name).executor_def is executors.build_executor("multiprocess")
        assert defs.resolve_implicit_global_asset_job_def().executor_def is executors.build_executor("multiprocess")


def test_an_unreachable_broker_fails_at_launch_with_the_url_but_not_its_password(monkeypatch):
    pytest.importorskip("dagster_celery")
    port = processes.free_port()  # nothing listens there
    monkeypatch.setenv("LEVIBOT_CELERY_BROKER", f"redis://:hunter2@127.0.0.1:{port}/0")
    app = executors.make_celery_app()
    with pytest.raises(executors.BrokerUnreachable) as raised:
        executors.check_broker(app, executors.broker_url(), timeout_s=2)
    message = str(raised.value)
    assert f"redis://***@127.0.0.1:{port}/..." in message and "LEVIBOT_CELERY_BROKER" in message
    assert "hunter2" not in message


def test_redact_url():
    assert executors.redact_url("redis://user:pw@h:1/0") == "redis://***@h:1/..."
    assert executors.redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/..."

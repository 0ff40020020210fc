"""Environment variables: defaults, parsing and clear errors for bad values."""
import datetime as dt
import os
import subprocess
import sys

import pytest

from levibot_assets.settings import Settings, SettingsError


def test_defaults():
    s = Settings.from_env({})
    assert s.symbols == ("BTCUSDT", "ETHUSDT", "SOLUSDT")
    assert s.start_date == dt.date(2025, 10, 1)
    assert (s.source, s.label_horizon, s.train_days, s.optuna_trials) == ("synthetic", 15, 14, 32)


def test_parses_values():
    s = Settings.from_env({"LEVIBOT_SYMBOLS": "BTCUSDT, ADAUSDT", "LEVIBOT_START_DATE": "2023-03-17",
                           "LEVIBOT_SOURCE": "files", "LEVIBOT_FILES_DIR": "/x", "LEVIBOT_FEE_BPS": "7.5"})
    assert s.symbols == ("BTCUSDT", "ADAUSDT") and s.start_date == dt.date(2023, 3, 17) and s.fee_bps == 7.5


@pytest.mark.parametrize("symbols", ["BTC/USDT", "btcusdt", "BTC|USDT", "BTC,,ETH", "BTC USDT", "A..B", "[BTC]", ",", "BTCUSDT,BTCUSDT"])
def test_invalid_symbols_refused(symbols):
    with pytest.raises(SettingsError, match="LEVIBOT_SYMBOLS"):
        Settings.from_env({"LEVIBOT_SYMBOLS": symbols})


@pytest.mark.parametrize("symbols", ["", "  "])
def test_empty_symbols_are_refused_not_taken_as_the_defaults(symbols):
    with pytest.raises(SettingsError, match="LEVIBOT_SYMBOLS is set but empty"):
        Settings.from_env({"LEVIBOT_SYMBOLS": symbols})


def test_a_start_date_after_today_is_refused():
    today = dt.datetime.now(dt.timezone.utc).date()
    assert Settings.from_env({"LEVIBOT_START_DATE": today.isoformat()}).start_date == today
    tomorrow = (today + dt.timedelta(days=1)).isoformat()
    with pytest.raises(SettingsError, match=f"LEVIBOT_START_DATE='{tomorrow}' is after today"):
        Settings.from_env({"LEVIBOT_START_DATE": tomorrow})


@pytest.mark.parametrize(
    "env, message",
    [
        ({"LEVIBOT_SOURCE": "kraken"}, "LEVIBOT_SOURCE"),
        ({"LEVIBOT_SOURCE": "files"}, "LEVIBOT_FILES_DIR"),
        ({"LEVIBOT_START_DATE": "13/10/2025"}, "LEVIBOT_START_DATE"),
        ({"LEVIBOT_TRAIN_DAYS": "fourteen"}, "LEVIBOT_TRAIN_DAYS"),
        ({"LEVIBOT_TRAIN_DAYS": "1"}, "LEVIBOT_TRAIN_DAYS"),
        ({"LEVIBOT_OPTUNA_TRIALS": "0"}, "LEVIBOT_OPTUNA_TRIALS"),
        ({"LEVIBOT_SELECT_METRIC": "profit"}, "LEVIBOT_SELECT_METRIC"),
    ],
)
def test_bad_values_name_the_variable(env, message):
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_definitions_refuse_bad_symbols_at_load_time(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEVIBOT_")}
    env.update(LEVIBOT_SYMBOLS="BTC/USDT", LEVIBOT_DATA_DIR=str(tmp_path))
    load = "from levibot_assets.definitions import defs; defs()"  # what loading the code location does
    proc = subprocess.run([sys.executable, "-c", load], env=env,
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode != 0
    assert "invalid symbol 'BTC/USDT'" in proc.stderr


def test_secrets_not_in_repr():
    s = Settings.from_env({"LEVIBOT_ALERT_WEBHOOK": "https://hooks.example/T/secret",
                           "LEVIBOT_OPTUNA_STORAGE": "postgresql+psycopg2://u:pw-456@h/optuna"})
    assert "secret" not in repr(s) and "pw-456" not in repr(s)


# --- thread budget: threads per run from the cores and the runs allowed at once ---

from levibot_assets.settings import (  # noqa: E402
    DEFAULT_CONCURRENT_RUNS,
    default_threads,
    derive_threads,
    instance_concurrent_runs,
)


@pytest.mark.parametrize(
    "cores, runs, threads",
    [(2, 4, 1), (2, 1, 2), (2, 2, 1), (8, 4, 2), (16, 4, 4), (17, 4, 4), (64, 3, 21), (1, 1, 1), (3, 4, 1),
     (8, -1, 1), (8, 0, 1), (8, None, 1)],
)
def test_derive_threads_never_oversubscribes(cores, runs, threads):
    assert derive_threads(cores, runs) == threads
    if runs and runs > 0 and cores >= runs:
        assert derive_threads(cores, runs) * runs <= cores


def _home(tmp_path, text: str) -> dict[str, str]:
    (tmp_path / "dagster.yaml").write_text(text)
    return {"DAGSTER_HOME": str(tmp_path)}


def test_concurrent_runs_read_from_the_instance_config(tmp_path):
    assert instance_concurrent_runs({}) == DEFAULT_CONCURRENT_RUNS == 4  # no DAGSTER_HOME
    assert instance_concurrent_runs({"DAGSTER_HOME": str(tmp_path / "none")}) == DEFAULT_CONCURRENT_RUNS
    env = _home(tmp_path, "concurrency:\n  runs:\n    max_concurrent_runs: 3\n")
    assert instance_concurrent_runs(env) == 3
    (tmp_path / "dagster.yaml").write_text(
        "run_coordinator:\n  module: dagster.core.run_coordinator\n  class: QueuedRunCoordinator\n"
        "  config:\n    max_concurrent_runs: 6\n"
    )
    os.utime(tmp_path / "dagster.yaml", ns=(1, 1))  # a different mtime: the cached parse is not reused
    assert instance_concurrent_runs(env) == 6
    env = _home(tmp_path, "concurrency:\n  runs:\n    max_concurrent_runs:\n      env: MAX_RUNS\n")
    assert instance_concurrent_runs({**env, "MAX_RUNS": "8"}) == 8
    env = _home(tmp_path, "run_coordinator:\n  class: QueuedRunCoordinator\n")
    assert instance_concurrent_runs(env) == 10  # Dagster's default for a queue without a limit
    env = _home(tmp_path, "storage: {}\n")
    assert instance_concurrent_runs(env) == -1  # no queue: nothing limits the runs
    env = _home(tmp_path, "concurrency: [unclosed\n")
    assert instance_concurrent_runs(env) == DEFAULT_CONCURRENT_RUNS  # unreadable: the default, no failure


def test_the_repository_instance_config_gives_a_quarter_of_the_cores():
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    assert instance_concurrent_runs({"DAGSTER_HOME": repo}) == 4


def test_threads_default_is_derived_and_levibot_threads_overrides(tmp_path, monkeypatch):
    import levibot_assets.settings as settings_module

    monkeypatch.setattr(settings_module, "available_cores", lambda: 16)
    env = _home(tmp_path, "concurrency:\n  runs:\n    max_concurrent_runs: 4\n")
    assert default_threads(env) == 4
    assert Settings.from_env(env).threads == 4
    assert Settings.from_env({**env, "LEVIBOT_THREADS": "7"}).threads == 7  # explicit override wins
    assert Settings.from_env({}).threads == 16 // DEFAULT_CONCURRENT_RUNS
    monkeypatch.setattr(settings_module, "available_cores", lambda: 2)
    assert Settings.from_env(env).threads == 1
    with pytest.raises(SettingsError, match="LEVIBOT_THREADS='0' must be within"):
        Settings.from_env({"LEVIBOT_THREADS": "0"})

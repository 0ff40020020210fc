"""Every knob of the pipeline in one typed place, read from environment variables.

The README's table of environment variables documents exactly the fields below. Settings is a
pydantic-settings model: each field names its variable (validation_alias), pydantic parses and
bounds it, and `Settings.from_env` turns a ValidationError into one SettingsError line that names
the variable, so a bad value stops the CLI or the code location with a message a person can act on.
`Settings(...)` with keyword arguments reads no environment (tests and tools build their own).
"""
from __future__ import annotations

import datetime as dt
import json
import os
import re
from functools import lru_cache
from typing import Annotated, Any, Literal, Mapping, Optional, get_args

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, NoDecode, SettingsConfigDict

from levibot_assets.core import object_store
from levibot_assets.core.metrics import METRICS
from levibot_assets.core.sources import SOURCES

EXECUTORS = ("in_process", "multiprocess", "celery", "k8s")
DEFAULT_EXECUTOR = "multiprocess"
# Runs assumed to share the machine when the Dagster instance config does not say (both shipped
# dagster.yaml files allow 4: concurrency.runs.max_concurrent_runs).
DEFAULT_CONCURRENT_RUNS = 4
_SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,20}$")


class SettingsError(ValueError):
    """An environment variable holds a value the pipeline cannot use."""


def executor_choice(raw: Any) -> str:
    """The executor LEVIBOT_EXECUTOR names (any case, '-' for '_'; blank: the default)."""
    text = str(raw or "").strip()
    name = text.lower().replace("-", "_") or DEFAULT_EXECUTOR
    if name not in EXECUTORS:
        raise SettingsError(f"LEVIBOT_EXECUTOR={text!r} must be one of {', '.join(EXECUTORS)}")
    return name


def derive_threads(cores: int, concurrent_runs: int | None) -> int:
    """Threads for one run so that `concurrent_runs` runs at once never ask for more than `cores`.

    max(1, cores // concurrent_runs); a limit of None, 0 or -1 (Dagster: no limit) gives 1 thread.
    """
    if not concurrent_runs or concurrent_runs < 1:
        return 1
    return max(1, int(cores) // int(concurrent_runs))


def _read(path: str) -> str:
    with open(path, encoding="ascii") as fh:
        return fh.read().strip()


def available_cores() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup CPU quota (containers)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        quota, period = _read("/sys/fs/cgroup/cpu.max").split()[:2]  # cgroup v2: "max 100000" or "200000 100000"
    except (OSError, ValueError):
        try:  # cgroup v1
            quota, period = _read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), _read("/sys/fs/cgroup/cpu/cpu.cfs_period_us")
        except OSError:
            quota, period = "max", "1"
    try:
        if quota not in ("max", "-1") and int(period) > 0:
            cores = min(cores, max(1, int(quota) // int(period)))
    except ValueError:
        pass
    return max(1, cores)


@lru_cache(maxsize=8)
def _instance_run_limit(path: str, mtime_ns: int):
    """The raw max_concurrent_runs of a dagster.yaml (an int, {env: NAME}, or None when unset)."""
    import yaml  # a dependency of dagster

    with open(path, encoding="utf-8") as fh:
        config = yaml.safe_load(fh) or {}
    runs = (config.get("concurrency") or {}).get("runs") or {}
    coordinator = config.get("run_coordinator") or {}
    limit = runs.get("max_concurrent_runs", (coordinator.get("config") or {}).get("max_concurrent_runs"))
    if limit is None:
        # QueuedRunCoordinator defaults to 10 runs at once; without a queue nothing limits them (-1)
        return 10 if "Queued" in str(coordinator.get("class", "")) else -1
    return limit


def instance_concurrent_runs(env: Mapping[str, str] | None = None) -> int:
    """max_concurrent_runs of the Dagster instance ($DAGSTER_HOME/dagster.yaml), or
    DEFAULT_CONCURRENT_RUNS when there is no readable instance config; -1 means no limit."""
    env = os.environ if env is None else env
    home = env.get("DAGSTER_HOME")
    if not home:
        return DEFAULT_CONCURRENT_RUNS
    path = os.path.join(home, "dagster.yaml")
    try:
        limit = _instance_run_limit(path, os.stat(path).st_mtime_ns)
        if isinstance(limit, dict):  # {env: NAME}, as dagster.yaml allows
            limit = env.get(str(limit["env"]))
        return int(limit)
    except Exception:  # missing, unreadable or unparsable: the documented default, never a failed run
        return DEFAULT_CONCURRENT_RUNS


def default_threads(env: Mapping[str, str] | None = None) -> int:
    """LEVIBOT_THREADS when unset: the cores divided among the runs the instance allows at once."""
    return derive_threads(available_cores(), instance_concurrent_runs(env))


def validate_symbol(symbol: str) -> str:
    """Symbols are exchange ids like BTCUSDT: they become file names and Dagster partition keys."""
    if not _SYMBOL_RE.fullmatch(symbol or ""):
        raise SettingsError(
            f"invalid symbol {symbol!r}: use exchange ids of 2-20 upper-case letters/digits such as "
            "BTCUSDT (no '/', '|', ',', '[', ']', '..', whitespace or lower case)"
        )
    return symbol


class _MappingEnv(EnvSettingsSource):
    """pydantic-settings' environment source over the mapping given to from_env (os.environ by
    default), so tests can pass their own. Values are stripped and blank ones dropped: a variable set
    to spaces means unset, as the README documents."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]):
        self._env = env
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str]:
        return {name: value.strip() for name, value in self._env.items() if value.strip()}


def _var(name: str, default: Any = None, **constraints) -> Any:
    """A field read from the environment variable `name` (the README's table lists them)."""
    return Field(default, validation_alias=name, **constraints)


def _secret(name: str) -> Any:
    """Like _var, kept out of repr: logs and tracebacks print settings."""
    return Field(None, validation_alias=name, repr=False)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(frozen=True, case_sensitive=True, populate_by_name=True)

    data_dir: str = _var("LEVIBOT_DATA_DIR", "./data")
    start_date: dt.date = _var("LEVIBOT_START_DATE", dt.date(2025, 10, 1))
    symbols: Annotated[tuple[str, ...], NoDecode] = _var("LEVIBOT_SYMBOLS", ("BTCUSDT", "ETHUSDT", "SOLUSDT"))
    source: Literal[tuple(SOURCES)] = _var("LEVIBOT_SOURCE", "synthetic")
    exchange: str = _var("LEVIBOT_EXCHANGE", "binance")
    ccxt_options: Annotated[dict, NoDecode] = Field(default_factory=dict, validation_alias="LEVIBOT_CCXT_OPTIONS", repr=False)
    files_dir: Optional[str] = _var("LEVIBOT_FILES_DIR")
    label_horizon: int = _var("LEVIBOT_LABEL_HORIZON", 15, ge=1, le=240)
    train_days: int = _var("LEVIBOT_TRAIN_DAYS", 14, ge=2, le=365)
    optuna_trials: int = _var("LEVIBOT_OPTUNA_TRIALS", 32, ge=1, le=10_000)
    optuna_storage: Optional[str] = _secret("LEVIBOT_OPTUNA_STORAGE")
    tft_max_minutes: float = _var("LEVIBOT_TFT_MAX_MINUTES", 5.0, ge=0.05, le=24 * 60)
    fee_bps: float = _var("LEVIBOT_FEE_BPS", 10.0, ge=0.0, le=1000.0)
    # share of H-bar slots the trading rule aims to trade: sets each model's entry threshold (core.metrics);
    # the default was chosen on real data, 2023-03-31 .. 04-15 (benchmarks/trading_rule.py, docs/models.md)
    trade_share: float = _var("LEVIBOT_TRADE_SHARE", 0.02, ge=0.001, le=1.0)
    select_metric: Literal[tuple(METRICS)] = _var("LEVIBOT_SELECT_METRIC", "auc")
    promote_margin: float = _var("LEVIBOT_PROMOTE_MARGIN", 0.0, ge=-1.0, le=1.0)
    record_days: int = _var("LEVIBOT_RECORD_DAYS", 5, ge=1, le=365)
    promote_confidence: float = _var("LEVIBOT_PROMOTE_CONFIDENCE", 0.9, ge=0.0, le=0.999)
    psi_warn: float = _var("LEVIBOT_PSI_WARN", 1.5, ge=0.0, le=100.0)
    alert_webhook: Optional[str] = _secret("LEVIBOT_ALERT_WEBHOOK")
    # where a run's steps execute (levibot_assets/instance/executors.py, docs/scale-out.md)
    executor: str = _var("LEVIBOT_EXECUTOR", DEFAULT_EXECUTOR)
    celery_broker: Optional[str] = _secret("LEVIBOT_CELERY_BROKER")
    celery_backend: Optional[str] = _secret("LEVIBOT_CELERY_BACKEND")
    celery_worker_lost_s: float = _var("LEVIBOT_CELERY_WORKER_LOST_S", 30.0, ge=0.001, le=86_400.0)
    # OpenMP/BLAS/torch threads of one run; default derived from the machine (see default_threads)
    threads: int = Field(default_factory=default_threads, validation_alias="LEVIBOT_THREADS", ge=1, le=256)

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings):
        """Keyword arguments only: the environment is read by from_env, from the mapping it is given."""
        return (init_settings,)

    @field_validator("executor", mode="before")
    @classmethod
    def _executor(cls, value: Any) -> str:
        return executor_choice(value)

    @field_validator("celery_broker", "celery_backend", mode="before")
    @classmethod
    def _unset_when_blank(cls, value: Any) -> Any:
        return value.strip() or None if isinstance(value, str) else value

    @field_validator("start_date", mode="before")
    @classmethod
    def _iso_date(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return dt.date.fromisoformat(value)
            except ValueError:
                raise ValueError(f"LEVIBOT_START_DATE={value!r} is not a YYYY-MM-DD date") from None
        return value

    @field_validator("start_date")
    @classmethod
    def _not_in_future(cls, value: dt.date) -> dt.date:
        today = dt.datetime.now(dt.timezone.utc).date()
        if value > today:  # no partition would exist: every run and backfill would find nothing to do
            raise ValueError(f"LEVIBOT_START_DATE={value.isoformat()!r} is after today ({today}, UTC)")
        return value

    @field_validator("symbols", mode="before")
    @classmethod
    def _symbol_list(cls, value: Any) -> Any:
        raw = value if isinstance(value, str) else ",".join(value)
        symbols = tuple(s.strip() for s in raw.split(","))
        for s in symbols:
            try:
                validate_symbol(s)
            except SettingsError as exc:
                raise ValueError(f"LEVIBOT_SYMBOLS: {exc}") from None
        if len(set(symbols)) != len(symbols):
            raise ValueError(f"LEVIBOT_SYMBOLS={raw!r} lists a symbol twice")
        return symbols

    @field_validator("source", "exchange", "select_metric", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("data_dir")
    @classmethod
    def _local_or_supported_store(cls, value: str) -> str:
        if reason := object_store.unusable(value):
            raise ValueError(f"LEVIBOT_DATA_DIR={value!r} {reason}")
        return value

    @field_validator("ccxt_options", mode="before")
    @classmethod
    def _json_object(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise ValueError(f"LEVIBOT_CCXT_OPTIONS is not valid JSON ({exc})") from None
        if not isinstance(value, dict):
            raise ValueError(f"LEVIBOT_CCXT_OPTIONS must be a JSON object, not {type(value).__name__}")
        return value

    @model_validator(mode="after")
    def _files_need_a_directory(self) -> "Settings":
        if self.source == "files" and not self.files_dir:
            raise ValueError("LEVIBOT_SOURCE=files needs LEVIBOT_FILES_DIR (a directory of kline dumps)")
        return self

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        """The settings the LEVIBOT_* variables of `env` (default os.environ) give; SettingsError when
        a value is unusable, its one-line message naming the variable."""
        env = os.environ if env is None else env
        if "LEVIBOT_SYMBOLS" in env and not env["LEVIBOT_SYMBOLS"].strip():  # must not quietly mean the defaults
            raise SettingsError("LEVIBOT_SYMBOLS is set but empty: list symbols such as BTCUSDT,ETHUSDT or unset it")
        values = _MappingEnv(cls, env)()
        values.setdefault("LEVIBOT_THREADS", default_threads(env))  # derived from this env's DAGSTER_HOME
        try:
            return cls(**values)
        except ValidationError as exc:
            raise SettingsError(_one_line(cls, exc)) from None


def _one_line(cls: type[Settings], exc: ValidationError) -> str:
    """The first error of `exc` as one line naming the variable: the validators' own messages, or
    pydantic's parse and bound errors in the wording the README shows."""
    error = exc.errors()[0]
    if error["type"] == "value_error":
        return str(error["ctx"]["error"])
    name = str(error["loc"][0]) if error["loc"] else ""
    field_name = next((f for f, info in cls.model_fields.items() if info.validation_alias == name), name)
    raw = error["input"]
    if error["type"] in ("int_parsing", "int_from_float", "float_parsing"):
        kind = "int" if error["type"].startswith("int") else "float"
        return f"{name}={raw!r} is not a valid {kind}"
    if error["type"] in ("greater_than_equal", "less_than_equal"):
        bounds = {type(m).__name__: m for m in cls.model_fields[field_name].metadata}
        return f"{name}={raw!r} must be within [{bounds['Ge'].ge}, {bounds['Le'].le}]"
    if error["type"] == "literal_error":
        return f"{name}={raw!r} must be one of {', '.join(get_args(cls.model_fields[field_name].annotation))}"
    return f"{name}={raw!r}: {error['msg']}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings of an entry point (the CLI, the serving loader), read once."""
    return Settings.from_env()

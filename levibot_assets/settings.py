"""Every knob of the pipeline in one typed place, read from environment variables.

The README's table of environment variables documents exactly the fields below.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Mapping

SOURCES = ("synthetic", "ccxt", "files")
# Runs assumed to share the machine when the Dagster instance config does not say (both shipped
# dagster.yaml files allow 4: concurrency.runs.max_concurrent_runs).
DEFAULT_CONCURRENT_RUNS = 4
SELECT_METRICS = ("auc", "accuracy", "log_loss", "brier", "sharpe")
_SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,20}$")


class SettingsError(ValueError):
    """An environment variable holds a value the pipeline cannot use."""


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


@dataclass(frozen=True)
class Settings:
    data_dir: str = "./data"
    start_date: dt.date = dt.date(2025, 10, 1)
    symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
    source: str = "synthetic"
    exchange: str = "binance"
    exchange_api_key: str | None = field(default=None, repr=False)
    exchange_secret: str | None = field(default=None, repr=False)
    ccxt_options: dict = field(default_factory=dict, repr=False, hash=False)
    files_dir: str | None = None
    label_horizon: int = 15
    train_days: int = 14
    optuna_trials: int = 32
    optuna_storage: str | None = field(default=None, repr=False)
    tft_max_minutes: float = 5.0
    fee_bps: float = 10.0
    select_metric: str = "auc"
    promote_margin: float = 0.0
    psi_warn: float = 0.25
    alert_webhook: str | None = field(default=None, repr=False)
    # OpenMP/BLAS/torch threads of one run; default derived from the machine (see default_threads)
    threads: int = field(default_factory=default_threads)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        d = cls()

        def get(name: str) -> str | None:
            value = env.get(name)
            return value.strip() if value is not None and value.strip() != "" else None

        def number(name: str, default, kind, minimum=None, maximum=None):
            raw = get(name)
            if raw is None:
                return default
            try:
                value = kind(raw)
            except ValueError:
                raise SettingsError(f"{name}={raw!r} is not a valid {kind.__name__}") from None
            if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
                raise SettingsError(f"{name}={raw!r} must be within [{minimum}, {maximum}]")
            return value

        start_raw = get("LEVIBOT_START_DATE")
        try:
            start_date = dt.date.fromisoformat(start_raw) if start_raw else d.start_date
        except ValueError:
            raise SettingsError(f"LEVIBOT_START_DATE={start_raw!r} is not a YYYY-MM-DD date") from None
        today = dt.datetime.now(dt.timezone.utc).date()
        if start_date > today:  # no partition would exist: every run and backfill would find nothing to do
            raise SettingsError(f"LEVIBOT_START_DATE={start_raw!r} is after today ({today}, UTC)")

        symbols_raw = get("LEVIBOT_SYMBOLS")
        if symbols_raw is None and "LEVIBOT_SYMBOLS" in env:  # an empty value must not quietly mean the defaults
            raise SettingsError("LEVIBOT_SYMBOLS is set but empty: list symbols such as BTCUSDT,ETHUSDT or unset it")
        if symbols_raw is None:
            symbols = d.symbols
        else:
            symbols = tuple(s.strip() for s in symbols_raw.split(","))
            for s in symbols:
                try:
                    validate_symbol(s)
                except SettingsError as exc:
                    raise SettingsError(f"LEVIBOT_SYMBOLS: {exc}") from None
            if len(set(symbols)) != len(symbols):
                raise SettingsError(f"LEVIBOT_SYMBOLS={symbols_raw!r} lists a symbol twice")

        source = (get("LEVIBOT_SOURCE") or d.source).lower()
        if source not in SOURCES:
            raise SettingsError(f"LEVIBOT_SOURCE={source!r} must be one of {', '.join(SOURCES)}")
        files_dir = get("LEVIBOT_FILES_DIR")
        if source == "files" and not files_dir:
            raise SettingsError("LEVIBOT_SOURCE=files needs LEVIBOT_FILES_DIR (a directory of kline dumps)")

        ccxt_raw = get("LEVIBOT_CCXT_OPTIONS")
        try:
            ccxt_options = json.loads(ccxt_raw) if ccxt_raw else {}
        except ValueError as exc:
            raise SettingsError(f"LEVIBOT_CCXT_OPTIONS is not valid JSON ({exc})") from None
        if not isinstance(ccxt_options, dict):
            raise SettingsError(f"LEVIBOT_CCXT_OPTIONS must be a JSON object, not {type(ccxt_options).__name__}")

        select_metric = (get("LEVIBOT_SELECT_METRIC") or d.select_metric).lower()
        if select_metric not in SELECT_METRICS:
            raise SettingsError(
                f"LEVIBOT_SELECT_METRIC={select_metric!r} must be one of {', '.join(SELECT_METRICS)}"
            )

        return cls(
            data_dir=get("LEVIBOT_DATA_DIR") or d.data_dir,
            start_date=start_date,
            symbols=symbols,
            source=source,
            exchange=(get("LEVIBOT_EXCHANGE") or d.exchange).lower(),
            exchange_api_key=get("LEVIBOT_EXCHANGE_API_KEY"),
            exchange_secret=get("LEVIBOT_EXCHANGE_SECRET"),
            ccxt_options=ccxt_options,
            files_dir=files_dir,
            label_horizon=number("LEVIBOT_LABEL_HORIZON", d.label_horizon, int, 1, 240),
            train_days=number("LEVIBOT_TRAIN_DAYS", d.train_days, int, 2, 365),
            optuna_trials=number("LEVIBOT_OPTUNA_TRIALS", d.optuna_trials, int, 1, 10_000),
            optuna_storage=get("LEVIBOT_OPTUNA_STORAGE"),
            tft_max_minutes=number("LEVIBOT_TFT_MAX_MINUTES", d.tft_max_minutes, float, 0.05, 24 * 60),
            fee_bps=number("LEVIBOT_FEE_BPS", d.fee_bps, float, 0.0, 1000.0),
            select_metric=select_metric,
            promote_margin=number("LEVIBOT_PROMOTE_MARGIN", d.promote_margin, float, -1.0, 1.0),
            psi_warn=number("LEVIBOT_PSI_WARN", d.psi_warn, float, 0.0, 100.0),
            alert_webhook=get("LEVIBOT_ALERT_WEBHOOK"),
            threads=number("LEVIBOT_THREADS", None, int, 1, 256) or default_threads(env),
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once (Dagster definitions are built from them at import)."""
    return Settings.from_env()

"""Market-data sources. Each returns one UTC day of bars in the contract of core.ohlcv.

SOURCES is the one table of them: LEVIBOT_SOURCE must name one of its keys (settings), and the
market-data resource describes and fetches through it. A source's module is imported on first use,
so the synthetic source never loads ccxt.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class SourceConfig:
    """What a source needs besides (symbol, date): the ccxt exchange id and options, the dump folder."""

    exchange: str = "binance"
    files_dir: str | None = None
    ccxt_options: str | None = None  # the JSON object of LEVIBOT_CCXT_OPTIONS


@dataclass(frozen=True)
class Source:
    describe: Callable[[SourceConfig], str]  # where the bars come from, as asset metadata shows it
    fetch_day: Callable[[SourceConfig, str, dt.date], object]  # -> the day's bars (a DataFrame)


def _synthetic_day(config: SourceConfig, symbol: str, date: dt.date):
    from levibot_assets.core.sources.synthetic import synthetic_day

    return synthetic_day(symbol, date)


def _ccxt_day(config: SourceConfig, symbol: str, date: dt.date):
    from levibot_assets.core.sources import exchange

    return exchange.ccxt_client(config.exchange, (config.ccxt_options or "").strip() or None).fetch_day(symbol, date)


def _files_day(config: SourceConfig, symbol: str, date: dt.date):
    from levibot_assets.core.sources.files import files_day

    if not config.files_dir:
        raise ValueError("the files source needs files_dir (LEVIBOT_FILES_DIR)")
    return files_day(config.files_dir, symbol, date)


SOURCES: dict[str, Source] = {
    "synthetic": Source(lambda config: "synthetic", _synthetic_day),
    "ccxt": Source(lambda config: f"ccxt:{config.exchange}", _ccxt_day),
    "files": Source(lambda config: f"files:{config.files_dir}", _files_day),
}


def source(name: str) -> Source:
    try:
        return SOURCES[name]
    except KeyError:
        raise ValueError(f"unknown market-data source {name!r}; use one of {', '.join(SOURCES)}") from None

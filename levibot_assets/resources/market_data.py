"""The market-data resource: one UTC day of 1-minute candles from the configured source."""
from __future__ import annotations

import datetime as dt
import json
from functools import lru_cache
from typing import Optional

import dagster as dg
import pandas as pd

from levibot_assets.settings import SOURCES

CCXT_OPTIONS_ENV = "LEVIBOT_CCXT_OPTIONS"


@lru_cache(maxsize=8)
def ccxt_client(exchange: str, options: str | None = None):
    """One client per exchange and options and process: markets are loaded once, the rate limiter is
    shared. `options`: the JSON object of LEVIBOT_CCXT_OPTIONS (a string, so it can be a cache key).

    Candles are public: the exchange keys are not given to this client (LEVIBOT_CCXT_OPTIONS is).
    """
    from levibot_assets.core.sources.exchange import CcxtOhlcvClient

    return CcxtOhlcvClient(exchange_id=exchange, options=json.loads(options) if options else {})


class MarketDataResource(dg.ConfigurableResource):
    """Chooses between the synthetic, ccxt and files sources (LEVIBOT_SOURCE).

    Exchange keys are not fields of this resource: they are read from the environment when a
    client is built, so they never show in the UI, run config or logs.
    """

    source: str = "synthetic"
    exchange: str = "binance"
    files_dir: str | None = None
    ccxt_options: Optional[str] = None  # JSON object; definitions pass dg.EnvVar(CCXT_OPTIONS_ENV)

    def describe(self) -> str:
        if self.source == "ccxt":
            return f"ccxt:{self.exchange}"
        if self.source == "files":
            return f"files:{self.files_dir}"
        return self.source

    def fetch_day(self, symbol: str, date: dt.date) -> pd.DataFrame:
        if self.source == "synthetic":
            from levibot_assets.core.sources.synthetic import synthetic_day

            return synthetic_day(symbol, date)
        if self.source == "ccxt":
            return ccxt_client(self.exchange, (self.ccxt_options or "").strip() or None).fetch_day(symbol, date)
        if self.source == "files":
            from levibot_assets.core.sources.files import files_day

            if not self.files_dir:
                raise ValueError("the files source needs files_dir (LEVIBOT_FILES_DIR)")
            return files_day(self.files_dir, symbol, date)
        raise ValueError(f"unknown market-data source {self.source!r}; use one of {', '.join(SOURCES)}")

"""The market-data resource: one UTC day of 1-minute candles from the configured source.

Which sources there are and how each fetches is core.sources.SOURCES; this resource carries their
settings into runs. The ccxt options may hold proxy credentials: definitions pass the variable
(dg.EnvVar), never its value, so they stay out of the UI and run records.
"""
from __future__ import annotations

import datetime as dt
from typing import Optional

import dagster as dg
import pandas as pd

from levibot_assets.core.sources import SourceConfig, source

CCXT_OPTIONS_ENV = "LEVIBOT_CCXT_OPTIONS"


class MarketDataResource(dg.ConfigurableResource):
    """The source LEVIBOT_SOURCE names (core.sources.SOURCES) with its settings."""

    source: str = "synthetic"
    exchange: str = "binance"
    files_dir: str | None = None
    ccxt_options: Optional[str] = None  # JSON object; definitions pass dg.EnvVar(CCXT_OPTIONS_ENV)

    def _config(self) -> SourceConfig:
        return SourceConfig(exchange=self.exchange, files_dir=self.files_dir, ccxt_options=self.ccxt_options)

    def describe(self) -> str:
        return source(self.source).describe(self._config())

    def fetch_day(self, symbol: str, date: dt.date) -> pd.DataFrame:
        return source(self.source).fetch_day(self._config(), symbol, date)

"""One complete UTC day of 1-minute candles from a live exchange through ccxt.

Pagination (1440 bars need 2 requests at Binance's limit of 1000), ccxt's own rate limiter, and
retries with exponential backoff on ccxt's NetworkError family (timeouts, RateLimitExceeded,
DDoSProtection, ExchangeNotAvailable); any other ccxt error is a real refusal and fails at once.
API keys stay inside the ccxt instance: they never appear in repr, logs or error messages.
"""
from __future__ import annotations

import datetime as dt
import itertools
import time
from typing import Any, Callable

import ccxt
import pandas as pd

from levibot_assets.core.ohlcv import MarketDataError, day_start, frame_from_rows, select_day
from levibot_assets.core.symbols import SymbolError, exchange_symbol

TIMEFRAME = "1m"
PAGE_LIMIT = 1000
_MINUTE_MS = 60_000
_DAY_MS = 86_400_000


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class CcxtOhlcvClient:
    """Fetches days of 1-minute bars from one ccxt exchange (public endpoints need no key)."""

    def __init__(
        self,
        exchange_id: str = "binance",
        api_key: str | None = None,
        secret: str | None = None,
        exchange: ccxt.Exchange | None = None,
        max_retries: int = 5,
        backoff_seconds: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], dt.datetime] = _utc_now,
    ):
        if max_retries < 0 or backoff_seconds < 0:
            raise ValueError("max_retries and backoff_seconds must not be negative")
        self.exchange = exchange if exchange is not None else _make_exchange(exchange_id, api_key, secret)
        self.exchange.enableRateLimit = True
        credentials = (getattr(self.exchange, name, None) for name in self.exchange.requiredCredentials)
        self._secrets = tuple(value for value in credentials if isinstance(value, str) and value)
        self.exchange_id = self.exchange.id
        self.max_retries = max_retries
        self.backoff_seconds = backoff_seconds
        self._sleep = sleep
        self._now = now

    def __repr__(self) -> str:
        return f"CcxtOhlcvClient(exchange_id={self.exchange_id!r})"

    def fetch_day(self, symbol: str, date: dt.date) -> pd.DataFrame:
        """The bars of `date` (UTC) in the core.ohlcv contract; missing minutes stay missing."""
        what = f"{self.exchange_id} {symbol} {date}"
        start = day_start(date)
        end = start + pd.Timedelta(days=1)
        now = pd.Timestamp(self._now())
        if now.tzinfo is None:
            raise ValueError("now() must return a timezone-aware datetime")
        if now < end:
            raise MarketDataError(
                f"{what}: the day has not ended yet (it ends {end:%Y-%m-%d %H:%M} UTC, now is "
                f"{now.tz_convert('UTC'):%Y-%m-%d %H:%M} UTC); only complete past days can be fetched"
            )
        if self.exchange.markets is None:
            self._call(what, self.exchange.load_markets)
        try:
            market = exchange_symbol(symbol, self.exchange.markets)
        except SymbolError as exc:
            raise MarketDataError(f"{what}: {exc}") from None

        start_ms = int(start.timestamp() * 1000)
        end_ms = start_ms + _DAY_MS
        rows: list[list[Any]] = []
        since = start_ms
        while since < end_ms:
            page = self._call(what, self.exchange.fetch_ohlcv, market, TIMEFRAME, since, limit=PAGE_LIMIT)
            if not page:
                break
            rows.extend(page)
            next_since = int(page[-1][0]) + _MINUTE_MS
            if next_since <= since:  # an exchange that ignores `since` would loop forever
                break
            since = next_since

        bars = select_day(frame_from_rows(rows, unit="ms").drop_duplicates("timestamp", keep="last"), date)
        if bars.empty:
            raise MarketDataError(f"{what}: the exchange returned no bars for this day (not listed then?)")
        return bars

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one ccxt call, retrying transient network failures with exponential backoff.

        Errors are re-raised without their ccxt cause attached: a cause could carry request headers.
        """
        for attempt in itertools.count():
            try:
                return fn(*args, **kwargs)
            except ccxt.NetworkError as exc:
                failure = f"gave up after {attempt + 1} attempt(s): {self._describe(exc)}"
                retry = attempt < self.max_retries
            except ccxt.BaseError as exc:
                failure = f"the exchange refused the request (not retried): {self._describe(exc)}"
                retry = False
            if not retry:
                raise MarketDataError(f"{what}: {failure}")
            self._sleep(self.backoff_seconds * 2**attempt)

    def _describe(self, exc: BaseException) -> str:
        text = f"{type(exc).__name__}: {exc}"
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def _make_exchange(exchange_id: str, api_key: str | None, secret: str | None) -> ccxt.Exchange:
    if exchange_id not in ccxt.exchanges:
        raise ValueError(
            f"unknown ccxt exchange id {exchange_id!r} (LEVIBOT_EXCHANGE); valid ids are lower case, "
            f"e.g. binance, kraken, coinbase; all {len(ccxt.exchanges)}: see ccxt.exchanges"
        )
    config: dict[str, Any] = {"enableRateLimit": True}
    if api_key:
        config["apiKey"] = api_key
    if secret:
        config["secret"] = secret
    exchange = getattr(ccxt, exchange_id)(config)
    # The pipeline trades spot: loading only spot markets saves requests and avoids failing on
    # derivatives endpoints that some regions block (Binance answers them with HTTP 451 from the US).
    fetch_markets = exchange.options.get("fetchMarkets")
    if isinstance(fetch_markets, dict) and "spot" in fetch_markets.get("types", ()):
        fetch_markets["types"] = ["spot"]
    return exchange

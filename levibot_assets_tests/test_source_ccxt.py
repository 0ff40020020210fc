"""The ccxt source through ccxt's real Binance code path, offline.

The exchange is a real `ccxt.binance` built with a markets table (so it never calls exchangeInfo)
whose HTTP layer (`fetch`) serves Binance /api/v3/klines responses recorded by these tests:
12-column rows with string prices, answered according to the request's startTime, endTime and limit.
Faults over real HTTP (bodies, statuses, headers, timeouts) are in test_exchange_faults.py.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
from urllib.parse import parse_qsl, urlsplit

import ccxt
import pytest

from levibot_assets.core.ohlcv import BARS_PER_DAY, MarketDataError, day_start, find_gaps
from levibot_assets.core.sources.exchange import CcxtOhlcvClient
from levibot_assets.core.symbols import SymbolError, exchange_symbol

DAY = dt.date(2024, 5, 1)
DAY_MS = int(day_start(DAY).timestamp() * 1000)
MINUTE_MS = 60_000
AFTER_DAY = dt.datetime(2024, 5, 2, 3, 0, tzinfo=dt.timezone.utc)
API_KEY, SECRET = "test-key-1f2e3d", "test-secret-9a8b7c"

_SPOT = {"type": "spot", "spot": True, "margin": True, "swap": False, "future": False, "option": False,
         "contract": False, "linear": None, "inverse": None, "active": True}
MARKETS = {
    "BTC/USDT": {"id": "BTCUSDT", "symbol": "BTC/USDT", "base": "BTC", "quote": "USDT", "baseId": "BTC",
                 "quoteId": "USDT", **_SPOT},
    # Binance's USD-M perpetual shares the id BTCUSDT: the spot market must win.
    "BTC/USDT:USDT": {"id": "BTCUSDT", "symbol": "BTC/USDT:USDT", "base": "BTC", "quote": "USDT",
                      "settle": "USDT", "baseId": "BTC", "quoteId": "USDT", "settleId": "USDT", "type": "swap",
                      "spot": False, "margin": False, "swap": True, "future": False, "option": False,
                      "contract": True, "linear": True, "inverse": False, "contractSize": 1.0, "active": True},
    "ETH/BTC": {"id": "ETHBTC", "symbol": "ETH/BTC", "base": "ETH", "quote": "BTC", "baseId": "ETH",
                "quoteId": "BTC", **_SPOT},
}


def recorded_klines(first_ms: int, count: int, skip: range = range(0)) -> list[list]:
    """Binance /api/v3/klines rows: [open_time, o, h, l, c, v, close_time, quote_vol, trades, taker_base, taker_quote, ignore]."""
    rows = []
    for i in range(count):
        if i in skip:
            continue
        open_time = first_ms + i * MINUTE_MS
        close = 60_000 + (i * 7919 % 1000) / 100
        rows.append([open_time, f"{close - 1:.2f}", f"{close + 3:.2f}", f"{close - 4:.2f}", f"{close:.2f}",
                     f"{1 + i % 13 / 10:.5f}", open_time + MINUTE_MS - 1, f"{close * 1.5:.4f}", 100 + i % 50,
                     "0.50000", f"{close / 2:.4f}", "0"])
    return rows


class RecordedBinance:
    """Stands in for ccxt's HTTP call: serves recorded klines, or raises queued failures first."""

    def __init__(self, exchange: ccxt.Exchange, rows: list[list], failures=()):
        self.exchange, self.rows, self.failures = exchange, rows, list(failures)
        self.requests: list[dict[str, str]] = []
        exchange.fetch = self

    def __call__(self, url, method="GET", headers=None, body=None):
        parts = urlsplit(url)
        assert (parts.netloc, parts.path) == ("api.binance.com", "/api/v3/klines")
        query = dict(parse_qsl(parts.query))
        self.requests.append(query)
        if self.failures:
            failure = self.failures.pop(0)
            if isinstance(failure, str):  # a recorded error body: ccxt's own handler maps it to an exception
                self.exchange.handle_errors(400, "Bad Request", url, method, {}, failure,
                                            self.exchange.parse_json(failure), headers, body)
            raise failure
        start, end = int(query["startTime"]), int(query.get("endTime", 2**62))
        answer = [row for row in self.rows if start <= row[0] <= end][: int(query["limit"])]
        self.exchange.last_http_response = json.dumps(answer)  # as ccxt's fetch records the body
        return answer


def binance(**config) -> ccxt.Exchange:
    return ccxt.binance({"markets": MARKETS, **config})


def make_client(rows, failures=(), now=AFTER_DAY, **kwargs):
    """A client on a keyed exchange; backoff without jitter (rand=0) so that delays are exact."""
    exchange = binance(apiKey=API_KEY, secret=SECRET)
    server = RecordedBinance(exchange, rows, failures)
    delays: list[float] = []
    client = CcxtOhlcvClient(exchange=exchange, sleep=delays.append, now=lambda: now, rand=lambda: 0.0, **kwargs)
    return client, server, delays


def test_full_day_takes_two_paginated_requests_and_keeps_the_recorded_closes():
    rows = recorded_klines(DAY_MS - 30 * MINUTE_MS, BARS_PER_DAY + 90)  # the exchange also has the day's neighbours
    client, server, delays = make_client(rows)

    bars = client.fetch_day("BTCUSDT", DAY)

    assert client.exchange.enableRateLimit is True
    assert [(r["startTime"], r["endTime"], r["limit"]) for r in server.requests] == [
        (str(DAY_MS), str(DAY_MS + 1000 * MINUTE_MS - 1), "1000"),
        (str(DAY_MS + 1000 * MINUTE_MS), str(DAY_MS + BARS_PER_DAY * MINUTE_MS - 1), "440"),
    ]
    assert all(r["symbol"] == "BTCUSDT" and r["interval"] == "1m" for r in server.requests)
    assert len(bars) == BARS_PER_DAY and find_gaps(bars, DAY) == []
    day_rows = [r for r in rows if DAY_MS <= r[0] < DAY_MS + BARS_PER_DAY * MINUTE_MS]
    assert bars["close"].tolist() == [float(r[4]) for r in day_rows]
    assert bars["volume"].tolist() == [float(r[5]) for r in day_rows]
    assert bars["timestamp"].iloc[0] == day_start(DAY) and bars["timestamp"].is_monotonic_increasing
    assert delays == []


def test_missing_minutes_inside_the_day_stay_missing():
    halt = range(12 * 60 + 40, 14 * 60)  # 80 minutes without bars, as on Binance's 2023-03-24 halt
    rows = recorded_klines(DAY_MS, BARS_PER_DAY + 10, skip=halt)
    client, server, delays = make_client(rows)

    bars = client.fetch_day("BTCUSDT", DAY)

    assert len(server.requests) == 2 and delays == []
    assert len(bars) == BARS_PER_DAY - len(halt) and bars["timestamp"].is_unique
    [gap] = find_gaps(bars, DAY)
    assert (gap.start.strftime("%H:%M"), gap.end.strftime("%H:%M")) == ("12:40", "13:59")


@pytest.mark.parametrize("mangle, problem", [
    (lambda rows: rows.insert(10, rows[9]), "open time 2024-05-01 00:09:00+00:00 appears twice: [1714522140000, "),
    (lambda rows: rows[9].__setitem__(0, rows[9][0] + 30_000), "open time 1714522170000 is not on a whole minute"),
])
def test_a_page_that_is_not_a_run_of_minute_bars_is_retried_then_refused(mangle, problem):
    rows = recorded_klines(DAY_MS, BARS_PER_DAY)
    mangle(rows)
    client, server, delays = make_client(rows, max_retries=2)

    with pytest.raises(MarketDataError) as info:
        client.fetch_day("BTCUSDT", DAY)

    assert len(server.requests) == 3 and delays == [1.0, 2.0]
    assert str(info.value).startswith(
        "binance BTCUSDT 2024-05-01: gave up after 3 attempts: invalid page for 2024-05-01 00:00..2024-05-01 16:39"
    )
    assert problem in str(info.value)


@pytest.mark.parametrize("error", [ccxt.NetworkError, ccxt.RequestTimeout, ccxt.RateLimitExceeded, ccxt.DDoSProtection])
def test_network_errors_are_retried_with_growing_backoff(error):
    assert issubclass(error, ccxt.NetworkError)
    rows = recorded_klines(DAY_MS, BARS_PER_DAY)
    client, server, delays = make_client(rows, failures=[error("binance GET klines: 429"), error("again")],
                                         backoff_seconds=0.5)

    bars = client.fetch_day("BTCUSDT", DAY)

    assert len(bars) == BARS_PER_DAY
    assert len(server.requests) == 2 + 2
    assert delays == [0.5, 1.0]


def test_retries_are_bounded_and_the_error_names_exchange_symbol_and_day():
    client, server, delays = make_client([], failures=[ccxt.ExchangeNotAvailable("down")] * 10, max_retries=3)

    with pytest.raises(MarketDataError) as info:
        client.fetch_day("BTCUSDT", DAY)

    assert len(server.requests) == 4 and delays == [1.0, 2.0, 4.0]
    assert "binance BTCUSDT 2024-05-01" in str(info.value) and "ExchangeNotAvailable" in str(info.value)


def test_exchange_errors_fail_fast_with_a_clear_message():
    recorded_error = '{"code":-1121,"msg":"Invalid symbol."}'
    client, server, delays = make_client([], failures=[recorded_error])

    with pytest.raises(MarketDataError) as info:
        client.fetch_day("BTCUSDT", DAY)

    assert len(server.requests) == 1 and delays == []
    message = str(info.value)
    assert "binance BTCUSDT 2024-05-01" in message and "BadSymbol" in message and "Invalid symbol" in message
    assert "not retried" in message


def test_a_day_that_has_not_ended_is_refused_without_a_request():
    client, server, _ = make_client(recorded_klines(DAY_MS, 600), now=dt.datetime(2024, 5, 1, 23, 59, 30, tzinfo=dt.timezone.utc))

    with pytest.raises(MarketDataError, match="has not ended yet"):
        client.fetch_day("BTCUSDT", DAY)
    assert server.requests == []


def test_a_day_without_bars_is_an_error_not_an_empty_frame():
    client, server, delays = make_client(recorded_klines(DAY_MS + BARS_PER_DAY * MINUTE_MS, 100), max_retries=1)
    with pytest.raises(MarketDataError, match="no bars"):
        client.fetch_day("BTCUSDT", DAY)
    assert len(server.requests) == 2 * 2 and delays == [1.0, 1.0]  # the empty window, then the probe from 00:00


@pytest.mark.parametrize("built_from_settings", [True, False])
def test_api_keys_never_reach_errors_repr_or_logs(caplog, built_from_settings):
    caplog.set_level(logging.DEBUG)
    echoed = ccxt.AuthenticationError(f"binance rejected X-MBX-APIKEY {API_KEY} signed with {SECRET}")
    if built_from_settings:  # keys that arrive through LEVIBOT_CCXT_OPTIONS
        client = CcxtOhlcvClient("binance", options={"apiKey": API_KEY, "secret": SECRET}, now=lambda: AFTER_DAY)
        client.exchange.set_markets(MARKETS)
        RecordedBinance(client.exchange, [], failures=[echoed])
        assert client.exchange.apiKey == API_KEY
        assert client.exchange.options["fetchMarkets"]["types"] == ["spot"]  # no futures exchangeInfo calls
        assert not client.exchange.options["fetchCurrencies"] and not client.exchange.options["fetchMargins"]
    else:
        client, _, _ = make_client([], failures=[echoed])

    with pytest.raises(MarketDataError) as info:
        client.fetch_day("BTCUSDT", DAY)

    text = str(info.value) + repr(client) + caplog.text
    assert "AuthenticationError" in str(info.value)
    assert API_KEY not in text and SECRET not in text
    assert info.value.__cause__ is None and info.value.__context__ is None


def test_an_unknown_symbol_or_exchange_is_a_clear_error():
    client, server, _ = make_client([])
    with pytest.raises(MarketDataError, match="no market with id 'DOGEUSDT'"):
        client.fetch_day("DOGEUSDT", DAY)
    assert server.requests == []
    with pytest.raises(ValueError, match="unknown ccxt exchange id 'binanse'"):
        CcxtOhlcvClient("binanse")


def test_exchange_symbol_uses_market_ids_then_quote_suffixes():
    markets = binance().markets
    assert exchange_symbol("BTCUSDT", markets) == "BTC/USDT"
    assert exchange_symbol("ETHBTC", markets) == "ETH/BTC"
    assert exchange_symbol("SOLFDUSD") == "SOL/FDUSD"
    assert exchange_symbol("BTCTUSD") == "BTC/TUSD"
    assert exchange_symbol("USDTTRY") == "USDT/TRY"
    with pytest.raises(SymbolError, match="cannot split symbol 'FOOBAR'"):
        exchange_symbol("FOOBAR")
    with pytest.raises(SymbolError):
        exchange_symbol("USDT")

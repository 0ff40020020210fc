"""Real ccxt against a local Binance stand-in over real HTTP: every fault a live exchange can serve.

ccxt is pointed at the stand-in purely through LEVIBOT_CCXT_OPTIONS-style config (urls, timeout).
The candles are the shared real Binance data of March/April 2023 when present, else synthetic rows
with the same shape (first bar 2023-03-16 22:15, 80 missing minutes on 2023-03-24 from 12:40,
last bar 2023-05-01 21:01). Sleeps are recorded, never slept.
"""
from __future__ import annotations

import datetime as dt
import json
import random
import time
from functools import lru_cache
from pathlib import Path

import ccxt
import dagster as dg
import pytest

from levibot_assets.core.ohlcv import BARS_PER_DAY, ExchangeBanned, MarketDataError, day_start, find_gaps
from levibot_assets.core.sources.exchange import CcxtOhlcvClient
from levibot_assets.settings import Settings, SettingsError
from levibot_assets_tests.exchange_standin import (
    EXCHANGE_INFO, KLINES, MINUTE_MS, BinanceStandIn, binance_error, raw, slow,
)

NOW = dt.datetime(2023, 5, 2, 3, 0, tzinfo=dt.timezone.utc)
FULL_DAY, HALT_DAY, FIRST_DAY, LAST_DAY = (dt.date(2023, 3, 20), dt.date(2023, 3, 24), dt.date(2023, 3, 16),
                                           dt.date(2023, 5, 1))
INTERNAL_ERROR = "Internal error; unable to process your request. Please try again."


def ms(when: str) -> int:
    return int(dt.datetime.fromisoformat(when).replace(tzinfo=dt.timezone.utc).timestamp() * 1000)


@lru_cache(maxsize=1)
def _load(path: Path) -> tuple:
    return tuple(json.loads(path.read_text()))


def _synthetic() -> tuple:
    halt = range(ms("2023-03-24 12:40"), ms("2023-03-24 14:00"))
    rows = []
    for i, open_ms in enumerate(range(ms("2023-03-16 22:15"), ms("2023-05-01 21:02"), MINUTE_MS)):
        if open_ms not in halt:
            close = 28_000 + (i * 7919 % 1000) / 100
            rows.append([open_ms, close - 1, close + 3, close - 4, close, 1 + i % 13 / 10])
    return tuple(rows)


@pytest.fixture
def candles(request) -> list[list]:
    try:
        return list(_load(request.getfixturevalue("shared_data_dir") / "BTC_USDT-1m.json"))
    except pytest.skip.Exception:
        return list(_synthetic())


@pytest.fixture
def standin(candles):
    with BinanceStandIn(candles) as server:
        yield server


def client_for(standin: BinanceStandIn, options=None, **kwargs):
    """A client built from options only; backoff without jitter (rand=0) unless a test passes one."""
    delays: list[float] = []
    kwargs = {"sleep": delays.append, "now": lambda: NOW, "rand": lambda: 0.0, **kwargs}
    return CcxtOhlcvClient("binance", options=options or standin.ccxt_options(), **kwargs), delays


def source_day(candles, date: dt.date) -> list[list]:
    start = int(day_start(date).timestamp() * 1000)
    return [row for row in candles if start <= row[0] < start + BARS_PER_DAY * MINUTE_MS]


def test_a_full_real_day_takes_two_planned_requests_and_keeps_the_source_closes(standin, candles):
    client, delays = client_for(standin)

    bars = client.fetch_day("BTCUSDT", FULL_DAY)

    start = ms("2023-03-20 00:00")
    assert standin.paths() == [EXCHANGE_INFO, KLINES, KLINES]
    assert [(q["startTime"], q["endTime"], q["limit"]) for q in standin.klines()] == [
        (str(start), str(start + 1000 * MINUTE_MS - 1), "1000"),
        (str(start + 1000 * MINUTE_MS), str(start + BARS_PER_DAY * MINUTE_MS - 1), "440"),
    ]
    assert len(bars) == BARS_PER_DAY and delays == []
    assert bars["close"].tolist() == [row[4] for row in source_day(candles, FULL_DAY)]


def test_a_real_halt_inside_the_day_is_kept_as_a_gap_without_retries(standin, candles):
    client, delays = client_for(standin)

    bars = client.fetch_day("BTCUSDT", HALT_DAY)

    assert len(standin.klines()) == 2 and delays == []
    assert len(bars) == BARS_PER_DAY - 80
    assert bars["close"].tolist() == [row[4] for row in source_day(candles, HALT_DAY)]
    assert [str(gap) for gap in find_gaps(bars, HALT_DAY)] == ["2023-03-24 12:40..13:59 (80 min)"]


def test_bars_that_start_late_in_the_day_are_kept_after_the_empty_window_was_retried(standin):
    client, delays = client_for(standin)

    bars = client.fetch_day("BTCUSDT", FIRST_DAY)  # the data begins at 22:15, as for a new listing

    assert len(bars) == 105 and bars["timestamp"].iloc[0] == day_start(FIRST_DAY) + dt.timedelta(hours=22, minutes=15)
    starts = [(q["startTime"], q["limit"]) for q in standin.klines()]
    # six empty answers, then the probe for the first bar from 00:00 on names 22:15: the next page starts there
    assert starts == [(str(ms("2023-03-16 00:00")), "1000")] * 6 + [(str(ms("2023-03-16 00:00")), "1"),
                                                                  (str(ms("2023-03-16 22:15")), "105")]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0]


def test_a_day_short_at_its_end_with_nothing_after_it_fails_loudly(standin):
    client, delays = client_for(standin, max_retries=2)

    with pytest.raises(MarketDataError) as info:
        client.fetch_day("BTCUSDT", LAST_DAY)  # the exchange has nothing after 21:01

    assert str(info.value).startswith(
        "binance BTCUSDT 2023-05-01: the day is short at its end: 1262 bars received, 21:02..23:59 (178 min) missing"
    )
    starts = [q["startTime"] for q in standin.klines()]
    assert starts == [str(ms(t)) for t in ["2023-05-01 00:00", "2023-05-01 16:40"] + ["2023-05-01 21:02"] * 6]
    assert [q["limit"] for q in standin.klines()][-3:] == ["1"] * 3  # the probe for any bar after 21:01
    assert delays == [1.0, 2.0] * 2


def test_a_hole_across_midnight_is_kept_because_bars_follow_the_day(candles):
    hole = range(ms("2023-03-20 23:40"), ms("2023-03-21 00:10"))
    with BinanceStandIn([row for row in candles if row[0] not in hole]) as standin:
        client, delays = client_for(standin)
        bars = client.fetch_day("BTCUSDT", FULL_DAY)

    assert len(bars) == BARS_PER_DAY - 20
    assert [str(gap) for gap in find_gaps(bars, FULL_DAY)] == ["2023-03-20 23:40..23:59 (20 min)"]
    assert standin.klines()[-1]["startTime"] == str(ms("2023-03-20 23:40")) and standin.klines()[-1]["limit"] == "1"
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0]  # the empty tail was retried before the probe


def test_a_bar_from_the_future_is_an_invalid_page(candles):
    hole = range(ms("2023-03-20 23:40"), ms("2023-03-21 00:10"))
    with BinanceStandIn([row for row in candles if row[0] not in hole]) as standin:
        now = dt.datetime(2023, 3, 21, 0, 5, tzinfo=dt.timezone.utc)  # the probe's first bar, 00:10, is ahead
        client, delays = client_for(standin, max_retries=1, now=lambda: now)
        with pytest.raises(MarketDataError) as info:
            client.fetch_day("BTCUSDT", FULL_DAY)

    assert delays == [1.0, 1.0]
    assert str(info.value).startswith("binance BTCUSDT 2023-03-20: gave up after 2 attempts: invalid page for "
                                      "2023-03-20 23:40..2023-03-21 23:39: open time 2023-03-21 00:10:00+00:00")


@pytest.mark.parametrize("fault, after, delay", [
    (raw(""), 1, 1.0),                                       # empty 200 body on the final page
    (raw("[]"), 1, 1.0),                                     # an empty JSON list where bars must exist
    (raw("<html><body>502 Bad Gateway</body></html>"), 0, 1.0),   # a proxy's page with status 200
    (raw('[[1679270400000,"28"'), 0, 1.0),                   # truncated JSON
    (binance_error(500, -1001, INTERNAL_ERROR), 0, 1.0),     # ccxt: OperationFailed, not a NetworkError
    (binance_error(400, -1001, INTERNAL_ERROR), 1, 1.0),
    (binance_error(408, -1007, "Timeout waiting for response from backend server."), 0, 1.0),
    (raw("<html>503 Service Unavailable</html>", status=503), 1, 1.0),
    (binance_error(429, -1003, "Too many requests; current limit is 6000 request weight per 1 MINUTE.",
                   **{"Retry-After": "30"}), 0, 30.0),
], ids=["empty-body", "empty-list", "html-200", "truncated-json", "-1001-http500", "-1001-http400", "-1007-http408",
        "http503", "429-retry-after-30"])
def test_transient_faults_are_retried_and_the_day_is_complete(standin, candles, fault, after, delay):
    standin.fail(KLINES, fault, after=after)
    client, delays = client_for(standin)

    bars = client.fetch_day("BTCUSDT", FULL_DAY)

    assert len(standin.klines()) == 3 and delays == [delay]
    assert bars["close"].tolist() == [row[4] for row in source_day(candles, FULL_DAY)]


def test_a_page_cut_short_is_continued_from_its_last_bar(standin, candles):
    standin.truncate(300, after=1)
    client, delays = client_for(standin)

    bars = client.fetch_day("BTCUSDT", FULL_DAY)

    assert [q["startTime"] for q in standin.klines()] == [str(ms(t)) for t in ("2023-03-20 00:00", "2023-03-20 16:40",
                                                                             "2023-03-20 21:40")]
    assert delays == [] and bars["close"].tolist() == [row[4] for row in source_day(candles, FULL_DAY)]


def test_a_response_slower_than_the_ccxt_timeout_is_retried(standin):
    standin.fail(KLINES, slow(1.5))
    client, delays = client_for(standin, standin.ccxt_options(timeout=300))

    assert len(client.fetch_day("BTCUSDT", FULL_DAY)) == BARS_PER_DAY
    assert len(standin.klines()) == 3 and delays == [1.0]


def test_retry_after_longer_than_the_deadline_gives_up_at_once(standin):
    standin.fail(KLINES, binance_error(429, -1003, "Too many requests.", **{"retry-after": "3600"}))
    client, delays = client_for(standin)

    expected = "gave up after 1 attempts: waiting 3600 s more would pass the 600 s deadline"
    with pytest.raises(MarketDataError, match=expected):
        client.fetch_day("BTCUSDT", FULL_DAY)
    assert len(standin.klines()) == 1 and delays == []


def test_retries_stop_at_the_overall_deadline(standin):
    standin.fail(KLINES, binance_error(500, -1001, INTERNAL_ERROR), times=50)
    clock = [NOW]
    delays: list[float] = []

    def sleep(seconds: float) -> None:
        delays.append(seconds)
        clock[0] += dt.timedelta(seconds=seconds)

    client, _ = client_for(standin, max_retries=20, deadline_seconds=20, sleep=sleep, now=lambda: clock[0])

    with pytest.raises(MarketDataError) as info:
        client.fetch_day("BTCUSDT", FULL_DAY)

    assert delays == [1.0, 2.0, 4.0, 8.0] and len(standin.klines()) == 5
    assert "gave up after 5 attempts: waiting 16 s more would pass the 20 s deadline" in str(info.value)
    assert "OperationFailed" in str(info.value) and INTERNAL_ERROR in str(info.value)


def test_backoff_has_bounded_jitter(standin):
    standin.fail(KLINES, binance_error(500, -1001, INTERNAL_ERROR), times=3)
    client, delays = client_for(standin, rand=random.Random(7).random)

    assert len(client.fetch_day("BTCUSDT", FULL_DAY)) == BARS_PER_DAY
    assert len(delays) == 3 and len({d / 2**i for i, d in enumerate(delays)}) == 3
    assert all(2**i <= d < 1.5 * 2**i for i, d in enumerate(delays))


def test_persistent_internal_errors_give_up_naming_the_cause(standin):
    standin.fail(KLINES, binance_error(500, -1001, INTERNAL_ERROR), times=10)
    client, delays = client_for(standin, max_retries=2)

    with pytest.raises(MarketDataError) as info:
        client.fetch_day("BTCUSDT", FULL_DAY)

    assert len(standin.klines()) == 3 and delays == [1.0, 2.0]
    assert str(info.value).startswith("binance BTCUSDT 2023-03-20: gave up after 3 attempts: OperationFailed")


@pytest.mark.parametrize("fault, until", [
    (binance_error(418, -1003, "Way too much request weight used; IP banned until 1682996400000. Please use the "
                               "websocket for live updates to avoid bans."), "2023-05-02 03:00:00 UTC"),
    (raw("I'm a teapot", status=418), "a time it did not say"),
], ids=["banned-until", "bare-418"])
def test_an_ip_ban_stops_at_once_saying_until_when(standin, fault, until):
    standin.fail(KLINES, fault)
    client, delays = client_for(standin)

    with pytest.raises(MarketDataError) as info:
        client.fetch_day("BTCUSDT", FULL_DAY)

    assert len(standin.klines()) == 1 and delays == []
    assert "binance BTCUSDT 2023-03-20: the exchange has banned this IP" in str(info.value)
    assert until in str(info.value)


def test_a_ban_without_a_time_in_its_body_is_dated_from_retry_after(standin):
    standin.fail(KLINES, binance_error(418, -1003, "Way too much request weight used.", **{"Retry-After": "7200"}))
    client, delays = client_for(standin)

    with pytest.raises(MarketDataError, match="banned this IP until 2023-05-02 05:00:00 UTC"):
        client.fetch_day("BTCUSDT", FULL_DAY)
    assert len(standin.klines()) == 1 and delays == []


@pytest.mark.parametrize("fault, kind", [
    (binance_error(400, -1121, "Invalid symbol."), "BadSymbol"),
    (binance_error(401, -2015, "Invalid API-key, IP, or permissions for action."), "AuthenticationError"),
    (raw("<html>404 Not Found</html>", status=404), "ExchangeNotAvailable"),  # e.g. a wrong URL in the options
    (raw("<html>451 restricted location</html>", status=451), "ExchangeNotAvailable"),
], ids=["bad-symbol", "auth", "http404", "http451"])
def test_refusals_fail_fast_with_a_clear_message(standin, fault, kind):
    standin.fail(KLINES, fault)
    client, delays = client_for(standin)

    with pytest.raises(MarketDataError) as info:
        client.fetch_day("BTCUSDT", FULL_DAY)

    assert len(standin.klines()) == 1 and delays == []
    assert str(info.value).startswith(
        f"binance BTCUSDT 2023-03-20: the exchange refused the request (not retried): {kind}"
    )


def test_keys_in_the_options_do_not_make_market_loading_private(standin, candles):
    keyed = standin.ccxt_options(apiKey="key-7c1d", secret="secret-55e0")
    with pytest.raises(ccxt.AuthenticationError):  # plain ccxt with keys asks the wallet API, which refuses
        ccxt.binance(keyed).load_markets()
    assert "/sapi/v1/capital/config/getall" in standin.paths()
    standin.requests.clear()

    client, delays = client_for(standin, keyed)
    bars = client.fetch_day("BTCUSDT", FULL_DAY)

    assert standin.paths() == [EXCHANGE_INFO, KLINES, KLINES] and delays == []
    assert bars["close"].tolist() == [row[4] for row in source_day(candles, FULL_DAY)]


def test_the_resource_downloads_through_ccxt_options_without_keys(standin, candles, levibot_env):
    from levibot_assets.core.sources.exchange import ccxt_client
    from levibot_assets.resources.market_data import MarketDataResource

    options = json.dumps(standin.ccxt_options())
    levibot_env(source="ccxt", ccxt_options=options)
    ccxt_client.cache_clear()
    try:
        bars = MarketDataResource(source="ccxt", ccxt_options=options).fetch_day("BTCUSDT", FULL_DAY)
        assert not ccxt_client("binance", options).exchange.apiKey
    finally:
        ccxt_client.cache_clear()

    assert standin.paths() == [EXCHANGE_INFO, KLINES, KLINES]
    assert all("X-MBX-APIKEY" not in {name.upper() for name in r.headers} for r in standin.requests)
    assert bars["close"].tolist() == [row[4] for row in source_day(candles, FULL_DAY)]


@pytest.mark.parametrize("value, problem", [
    ('{"timeout": 2000,', "is not valid JSON"),
    ('["urls"]', "must be a JSON object, not list"),
])
def test_ccxt_options_must_be_a_json_object(value, problem):
    with pytest.raises(SettingsError, match=f"LEVIBOT_CCXT_OPTIONS {problem}"):
        Settings.from_env({"LEVIBOT_CCXT_OPTIONS": value})
    options = Settings.from_env({"LEVIBOT_CCXT_OPTIONS": '{"timeout": 2000, "options": {"x": 1}}'}).ccxt_options
    assert options == {"timeout": 2000, "options": {"x": 1}}
    assert "2000" not in repr(Settings(ccxt_options=options))  # proxies and URLs can hold credentials


# --- a day is complete or it fails: every page, every fault, through all its retries -------------

PAGES = {  # how the faulty page is reached, and the window it asks for
    "first": (lambda standin: None, "2023-03-20 00:00..2023-03-20 16:39"),
    "middle": (lambda standin: standin.truncate(300), "2023-03-20 05:00..2023-03-20 21:39"),  # 1st page cut: 3 pages
    "last": (lambda standin: standin.fail(KLINES, lambda request: None), "2023-03-20 16:40..2023-03-20 23:59"),
}
FAULTS = {  # how the page fails, and the cause the error names
    "empty": (lambda standin, times: standin.fail(KLINES, raw("[]"), times), "empty"),
    "garbled": (lambda standin, times: standin.fail(KLINES, raw("<html>502 Bad Gateway</html>"), times), "unreadable"),
    "cut": (lambda standin, times: standin.cut(times), "NetworkError"),
    "slow": (lambda standin, times: standin.fail(KLINES, slow(1.5), times), "RequestTimeout"),
}


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("page", PAGES)
def test_a_page_that_fails_all_its_retries_fails_the_day_naming_its_window_and_cause(standin, page, fault):
    reach, window = PAGES[page]
    queue, cause = FAULTS[fault]
    reach(standin)
    queue(standin, 6)  # the first try and its 5 retries
    client, delays = client_for(standin, standin.ccxt_options(timeout=1000))

    with pytest.raises(MarketDataError) as info:
        client.fetch_day("BTCUSDT", FULL_DAY)

    message = str(info.value)
    assert message.startswith("binance BTCUSDT 2023-03-20: ") and window in message and cause in message
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0]


@pytest.mark.parametrize("fault", ["empty", "garbled", "cut"])
@pytest.mark.parametrize("page", PAGES)
def test_a_page_that_never_recovers_fails_the_day_naming_where_the_data_stops(standin, page, fault):
    reach, window = PAGES[page]
    reach(standin)
    FAULTS[fault][0](standin, 100)  # the probe for the first bar after an empty page fails too
    client, _ = client_for(standin)

    with pytest.raises(MarketDataError) as info:
        client.fetch_day("BTCUSDT", FULL_DAY)

    assert window[11:16] in str(info.value)  # the page's first minute, where the bars stop


def _full_day_through_dagster(standin, levibot_env, monkeypatch):
    """raw_ohlcv + features of FULL_DAY|BTCUSDT fetched from `standin` through Dagster: (result,
    the first STEP_FAILURE event or None, the settings)."""
    from levibot_assets_tests.graph import features, raw_ohlcv
    from levibot_assets.definitions import build_resources
    from levibot_assets.partitions import partition_key
    from levibot_assets.core.sources import exchange as exchange_source

    client, _ = client_for(standin)
    monkeypatch.setattr(exchange_source, "ccxt_client", lambda exchange_id, options=None: client)
    settings = levibot_env(source="ccxt")
    with dg.instance_for_test() as instance:
        result = dg.materialize([raw_ohlcv, features], resources=build_resources(settings), instance=instance,
                                partition_key=partition_key(FULL_DAY, "BTCUSDT"), raise_on_error=False)
    failure = next((e for e in result.all_events if e.event_type_value == "STEP_FAILURE"), None)
    return result, failure, settings


def test_a_short_day_is_not_stored_and_nothing_downstream_runs(standin, levibot_env, monkeypatch):
    from levibot_assets.core.layout import DataLayout

    standin.fail(KLINES, raw("[]"), times=6, after=1)  # the last page of the day comes back empty
    result, failure, settings = _full_day_through_dagster(standin, levibot_env, monkeypatch)

    assert not result.success
    assert failure.step_key == "raw_ohlcv"
    assert "the page for 2023-03-20 16:40..2023-03-20 23:59 came back empty 6 times" in failure.event_specific_data.error.message
    assert result.get_asset_materialization_events() == []
    layout = DataLayout(settings.data_dir)
    assert not layout.table("raw_ohlcv", FULL_DAY, "BTCUSDT").exists()
    assert not layout.table("features", FULL_DAY, "BTCUSDT").exists()


# --- bans and deadlines --------------------------------------------------------------------------


def _ban_until(when: dt.datetime):
    until_ms = int(when.timestamp() * 1000)
    return binance_error(418, -1003, f"Way too much request weight used; IP banned until {until_ms}.")


def test_a_ban_is_remembered_later_days_send_no_request_until_it_ends(standin):
    standin.fail(KLINES, _ban_until(NOW + dt.timedelta(hours=1)), times=10)
    clock = [NOW]
    client, delays = client_for(standin, now=lambda: clock[0])

    with pytest.raises(ExchangeBanned, match="banned this IP until 2023-05-02 04:00:00 UTC"):
        client.fetch_day("BTCUSDT", FULL_DAY)
    with pytest.raises(ExchangeBanned, match="2023-03-24: not requested: the exchange has banned this IP until 2023-05-02 04:00"):
        client.fetch_day("ETHUSDT", HALT_DAY)
    assert len(standin.klines()) == 1 and delays == []

    clock[0] = NOW + dt.timedelta(hours=1, minutes=1)  # the ban is over: the next day asks again
    with pytest.raises(ExchangeBanned):
        client.fetch_day("BTCUSDT", HALT_DAY)
    assert len(standin.klines()) == 2


def test_a_ban_in_a_year_long_range_run_sends_one_request_and_stops_the_run(standin, levibot_env):
    from levibot_assets_tests.graph import raw_ohlcv
    from levibot_assets.definitions import build_resources
    from levibot_assets.partitions import range_tags
    from levibot_assets.core.sources.exchange import ccxt_client

    until = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) + dt.timedelta(hours=2)
    standin.fail(KLINES, _ban_until(until), times=1000)
    settings = levibot_env(source="ccxt", ccxt_options=json.dumps(standin.ccxt_options()))
    start = dt.date(2023, 3, 1)
    ccxt_client.cache_clear()
    try:
        with dg.instance_for_test() as instance:
            result = dg.materialize([raw_ohlcv], resources=build_resources(settings), instance=instance,
                                    tags=range_tags(start, start + dt.timedelta(days=364), "BTCUSDT"),
                                    raise_on_error=False)
    finally:
        ccxt_client.cache_clear()

    assert standin.paths() == [EXCHANGE_INFO, KLINES]  # counted by the server: one request to the banned endpoint
    assert not result.success
    message = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE").event_specific_data.error.message
    assert f"banned this IP until {until:%Y-%m-%d %H:%M:%S} UTC" in message
    assert "1 of 365 partition(s) failed" in message and "364 later partition(s) were not tried" in message
    assert result.get_asset_materialization_events() == []


def _abandoned(standin: BinanceStandIn) -> list:
    """The answers the client left, once the server has noticed (its next write fails)."""
    for _ in range(200):
        if standin.abandoned:
            break
        time.sleep(0.05)
    return standin.abandoned


def test_a_dripping_answer_is_cut_at_the_requests_total_deadline(standin):
    standin.drip(0.05)  # 64 bytes every 50 ms: a 1000-bar page would take about 90 s
    client, delays = client_for(standin, standin.ccxt_options(timeout=1000), max_retries=0)

    with pytest.raises(MarketDataError) as info:
        client.fetch_day("BTCUSDT", FULL_DAY)

    assert "gave up after 1 attempts: RequestTimeout" in str(info.value)
    assert "the answer was not complete within its 1 s total deadline" in str(info.value)
    assert "(page 2023-03-20 00:00..2023-03-20 16:39)" in str(info.value)
    [(request, sent, size)] = _abandoned(standin)
    assert request.path == KLINES and sent < size


def test_a_dripping_server_cannot_hold_a_day_past_the_days_deadline(standin):
    standin.drip(0.05, times=100)
    client, delays = client_for(standin, deadline_seconds=1, now=lambda: dt.datetime.now(dt.timezone.utc))

    with pytest.raises(MarketDataError) as info:
        client.fetch_day("BTCUSDT", FULL_DAY)

    assert "gave up after 1 attempts: waiting 1 s more would pass the 1 s deadline: RequestTimeout" in str(info.value)
    assert "not complete within its 1 s total deadline" in str(info.value)
    assert len(standin.klines()) == 1 and delays == []


@pytest.mark.parametrize("fault, cause", [
    ("spike", "check no_price_spike failed: 1 bars jump more than 1.5x from their neighbours and back: 11:40"),
    ("conflicting-minute", "open time 2023-03-20 11:40:00+00:00 appears twice: ["),
])
def test_a_spike_or_a_conflicting_minute_from_the_exchange_never_reaches_features(candles, levibot_env, monkeypatch,
                                                                                  fault, cause):
    from levibot_assets.core.layout import DataLayout

    i = next(n for n, row in enumerate(candles) if row[0] == ms("2023-03-20 11:40"))
    bad = [candles[i][0], candles[i][1], candles[i][2] * 1000, candles[i][3], candles[i][4] * 1000, candles[i][5]]
    if fault == "spike":
        candles[i] = bad
    else:
        candles.insert(i + 1, bad)
    with BinanceStandIn(candles) as standin:
        result, failure, settings = _full_day_through_dagster(standin, levibot_env, monkeypatch)

    assert not result.success
    assert failure.step_key == "raw_ohlcv" and cause in failure.event_specific_data.error.message
    assert [e.step_key for e in result.all_events if e.event_type_value == "STEP_START"] == ["raw_ohlcv"]
    layout = DataLayout(settings.data_dir)
    assert not layout.table("raw_ohlcv", FULL_DAY, "BTCUSDT").exists()
    assert not layout.table("features", FULL_DAY, "BTCUSDT").exists()

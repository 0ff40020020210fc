"""One complete UTC day of 1-minute candles from a live exchange through ccxt.

Why it is this careful: ccxt alone would let a short day through. It turns an empty or unparseable
200 body into [] without raising, raises Binance's "Internal error ... Please try again" (-1001) as
a non-network error, and ignores Retry-After. A short day written to disk poisons every model
trained on it, so:

- Pages are planned from the day's time range: each asks for the window [cursor, cursor + 1000
  min) clipped to the day, with explicit since, until (endTime) and limit, so a full day takes 2
  requests at Binance's limit of 1000. The next window starts after the last bar received, so a
  page the exchange cuts short is continued rather than lost.
- Every page is validated: rows of 6 finite, non-negative numbers, open times on whole minutes,
  strictly increasing (a minute twice is named with both rows), inside the requested window and
  not in the future. An invalid page, an unreadable one and an empty one (the day is over, so bars
  should exist) are retried like a transient error.
- Transient means what the exchange means, whichever ccxt class it arrives as: HTTP 5xx, 408 and
  429, ccxt's NetworkError family, Binance codes -1001 (internal error), -1003 (too many requests),
  -1007 (backend timeout) and -1008 (overloaded), and messages saying "try again". Retries back
  off exponentially with jitter, wait at least what Retry-After asks (in seconds), and stop at
  `max_retries` per request or at the overall deadline of one day's download. Every request has a
  total deadline too (ccxt's `timeout`, never past the day's deadline): requests' timeout bounds
  each read only, so a server dripping its answer could otherwise hold a day for ever.
- An IP ban (HTTP 418, or "banned until <ms>") stops at once, saying until when: retrying extends
  it. The client remembers the ban and refuses every later day without a request until it ends
  (ExchangeBanned, which also stops a range run).
- Other 4xx answers and other ccxt errors (bad symbol, authentication) fail at once.
- Holes: a day is complete or it fails. Minutes missing before bars that do exist inside a page
  (Binance's 80-minute halt on 2023-03-24) are the exchange's answer and kept; checks downstream
  report them. A page that stays unreadable through its retries fails the day, naming its window.
  A window that stays empty (a well-formed `[]`) is believed only if the exchange, asked for the
  first bar from the window's start on, names one after the window (a listing at 22:15, a halt
  across midnight); a bar inside the window means the empty answers were faults, and no bar at all
  means the day's data ends early: both fail the day, naming the window, and nothing is returned.

Candles are public, so the ccxt instance built here gets no API keys, and its market loading is kept
to public endpoints (Binance: spot exchangeInfo only, no wallet or margin calls) even when keys
arrive through the options. Any key an instance does hold never appears in repr, logs or errors.
"""
from __future__ import annotations

import datetime as dt
import itertools
import json
import math
import os
import random
import re
import socket
import threading
import time
from functools import lru_cache
from typing import Any, Callable, Mapping

import ccxt
import pandas as pd
import requests

from levibot_assets.core.ohlcv import ExchangeBanned, MarketDataError, day_start, frame_from_rows
from levibot_assets.core.redaction import redact_text
from levibot_assets.core.symbols import SymbolError, exchange_symbol

TIMEFRAME = "1m"
PAGE_LIMIT = 1000
_MINUTE_MS = 60_000
_DAY_MS = 86_400_000
TRANSIENT_CODES = frozenset({-1001, -1003, -1007, -1008})  # Binance's "try again later" family
_TRANSIENT_WORDS = ("try again", "too many requests", "timeout", "overloaded")
_CODE = re.compile(r'"code"\s*:\s*(-?\d+)')
_BANNED_UNTIL = re.compile(r"banned until (\d{13})", re.IGNORECASE)
_JITTER = 0.5  # each backoff is stretched by a random 0..50 % so that parallel runs spread out


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class _BadPage(Exception):
    """A page answered with 200 that cannot be trusted; retried, and `empty` ones may stay empty."""

    def __init__(self, reason: str, empty: bool = False):
        super().__init__(reason)
        self.empty = empty


class _AnswerTooSlow(requests.exceptions.Timeout):
    """The whole answer did not arrive by the request's total deadline (ccxt raises RequestTimeout from it)."""


class _TotalDeadline(requests.adapters.HTTPAdapter):
    """Cuts an answer that has not fully arrived by `deadline` (time.monotonic()).

    requests' timeout bounds each read, not the answer: a server that drips its answer, each piece
    inside the timeout, holds the request as long as it likes. The body is read here under a timer
    that shuts the socket down at the deadline; connecting and the headers get what is left as timeout.
    """

    deadline = math.inf
    seconds = math.inf  # the total allowed, for the message

    def send(self, request, stream=False, timeout=None, **kwargs):
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise _AnswerTooSlow(f"no time left for the request within its {self.seconds:.0f} s total deadline")
        connect, read = timeout if isinstance(timeout, tuple) else (timeout, timeout)
        bounded = tuple(left if t is None else min(t, left) for t in (connect, read))
        response = super().send(request, stream=True, timeout=bounded, **kwargs)
        try:  # our own handle on the body's socket, so that the timer can never reach another one
            sock = socket.socket(fileno=os.dup(response.raw.fileno()))
        except (OSError, ValueError):  # no body left to read
            return response
        timer = threading.Timer(max(0.0, self.deadline - time.monotonic()), _shut, (sock,))
        timer.start()
        try:
            response.content  # read the whole body now, while the timer runs
        except Exception:  # a shut socket surfaces as whatever the TLS/HTTP layer makes of it
            if time.monotonic() >= self.deadline:
                raise _AnswerTooSlow(f"the answer was not complete within its {self.seconds:.0f} s total deadline") from None
            raise
        finally:
            timer.cancel()
            sock.close()
        return response


def _shut(sock: socket.socket) -> None:
    """Wake the read blocked on `sock` (closing a descriptor does not)."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # the answer ended meanwhile
        pass


class CcxtOhlcvClient:
    """Fetches days of 1-minute bars from one ccxt exchange's public endpoints."""

    def __init__(
        self,
        exchange_id: str = "binance",
        options: Mapping[str, Any] | None = None,
        exchange: ccxt.Exchange | None = None,
        max_retries: int = 5,
        backoff_seconds: float = 1.0,
        deadline_seconds: float = 600.0,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], dt.datetime] = _utc_now,
        rand: Callable[[], float] = random.random,
    ):
        if max_retries < 0 or backoff_seconds < 0 or deadline_seconds <= 0:
            raise ValueError("max_retries and backoff_seconds must not be negative, deadline_seconds must be positive")
        self.exchange = exchange if exchange is not None else _make_exchange(exchange_id, options or {})
        self.exchange.enableRateLimit = True
        self._request_deadline = _TotalDeadline()
        if self.exchange.session is not None:
            for scheme in ("http://", "https://"):
                self.exchange.session.mount(scheme, self._request_deadline)
        self._ban: tuple[str, pd.Timestamp | None] | None = None  # (why, until; None: unsaid, so for this process)
        credentials = (getattr(self.exchange, name, None) for name in self.exchange.requiredCredentials)
        self._secrets = tuple(value for value in credentials if isinstance(value, str) and value)
        self.exchange_id = self.exchange.id
        self.max_retries = max_retries
        self.backoff_seconds = backoff_seconds
        self.deadline = dt.timedelta(seconds=deadline_seconds)
        self._sleep = sleep
        self._now = now
        self._rand = rand
        self._status: int | None = None
        seen = self.exchange.on_rest_response

        def on_rest_response(code, *args):  # ccxt's hook for every HTTP answer: keep its status
            self._status = int(code)
            return seen(code, *args)

        self.exchange.on_rest_response = on_rest_response

    def __repr__(self) -> str:
        return f"CcxtOhlcvClient(exchange_id={self.exchange_id!r})"

    def fetch_day(self, symbol: str, date: dt.date) -> pd.DataFrame:
        """The bars of `date` (UTC) in the core.ohlcv contract; missing minutes stay missing."""
        what = f"{self.exchange_id} {symbol} {date}"
        start = day_start(date)
        end = start + pd.Timedelta(days=1)
        now = self._now()
        if now.tzinfo is None:
            raise ValueError("now() must return a timezone-aware datetime")
        if pd.Timestamp(now) < end:
            raise MarketDataError(
                f"{what}: the day has not ended yet (it ends {end:%Y-%m-%d %H:%M} UTC, now is "
                f"{pd.Timestamp(now).tz_convert('UTC'):%Y-%m-%d %H:%M} UTC); only complete past days can be fetched"
            )
        if self._ban is not None:
            why, until = self._ban
            if until is None or pd.Timestamp(now) < until:
                raise ExchangeBanned(f"{what}: not requested: {why}")
        deadline = now + self.deadline
        if self.exchange.markets is None:
            self._call(what, deadline, self.exchange.load_markets)
        try:
            market = exchange_symbol(symbol, self.exchange.markets)
        except SymbolError as exc:
            raise MarketDataError(f"{what}: {exc}") from None

        now_ms = int(now.timestamp() * 1000)
        start_ms = int(start.timestamp() * 1000)
        end_ms = start_ms + _DAY_MS
        rows: list[list] = []
        cursor = start_ms
        while cursor < end_ms:
            window_end = min(cursor + PAGE_LIMIT * _MINUTE_MS, end_ms)
            page = self._page(what, deadline, market, cursor, window_end, now_ms)
            if page:
                rows.extend(page)
                cursor = int(page[-1][0]) + _MINUTE_MS
            else:
                cursor = self._after_empty_window(what, deadline, market, cursor, window_end, now_ms, len(rows))
        if not rows:
            raise MarketDataError(f"{what}: the exchange returned no bars for this day (not listed then?)")
        return frame_from_rows(rows, unit="ms")

    def _after_empty_window(self, what: str, deadline: dt.datetime, market: str, since: int, until: int,
                            now_ms: int, received: int) -> int:
        """Where the bars resume after [since, until) stayed empty through its retries.

        Empty answers are believed only when the exchange confirms them: asked for the first bar
        from `since` on, it must name one after the window. A bar inside the window means the empty
        answers were faults; none within a day means the data ends here. Both fail the day.
        """
        probe = self._page(what, deadline, market, since, since + _DAY_MS, now_ms, limit=1)
        if not probe:
            if not received:
                raise MarketDataError(f"{what}: the exchange returned no bars for this day (not listed then?): the "
                                      f"page for {_window(since, until)} came back empty and no bar follows it")
            first = pd.Timestamp(since, unit="ms", tz="UTC")
            raise MarketDataError(
                f"{what}: the day is short at its end: {received} bars received, {first:%H:%M}..23:59 "
                f"({(_DAY_MS - since % _DAY_MS) // _MINUTE_MS} min) missing although the day is over, and the "
                "exchange has no bars after it either; the day is not written"
            )
        resumes = int(probe[0][0])
        if resumes < until:
            raise MarketDataError(
                f"{what}: the page for {_window(since, until)} came back empty {self.max_retries + 1} times, yet the "
                f"exchange has a bar at {pd.Timestamp(resumes, unit='ms', tz='UTC'):%Y-%m-%d %H:%M} in it; the day "
                "is not written"
            )
        return resumes

    def _page(self, what: str, deadline: dt.datetime, market: str, since: int, until: int, now_ms: int,
              limit: int | None = None) -> list[list]:
        """The validated bars opening in [since, until); [] if the window stays empty through the retries."""

        def fetch() -> list[list]:
            count = limit or (until - since) // _MINUTE_MS
            page = self.exchange.fetch_ohlcv(market, TIMEFRAME, since, count, {"until": until - 1})
            if not page:
                body = str(self.exchange.last_http_response or "")
                if body.strip() == "[]":  # ccxt makes [] of an unreadable body too: only this one means "no bars"
                    raise _BadPage(f"empty page for {_window(since, until)}", empty=True)
                raise _BadPage(f"unreadable page for {_window(since, until)} (body {body[:80]!r})")
            problem = _page_problem(page, since, min(until, now_ms + 1))
            if problem:
                raise _BadPage(f"invalid page for {_window(since, until)}: {problem}")
            return page

        return self._call(what, deadline, fetch, f" (page {_window(since, until)})")

    def _call(self, what: str, deadline: dt.datetime, fn: Callable[[], Any], page: str = "") -> Any:
        """Run one exchange request, retrying what the exchange means as transient.

        Errors are re-raised without their ccxt cause attached: a cause could carry request headers.
        `page` names the request's window in messages of errors that do not (ccxt's name a URL).
        """
        for attempt in itertools.count(1):
            self._status = None
            self.exchange.last_response_headers = None
            self.exchange.last_http_response = None
            total = min(self.exchange.timeout / 1000, (deadline - self._now()).total_seconds())
            self._request_deadline.seconds = total
            self._request_deadline.deadline = time.monotonic() + total
            try:
                return fn()
            except _BadPage as exc:
                if exc.empty and attempt > self.max_retries:
                    return []
                failure, refusal, ban = str(exc), None, None
            except ccxt.BaseError as exc:
                failure = self._describe(exc) + page
                ban = self._banned(failure)
                refusal = None if ban else self._refusal(exc, failure)
            if ban:  # raised here, outside `except`, so that no ccxt exception is attached as context
                raise ExchangeBanned(f"{what}: {ban}")
            if refusal:
                raise MarketDataError(f"{what}: {refusal}")
            if attempt > self.max_retries:
                raise MarketDataError(f"{what}: gave up after {attempt} attempts: {failure}")
            delay = self.backoff_seconds * 2 ** (attempt - 1) * (1 + _JITTER * self._rand())
            delay = max(delay, self._retry_after() or 0.0)
            if self._now() + dt.timedelta(seconds=delay) > deadline:
                raise MarketDataError(
                    f"{what}: gave up after {attempt} attempts: waiting {delay:.0f} s more would pass the "
                    f"{self.deadline.total_seconds():.0f} s deadline: {failure}"
                )
            self._sleep(delay)

    def _banned(self, text: str) -> str | None:
        """Why no more requests may be sent (an IP ban), remembered until it ends; None without a ban."""
        banned = _BANNED_UNTIL.search(text)
        if not (banned or self._status == 418):
            return None
        if banned:
            until = pd.Timestamp(int(banned.group(1)), unit="ms", tz="UTC")
        elif self._retry_after() is not None:
            until = pd.Timestamp(self._now()).tz_convert("UTC") + pd.Timedelta(seconds=self._retry_after())
        else:
            until = None
        why = (f"the exchange has banned this IP (HTTP 418) for a time it did not say; stopped at once: {text}"
               if until is None else
               f"the exchange has banned this IP until {until:%Y-%m-%d %H:%M:%S} UTC; stopped at once, since "
               f"more requests extend a ban (slow down, or use another IP): {text}")
        self._ban = (why, until)
        return why

    def _refusal(self, exc: ccxt.BaseError, text: str) -> str | None:
        """Why the error must not be retried, or None when the exchange means it as transient."""
        code = _CODE.search(text)
        if (code and int(code.group(1)) in TRANSIENT_CODES) or any(w in text.lower() for w in _TRANSIENT_WORDS):
            return None
        if self._status is not None and 400 <= self._status < 500:
            transient = self._status in (408, 429)
        else:
            transient = isinstance(exc, ccxt.NetworkError) or (self._status or 0) >= 500
        return None if transient else f"the exchange refused the request (not retried): {text}"

    def _retry_after(self) -> float | None:
        """Retry-After of the last answer, in seconds (what Binance sends); None without one."""
        for name, value in (self.exchange.last_response_headers or {}).items():
            if name.lower() == "retry-after":
                try:
                    return max(0.0, float(value))
                except ValueError:
                    return None
        return None

    def _describe(self, exc: BaseException) -> str:
        """The error as text, without keys or URL credentials (ccxt quotes the URL it failed on)."""
        text = redact_text(f"{type(exc).__name__}: {exc}")
        if isinstance(exc.__cause__, _AnswerTooSlow):
            text += f" ({exc.__cause__})"
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def _window(since: int, until: int) -> str:
    first, last = (pd.Timestamp(ms, unit="ms", tz="UTC") for ms in (since, until - _MINUTE_MS))
    return f"{first:%Y-%m-%d %H:%M}..{last:%Y-%m-%d %H:%M}"


def _page_problem(page: Any, since: int, until: int) -> str | None:
    """Why `page` is not a run of 1-minute bars opening in [since, until), or None if it is."""
    if not isinstance(page, list):
        return f"not a list of rows but {type(page).__name__}"
    previous, previous_row = since - _MINUTE_MS, None
    for row in page:
        if not (isinstance(row, (list, tuple)) and len(row) == 6 and all(_number(v) for v in row)):
            return f"row {row!r} is not 6 finite non-negative numbers"
        open_ms = row[0]
        if open_ms != int(open_ms) or int(open_ms) % _MINUTE_MS:
            return f"open time {open_ms} is not on a whole minute"
        when = pd.Timestamp(int(open_ms), unit="ms", tz="UTC")
        if open_ms == previous:
            return f"open time {when} appears twice: {previous_row!r} and {row!r}"
        if not previous < open_ms < until:
            return f"open time {when} is out of order, outside the window or in the future"
        previous, previous_row = open_ms, row
    return None


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def _make_exchange(exchange_id: str, options: Mapping[str, Any]) -> ccxt.Exchange:
    if exchange_id not in ccxt.exchanges:
        raise ValueError(
            f"unknown ccxt exchange id {exchange_id!r} (LEVIBOT_EXCHANGE); valid ids are lower case, "
            f"e.g. binance, kraken, coinbase; all {len(ccxt.exchanges)}: see ccxt.exchanges"
        )
    exchange = getattr(ccxt, exchange_id)({"enableRateLimit": True, **options})
    # The pipeline trades spot: loading only spot markets saves requests and avoids failing on
    # derivatives endpoints that some regions block (Binance answers them with HTTP 451 from the US).
    fetch_markets = exchange.options.get("fetchMarkets")
    if isinstance(fetch_markets, dict) and "spot" in fetch_markets.get("types", ()):
        fetch_markets["types"] = ["spot"]
    # Private endpoints that market loading calls when a key is present (Binance: wallet coins,
    # margin pairs); a refusal there must not stop a public candle download.
    for name in ("fetchCurrencies", "fetchMargins"):
        if name in exchange.options:
            exchange.options[name] = False
    return exchange


@lru_cache(maxsize=8)
def ccxt_client(exchange_id: str, options: str | None = None) -> CcxtOhlcvClient:
    """One client per exchange, options and process: markets are loaded once, the rate limiter is
    shared. `options`: the JSON object of LEVIBOT_CCXT_OPTIONS (a string, so it can be a cache key)."""
    return CcxtOhlcvClient(exchange_id=exchange_id, options=json.loads(options) if options else {})

"""A local stand-in for Binance's spot REST API, for driving real ccxt over real HTTP in tests.

It serves `/api/v3/exchangeInfo` (BTCUSDT and ETHUSDT spot markets) and `/api/v3/klines` from the
candles it is given, with Binance's semantics (startTime and endTime inclusive, limit at most 1000,
12-column rows with string prices, -1121 for an unknown symbol). Every other path answers 401 with
Binance's -2015, as private endpoints do for a key without permission. Faults are queued per path
with `fail(path, fault, times)` and consumed one per request; each fault is a function of the
request returning the response to send, or None to answer normally after it (e.g. a slow answer).
`truncate`, `drip` and `cut` queue the normal klines answer cut short, sent slowly, or dropped halfway.
"""
from __future__ import annotations

import bisect
import dataclasses
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import parse_qsl, urlsplit

KLINES, EXCHANGE_INFO = "/api/v3/klines", "/api/v3/exchangeInfo"
MINUTE_MS = 60_000


@dataclass
class Request:
    path: str
    query: dict[str, str]
    headers: dict[str, str]


@dataclass
class Response:
    status: int = 200
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    pace: float = 0.0  # seconds between pieces of DRIP_BYTES of the body; 0 sends it at once
    cut_at: int | None = None  # bytes of the body sent before the connection is dropped


DRIP_BYTES = 64


Fault = Callable[[Request], "Response | None"]


def binance_error(status: int, code: int, msg: str, **headers: str) -> Fault:
    """An error answer as Binance sends it: JSON {"code", "msg"} with an HTTP status."""
    return lambda request: Response(status, json.dumps({"code": code, "msg": msg}), headers)


def raw(body: str, status: int = 200) -> Fault:
    """A literal body (empty, truncated JSON, an HTML page from a proxy...)."""
    return lambda request: Response(status, body, {"Content-Type": "application/json"})


def slow(seconds: float) -> Fault:
    """Wait, then answer normally (past the client's timeout, the client has gone)."""
    return lambda request: time.sleep(seconds)


class BinanceStandIn:
    """Serves `candles` ([open_ms, o, h, l, c, v] rows, time ordered) on 127.0.0.1 at a free port."""

    def __init__(self, candles: list[list]):
        self.candles = candles
        self.open_times = [int(row[0]) for row in candles]
        self.requests: list[Request] = []
        self.abandoned: list[tuple[Request, int, int]] = []  # answers the client left: (request, bytes sent, of)
        self._faults: dict[str, list[Fault]] = {}
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "BinanceStandIn":
        threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def ccxt_options(self, **extra) -> dict:
        """LEVIBOT_CCXT_OPTIONS pointing ccxt's Binance spot and wallet APIs at this stand-in."""
        api = {"public": f"{self.url}/api/v3", "private": f"{self.url}/api/v3", "v1": f"{self.url}/api/v1",
               "sapi": f"{self.url}/sapi/v1"}
        return {"urls": {"api": api}, "timeout": 2000, **extra}

    def fail(self, path: str, fault: Fault, times: int = 1, after: int = 0) -> None:
        """Answer the `times` requests on `path` that follow the next `after` ones with `fault`."""
        self._faults.setdefault(path, []).extend([lambda request: None] * after + [fault] * times)

    def truncate(self, rows: int, times: int = 1, after: int = 0) -> None:
        """Klines answers that hold at most `rows` rows, as a page cut short would."""
        self.fail(KLINES, lambda request: Response(200, json.dumps(self._klines(request.query)[:rows])), times, after)

    def drip(self, seconds: float, times: int = 1, after: int = 0) -> None:
        """Normal klines answers sent DRIP_BYTES at a time, `seconds` apart (each piece inside any read timeout)."""
        self.fail(KLINES, lambda request: dataclasses.replace(self._normal(request), pace=seconds), times, after)

    def cut(self, times: int = 1, after: int = 0) -> None:
        """Normal klines answers whose connection drops halfway through the body."""
        self.fail(KLINES, lambda request: dataclasses.replace(
            answer := self._normal(request), cut_at=len(answer.body.encode()) // 2), times, after)

    def paths(self) -> list[str]:
        return [request.path for request in self.requests]

    def klines(self) -> list[dict[str, str]]:
        return [request.query for request in self.requests if request.path == KLINES]

    def answer(self, request: Request) -> Response:
        self.requests.append(request)
        faults = self._faults.get(request.path)
        if faults:
            response = faults.pop(0)(request)
            if response is not None:
                return response
        return self._normal(request)

    def _normal(self, request: Request) -> Response:
        if request.path == EXCHANGE_INFO:
            return Response(200, json.dumps(EXCHANGE_INFO_BODY))
        if request.path == KLINES:
            if request.query.get("symbol") not in {"BTCUSDT", "ETHUSDT"}:
                return binance_error(400, -1121, "Invalid symbol.")(request)
            return Response(200, json.dumps(self._klines(request.query)))
        return binance_error(401, -2015, "Invalid API-key, IP, or permissions for action.")(request)

    def _klines(self, query: dict[str, str]) -> list[list]:
        first = bisect.bisect_left(self.open_times, int(query.get("startTime", 0)))
        last = bisect.bisect_right(self.open_times, int(query.get("endTime", 2**62)))
        limit = min(int(query.get("limit", 500)), 1000)
        return [_kline(row) for row in self.candles[first:last][:limit]]


def _kline(row: list) -> list:
    """A Binance kline: open time, o, h, l, c, v as strings, close time, quote volume, trades, taker volumes, 0."""
    open_ms = int(row[0])
    return [open_ms, *(repr(float(v)) for v in row[1:6]), open_ms + MINUTE_MS - 1, "0", 100, "0", "0", "0"]


def _handler(standin: BinanceStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            request = Request(parts.path, dict(parse_qsl(parts.query)), dict(self.headers))
            response = standin.answer(request)
            body = response.body.encode()
            sent = 0
            try:
                self.send_response(response.status)
                for name, value in {"Content-Type": "application/json", **response.headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if response.cut_at is not None:
                    self.wfile.write(body[:response.cut_at])
                    return  # HTTP/1.0: the connection closes with the body incomplete
                step = DRIP_BYTES if response.pace else len(body) or 1
                for sent in range(0, len(body), step):
                    if sent and response.pace:
                        time.sleep(response.pace)
                    self.wfile.write(body[sent:sent + step])
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                standin.abandoned.append((request, sent, len(body)))

        def log_message(self, *args) -> None:
            pass

    return Handler


def _spot_market(base: str, quote: str) -> dict:
    return {
        "symbol": f"{base}{quote}", "status": "TRADING", "baseAsset": base, "baseAssetPrecision": 8,
        "quoteAsset": quote, "quotePrecision": 8, "quoteAssetPrecision": 8,
        "orderTypes": ["LIMIT", "MARKET"], "isSpotTradingAllowed": True, "isMarginTradingAllowed": False,
        "permissions": ["SPOT"], "permissionSets": [["SPOT"]],
        "filters": [{"filterType": "PRICE_FILTER", "minPrice": "0.01", "maxPrice": "1000000.00", "tickSize": "0.01"},
                    {"filterType": "LOT_SIZE", "minQty": "0.00001", "maxQty": "9000.00", "stepSize": "0.00001"}],
    }


EXCHANGE_INFO_BODY = {
    "timezone": "UTC", "serverTime": 1680307200000, "rateLimits": [], "exchangeFilters": [],
    "symbols": [_spot_market("BTC", "USDT"), _spot_market("ETH", "USDT")],
}

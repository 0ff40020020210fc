"""Translate partition symbols (exchange market ids like BTCUSDT) into the names sources use.

Partition keys cannot hold '/', so the pipeline names markets by their exchange id; ccxt wants the
unified symbol (BTC/USDT) and freqtrade names its dumps BTC_USDT-1m.json.
"""
from __future__ import annotations

from typing import Any, Mapping

# Longest first so that FDUSD wins over USD and USDT over USD when both are suffixes.
QUOTE_CURRENCIES = tuple(
    sorted(
        ("USDT", "USDC", "FDUSD", "BUSD", "TUSD", "DAI", "BTC", "ETH", "BNB", "EUR", "USD", "TRY",
         "GBP", "BRL", "JPY", "AUD"),
        key=len,
        reverse=True,
    )
)


class SymbolError(ValueError):
    """A partition symbol cannot be mapped to an exchange market."""


def exchange_symbol(symbol: str, markets: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """The unified ccxt symbol ("BTC/USDT") of a market id ("BTCUSDT").

    With `markets` (an exchange's loaded `exchange.markets`) the id is looked up there, preferring
    the spot market when a swap shares the id; without, a known quote-currency suffix is split off.
    """
    if markets is None:
        base, quote = _split(symbol)
        return f"{base}/{quote}"
    matches = [m for m in markets.values() if m.get("id") == symbol]
    if not matches:
        raise SymbolError(f"the exchange has no market with id {symbol!r} among its {len(markets)} markets")
    spot = [m for m in matches if m.get("spot")]
    return (spot or matches)[0]["symbol"]


def dump_prefix(symbol: str) -> str:
    """The freqtrade/ccxt dump file prefix of a market id: BTCUSDT -> BTC_USDT (as in BTC_USDT-1m.json)."""
    base, quote = _split(symbol)
    return f"{base}_{quote}"


def _split(symbol: str) -> tuple[str, str]:
    for quote in QUOTE_CURRENCIES:
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return symbol[: -len(quote)], quote
    raise SymbolError(
        f"cannot split symbol {symbol!r} into base and quote currency: it must be an exchange id "
        f"ending in one of {', '.join(QUOTE_CURRENCIES)} (e.g. BTCUSDT)"
    )

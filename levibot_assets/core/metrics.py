"""Classification scores of P(up) and the after-fee trading rule built on it.

Trading rule (one decision per non-overlapping slot of H bars, anchored at the first test bar):
at the first row of each slot, go long when P(up) - 0.5 > θ, short when 0.5 - P(up) > θ,
otherwise stay flat; a position is held for exactly H bars (its gross return is the row's
fwd_return = ln(c[t+H]/c[t])) and pays the round-trip fee 2 * fee_bps. Slots without a scored
row or with a NaN probability are flat. Slots never overlap, so returns are not double counted.

The entry threshold θ of each model (`entry_threshold`) is the (1 - s) quantile of |P(up) - 0.5|
of that model's own probabilities on calibration rows of the training period (strictly before the
test day), s = the share of slots to trade (LEVIBOT_TRADE_SHARE). So θ is fixed before the test
day is seen, and it is a value the model's probabilities actually reach: the rule trades about a
share s of the slots instead of waiting for a conviction the model never has. A model whose
calibration probabilities are all equal (the majority baseline) has no slots to prefer and never
trades. Whether the trades pay is reported, not assumed: hit rate, mean gross edge per trade and
the round-trip fee beside it (`TradingResult.fee_verdict` says so when the edge is below the fee).

Sharpe: mean / std of the per-slot net log returns (flat slots count as 0), annualised by
sqrt(slots per year) for 24/7 markets: 365 * 1440 / H. A rule that never trades has Sharpe 0.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from levibot_assets.core.ohlcv import MINUTE, utc_timestamps

MINUTES_PER_YEAR = 365 * 1440
_EPS = 1e-15


def _checked(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y, p = np.asarray(y, dtype="float64"), np.asarray(p, dtype="float64")
    if y.shape != p.shape or y.ndim != 1:
        raise ValueError(f"labels and probabilities must be 1-D of the same length, got {y.shape} and {p.shape}")
    if len(y) == 0:
        raise ValueError("no rows to score")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("labels must be 0 or 1")
    if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise ValueError("probabilities must be finite and within [0, 1]")
    return y, p


def roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    """Probability that a random positive outranks a random negative (ties count half)."""
    y, p = _checked(y, p)
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC AUC needs both classes among the labels")
    ranks = pd.Series(p).rank(method="average").to_numpy()
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def accuracy(y: np.ndarray, p: np.ndarray) -> float:
    """Share of rows where the predicted class (P(up) >= 0.5) is right."""
    y, p = _checked(y, p)
    return float(np.mean((p >= 0.5) == (y == 1)))


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    y, p = _checked(y, p)
    p = np.clip(p, _EPS, 1 - _EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def brier(y: np.ndarray, p: np.ndarray) -> float:
    y, p = _checked(y, p)
    return float(np.mean((p - y) ** 2))


@dataclass(frozen=True)
class Metric:
    """One score the pipeline can rank models by: how it is computed and which way is better."""

    name: str
    higher_is_better: bool
    label: str  # column header in the comparison table
    digits: int  # decimals shown there
    # score of (labels, P(up)); None: the trading rule computes it (it needs timestamps and returns)
    score: Callable[[np.ndarray, np.ndarray], float] | None = None


# The one table of scores: LEVIBOT_SELECT_METRIC's allowed values, the scores every evaluation holds
# and shows, and the direction every comparison (best baseline, challenger vs champion) uses.
METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("auc", True, "AUC", 4, roc_auc),
        Metric("accuracy", True, "accuracy", 4, accuracy),
        Metric("log_loss", False, "log loss", 4, log_loss),
        Metric("brier", False, "Brier", 4, brier),
        Metric("sharpe", True, "Sharpe (after fees)", 2),
    )
}


def higher_is_better(metric: str) -> bool:
    try:
        return METRICS[metric].higher_is_better
    except KeyError:
        raise ValueError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}") from None


def classification_scores(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """Every METRICS score computed from the labels and probabilities alone."""
    return {m.name: m.score(y, p) for m in METRICS.values() if m.score is not None}


def round_trip_bps(fee_bps: float) -> float:
    """Fee of opening and closing one position, in basis points."""
    return 2 * fee_bps


def round_trip_cost(fee_bps: float) -> float:
    """The round-trip fee as a fraction (log-return units, small fees)."""
    return round_trip_bps(fee_bps) / 1e4


def entry_threshold(calibration_proba: np.ndarray, trade_share: float) -> float:
    """θ: the (1 - trade_share) quantile of |P(up) - 0.5| over the calibration probabilities (NaN ones skipped)."""
    if not 0 < trade_share <= 1:
        raise ValueError(f"the share of slots to trade must be in (0, 1], got {trade_share}")
    p = np.asarray(calibration_proba, dtype="float64")
    p = p[np.isfinite(p)]
    if len(p) == 0:
        raise ValueError("no finite calibration probability: the entry threshold cannot be chosen")
    return float(np.quantile(np.abs(p - 0.5), 1 - trade_share))


@dataclass(frozen=True)
class TradingResult:
    slot_start: pd.DatetimeIndex  # start time of each H-bar slot
    net_returns: np.ndarray  # per-slot net log return of the rule (0 when flat)
    positions: np.ndarray  # per-slot -1 / 0 / +1
    sharpe: float
    n_trades: int
    total_return: float  # sum of net log returns over the test period (after fees)
    hit_rate: float  # share of trades whose direction was right (gross return > 0); NaN without trades
    gross_edge_bps: float  # mean gross log return per trade before fees, in bps; NaN without trades
    round_trip_bps: float  # fee paid per trade (both sides), in bps

    def fee_verdict(self) -> str | None:
        """The plain sentence when the trades do not earn their fees on average; None otherwise."""
        if self.n_trades == 0 or not self.gross_edge_bps < self.round_trip_bps:
            return None
        return (f"gross edge {self.gross_edge_bps:.1f} bps per trade < round-trip cost {self.round_trip_bps:g} bps: "
                "loses after fees")


def trading_rule(
    timestamps: pd.Series,
    fwd_returns: np.ndarray,
    proba: np.ndarray,
    horizon: int,
    threshold: float,
    fee_bps: float,
) -> TradingResult:
    """Run the long/short/flat rule of the module docstring over time-sorted scored rows (NaN threshold: flat)."""
    ts = pd.DatetimeIndex(utc_timestamps(timestamps))
    if len(ts) == 0:
        raise ValueError("no rows to trade on")
    if not ts.is_monotonic_increasing:
        raise ValueError("rows must be sorted by time")
    fwd, p = np.asarray(fwd_returns, dtype="float64"), np.asarray(proba, dtype="float64")
    n_slots = int((ts[-1] - ts[0]) // (horizon * MINUTE)) + 1
    slot_start = pd.date_range(ts[0], periods=n_slots, freq=horizon * MINUTE)
    # A slot is decided at its first minute only: the row stamped exactly at the slot start.
    row_of = pd.Series(np.arange(len(ts)), index=ts).reindex(slot_start).to_numpy()
    has_row = ~np.isnan(row_of)
    idx = row_of[has_row].astype(int)
    slot_p, slot_fwd = np.full(n_slots, np.nan), np.zeros(n_slots)
    slot_p[has_row], slot_fwd[has_row] = p[idx], fwd[idx]
    edge = np.nan_to_num(slot_p - 0.5, nan=0.0)
    positions = np.where(edge > threshold, 1, np.where(edge < -threshold, -1, 0))
    positions[~np.isfinite(slot_fwd)] = 0
    gross = positions * np.nan_to_num(slot_fwd)
    net = gross - np.abs(positions) * round_trip_cost(fee_bps)
    traded = positions != 0
    return TradingResult(
        slot_start=slot_start,
        net_returns=net,
        positions=positions,
        sharpe=annualised_sharpe(net, horizon),
        n_trades=int(traded.sum()),
        total_return=float(net.sum()),
        hit_rate=float(np.mean(gross[traded] > 0)) if traded.any() else float("nan"),
        gross_edge_bps=float(gross[traded].mean() * 1e4) if traded.any() else float("nan"),
        round_trip_bps=round_trip_bps(fee_bps),
    )


def annualised_sharpe(period_returns: np.ndarray, horizon: int) -> float:
    """mean / sample std * sqrt(periods per year) for H-minute periods of a 24/7 market; 0 if flat."""
    r = np.asarray(period_returns, dtype="float64")
    std = r.std(ddof=1) if len(r) > 1 else 0.0
    if not np.count_nonzero(r) or not std > 0:
        return 0.0
    return float(r.mean() / std * np.sqrt(MINUTES_PER_YEAR / horizon))

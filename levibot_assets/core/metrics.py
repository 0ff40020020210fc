"""Classification scores of P(up) and the after-fee trading rule built on it.

Trading rule (one decision per non-overlapping slot of H bars, anchored at the first test bar):
at the first row of each slot, go long when P(up) - 0.5 is large enough, short when 0.5 - P(up)
is, otherwise stay flat; a position is held for exactly H bars (its return is the row's
fwd_return = ln(c[t+H]/c[t])) and pays the round-trip fee 2 * fee_bps. Slots without a scored
row or with a NaN probability are flat. Slots never overlap, so returns are not double counted.

Abstaining instead of bleeding fees: with A = mean |fwd_return| over the TRAINING rows, a
probability p implies an expected H-bar return of about (2p - 1) * A for a long position (the
up/down moves are taken as equally large on average). A trade is taken only when that edge
|2p - 1| * A exceeds the round-trip cost, i.e. |p - 0.5| > cost / (2 A) = `edge_threshold`.
Only training data sets the threshold, so it is fixed before the test day is seen.

Sharpe: mean / std of the per-slot net log returns (flat slots count as 0), annualised by
sqrt(slots per year) for 24/7 markets: 365 * 1440 / H. A rule that never trades has Sharpe 0.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from levibot_assets.core.ohlcv import MINUTE

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


def round_trip_cost(fee_bps: float) -> float:
    """Fee of opening and closing one position, as a fraction (log-return units, small fees)."""
    return 2 * fee_bps / 1e4


def edge_threshold(train_fwd_returns: np.ndarray, fee_bps: float) -> float:
    """Smallest |P(up) - 0.5| worth trading, from the training rows only (see module docstring)."""
    mean_move = float(np.nanmean(np.abs(np.asarray(train_fwd_returns, dtype="float64"))))
    if not np.isfinite(mean_move) or mean_move <= 0:
        raise ValueError("the training rows' forward returns are all zero or missing: no edge can be estimated")
    return round_trip_cost(fee_bps) / (2 * mean_move)


@dataclass(frozen=True)
class TradingResult:
    slot_start: pd.DatetimeIndex  # start time of each H-bar slot
    net_returns: np.ndarray  # per-slot net log return of the rule (0 when flat)
    positions: np.ndarray  # per-slot -1 / 0 / +1
    sharpe: float
    n_trades: int
    total_return: float  # sum of net log returns over the test period


def trading_rule(
    timestamps: pd.Series,
    fwd_returns: np.ndarray,
    proba: np.ndarray,
    horizon: int,
    threshold: float,
    fee_bps: float,
) -> TradingResult:
    """Run the long/short/flat rule of the module docstring over time-sorted scored rows."""
    ts = pd.DatetimeIndex(pd.to_datetime(timestamps, utc=True))
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
    net = positions * np.nan_to_num(slot_fwd) - np.abs(positions) * round_trip_cost(fee_bps)
    return TradingResult(
        slot_start=slot_start,
        net_returns=net,
        positions=positions,
        sharpe=annualised_sharpe(net, horizon),
        n_trades=int(np.count_nonzero(positions)),
        total_return=float(net.sum()),
    )


def annualised_sharpe(period_returns: np.ndarray, horizon: int) -> float:
    """mean / sample std * sqrt(periods per year) for H-minute periods of a 24/7 market; 0 if flat."""
    r = np.asarray(period_returns, dtype="float64")
    std = r.std(ddof=1) if len(r) > 1 else 0.0
    if not np.count_nonzero(r) or not std > 0:
        return 0.0
    return float(r.mean() / std * np.sqrt(MINUTES_PER_YEAR / horizon))

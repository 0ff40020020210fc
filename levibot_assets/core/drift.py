"""Population stability index (PSI) of each feature: has the test day left the training distribution?

PSI = sum over bins of (a_i - e_i) * ln(a_i / e_i), with e_i / a_i the share of the training
(expected) / test (actual) values in bin i. Bins are deciles of the training values, open at both
ends so every test value lands in a bin; empty bins get a share of EPSILON so the log is defined.
Rule of thumb: < 0.1 stable, 0.1-0.25 moderate shift, > 0.25 significant shift.

That rule of thumb does not hold for 1-minute crypto features: volatility and volume change so much
from one ordinary day to the next that a fixed 0.25 fired on 79 of 93 real symbol-days. So each
feature's bound is calibrated on the training window itself: every training day is scored against
the other training days (leave one day out), and the test day drifts on a feature when its PSI
exceeds the largest of those ordinary PSIs by more than a `margin`. The margin is added, not
multiplied: PSI saturates (about 8.3 with 10 bins and EPSILON), so a multiple of a volatile window's
largest PSI can be out of reach (BENCHMARKS.md, drift calibration).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

BINS = 10
EPSILON = 1e-4


def bin_edges(expected: np.ndarray, bins: int = BINS) -> np.ndarray:
    """Inner edges at the quantiles of the expected values (duplicates merged for discrete data)."""
    qs = np.quantile(expected, np.linspace(0, 1, bins + 1)[1:-1])
    return np.unique(qs)


def bin_shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Share of values per bin; bin i holds edges[i-1] < x <= edges[i] (first/last bins open)."""
    counts = np.bincount(np.searchsorted(edges, values, side="left"), minlength=len(edges) + 1)
    return counts / counts.sum()


def psi(expected: Sequence[float], actual: Sequence[float], bins: int = BINS) -> float:
    """PSI of `actual` against `expected`; non-finite values are ignored, NaN if either side is empty."""
    return _sorted_psi(np.sort(_finite(expected)), _finite(actual), bins)


@dataclass(frozen=True)
class DriftReport:
    """PSI per feature, its calibrated bound, and the features above their bound."""

    psi_by_feature: dict[str, float]
    bound_by_feature: dict[str, float]

    @property
    def drifted(self) -> dict[str, float]:
        return {f: v for f, v in self.psi_by_feature.items() if v > self.bound_by_feature[f]}

    @property
    def max_psi(self) -> float:
        finite = [v for v in self.psi_by_feature.values() if np.isfinite(v)]
        return max(finite) if finite else float("nan")


def _finite(values) -> np.ndarray:
    v = np.asarray(values, dtype="float64")
    return v[np.isfinite(v)]


def _sorted_psi(expected_sorted: np.ndarray, actual: np.ndarray, bins: int = BINS) -> float:
    """psi(expected, actual) for finite `actual` and finite, ascending `expected_sorted`: the same
    edges (np.quantile reads the same order statistics of a sorted array) and the same bin counts,
    read off the sorted values with one searchsorted per edge instead of one per value."""
    if expected_sorted.size == 0 or actual.size == 0:
        return float("nan")
    edges = bin_edges(expected_sorted, bins)
    at_or_below = np.searchsorted(expected_sorted, edges, side="right")  # values <= each edge
    counts = np.diff(np.concatenate(([0], at_or_below, [expected_sorted.size])))
    pe = np.clip(counts / counts.sum(), EPSILON, None)
    pa = np.clip(bin_shares(actual, edges), EPSILON, None)
    return float(np.sum((pa - pe) * np.log(pa / pe)))


def _pooled(days: Sequence[pd.DataFrame], column: str) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Each day's finite values of `column`, all of them sorted, and which day each sorted value came from."""
    values = [_finite(day[column]) for day in days]
    everything = np.concatenate(values)
    owner = np.repeat(np.arange(len(values)), [v.size for v in values])
    order = np.argsort(everything)
    return values, everything[order], owner[order]


def _leave_one_out(values: list[np.ndarray], ordered: np.ndarray, owner: np.ndarray) -> list[float]:
    return [_sorted_psi(ordered[owner != k], values[k]) for k in range(len(values))]


def _calibration_days(days: Sequence[pd.DataFrame]) -> None:
    if len(days) < 2:
        raise ValueError(f"drift: calibration needs at least 2 training days, got {len(days)}")


def ordinary_psi(days: Sequence[pd.DataFrame], columns: Sequence[str]) -> dict[str, list[float]]:
    """Per column, the PSI of each day against the other days together (leave one day out).

    What an ordinary day of this window scores: volatility or volume move a lot from one day to the
    next, so a fixed PSI threshold fires on most days (BENCHMARKS.md, drift calibration). Equal to
    psi(concatenation of the other days, day) for every day, but each column is sorted once and each
    day's leave-one-out values are that order minus the day's own (no sort or scan of the other
    days' values per day: 13 training days x 15 features were most of a model partition's drift check).
    """
    _calibration_days(days)
    return {c: _leave_one_out(*_pooled(days, c)) for c in columns}


def drift_bound(ordinary: Sequence[float], margin: float) -> float:
    """The largest ordinary PSI plus `margin`; `margin` alone when no ordinary PSI is finite."""
    finite = [v for v in ordinary if np.isfinite(v)]
    return max(finite, default=0.0) + margin


def feature_drift(train_days: Sequence[pd.DataFrame], test: pd.DataFrame, columns: Sequence[str], margin: float) -> DriftReport:
    """PSI of every column of `test` (the new day) against the training days together, each with the
    bound calibrated on the training days themselves (drift_bound of ordinary_psi)."""
    missing = sorted({c for frame in (*train_days, test) for c in columns if c not in frame.columns})
    if missing:
        raise ValueError(f"drift: columns missing from the frames: {', '.join(missing)}")
    _calibration_days(train_days)
    pooled = {c: _pooled(train_days, c) for c in columns}  # sorted once for both the test day and the bounds
    return DriftReport(
        {c: _sorted_psi(ordered, _finite(test[c])) for c, (_, ordered, _) in pooled.items()},
        {c: drift_bound(_leave_one_out(*pooled[c]), margin) for c in columns},
    )

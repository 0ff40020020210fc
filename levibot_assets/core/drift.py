"""Population stability index (PSI) of each feature: has the test day left the training distribution?

PSI = sum over bins of (a_i - e_i) * ln(a_i / e_i), with e_i / a_i the share of the training
(expected) / test (actual) values in bin i. Bins are deciles of the training values, open at both
ends so every test value lands in a bin; empty bins get a share of EPSILON so the log is defined.
Rule of thumb: < 0.1 stable, 0.1-0.25 moderate shift, > 0.25 significant shift.
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
    e = np.asarray(expected, dtype="float64")
    a = np.asarray(actual, dtype="float64")
    e, a = e[np.isfinite(e)], a[np.isfinite(a)]
    if e.size == 0 or a.size == 0:
        return float("nan")
    edges = bin_edges(e, bins)
    pe = np.clip(bin_shares(e, edges), EPSILON, None)
    pa = np.clip(bin_shares(a, edges), EPSILON, None)
    return float(np.sum((pa - pe) * np.log(pa / pe)))


@dataclass(frozen=True)
class DriftReport:
    """PSI per feature and the features above the warning threshold."""

    psi_by_feature: dict[str, float]
    threshold: float

    @property
    def drifted(self) -> dict[str, float]:
        return {f: v for f, v in self.psi_by_feature.items() if v > self.threshold}

    @property
    def max_psi(self) -> float:
        finite = [v for v in self.psi_by_feature.values() if np.isfinite(v)]
        return max(finite) if finite else float("nan")


def feature_drift(train: pd.DataFrame, test: pd.DataFrame, columns: Sequence[str], threshold: float) -> DriftReport:
    """PSI of every column of `test` (the new day) against `train` (the training window)."""
    missing = [c for c in columns if c not in train.columns or c not in test.columns]
    if missing:
        raise ValueError(f"drift: columns missing from the frames: {', '.join(missing)}")
    return DriftReport({c: psi(train[c].to_numpy(), test[c].to_numpy()) for c in columns}, threshold)

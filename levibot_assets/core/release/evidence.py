"""Evidence for a release decision: each family's out-of-sample record over trailing days, and a
paired comparison of the challenger with the champion on the same rows, with its confidence interval.

One day's AUC on ~1400 rows has a standard error near 0.015, so one day cannot pick a winner.
Every stored predictions file (core.predictions) holds, for its day, the probabilities of every
candidate family trained before that day, of the baselines, and of the model that was in service.
So:

- The record of a family is its score pooled over the scored rows of the last `record_days` days
  (today included), on the rows where every candidate had a probability: all families are judged
  on identical rows.
- The challenger is the family with the best record, except that a `preferred` family (the
  ensemble: the average of the others, the steadiest candidate on unseen real days) stays the
  challenger unless the best record beats it on the same rows beyond noise (the paired interval
  below, at the same confidence): a family that leads by noise is not worth a switch.
- The champion's own out-of-sample record is its "champion" rows on the days it was in service
  from its release date on (a release dated R was trained before R). The challenger family is compared with it on exactly those
  rows (today's among them): the advantage (challenger better by, in the metric's direction),
  its paired block-bootstrap confidence interval, and the rows and days it rests on.

The bootstrap resamples blocks of consecutive minutes (labels look H bars ahead and features
overlap, so single rows are not independent), the same resampled rows for both models (paired),
with a fixed seed so a decision can be recomputed from the stored files. Weighted AUC uses one
sort per comparison, so hundreds of resamples over ten days of rows take a fraction of a second.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from levibot_assets.core.metrics import METRICS, higher_is_better, roc_auc

BOOTSTRAP_RESAMPLES = 400
BOOTSTRAP_SEED = 20230417
BLOCK_MINUTES = 60  # at least 4 label horizons of 15 bars: blocks long enough to carry the overlap
CHAMPION = "champion"
CANDIDATE = "candidate"
BASELINE = "baseline"


def record_metric(select_metric: str) -> str:
    """The metric records are kept in: the selection metric when it is a score of (label, P(up));
    the trading rule's Sharpe needs returns the predictions files do not hold, so it is judged on AUC."""
    return select_metric if METRICS[select_metric].score is not None else "auc"


# ----------------------------------------------------------------------------- weighted scores


def _weighted_auc(y: np.ndarray, p: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUC of (y, p) under each row of `weights` (resamples x rows); ties count half."""
    order = np.argsort(p, kind="mergesort")
    p_sorted, y_sorted = p[order], y[order]
    w = weights[:, order]
    starts = np.flatnonzero(np.r_[True, p_sorted[1:] != p_sorted[:-1]])
    pos = np.add.reduceat(w * y_sorted, starts, axis=1)
    neg = np.add.reduceat(w * (1.0 - y_sorted), starts, axis=1)
    neg_below = np.cumsum(neg, axis=1) - neg
    with np.errstate(invalid="ignore", divide="ignore"):
        return (pos * (neg_below + 0.5 * neg)).sum(axis=1) / (pos.sum(axis=1) * neg.sum(axis=1))


def _row_losses(metric: str, y: np.ndarray, p: np.ndarray) -> np.ndarray:
    if metric == "accuracy":
        return ((p >= 0.5) == (y == 1)).astype("float64")
    if metric == "brier":
        return (p - y) ** 2
    if metric == "log_loss":
        q = np.clip(p, 1e-15, 1 - 1e-15)
        return -(y * np.log(q) + (1 - y) * np.log(1 - q))
    raise ValueError(f"no per-row form of {metric!r}")


def weighted_score(metric: str, y: np.ndarray, p: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """`metric` of (y, p) under each row of `weights`; with weights of ones, the plain score."""
    if metric == "auc":
        return _weighted_auc(y, p, weights)
    with np.errstate(invalid="ignore", divide="ignore"):
        return weights @ _row_losses(metric, y, p) / weights.sum(axis=1)


def score(metric: str, y: np.ndarray, p: np.ndarray) -> float | None:
    """The plain score, None where it is undefined (no rows, one class for AUC)."""
    y, p = np.asarray(y, dtype="float64"), np.asarray(p, dtype="float64")
    if len(y) == 0 or (metric == "auc" and len(np.unique(y)) < 2):
        return None
    if metric == "auc":
        return roc_auc(y, p)
    return float(weighted_score(metric, y, p, np.ones((1, len(y))))[0])


def block_ids(frame: pd.DataFrame, block_minutes: int = BLOCK_MINUTES) -> np.ndarray:
    """Block of each row: its day and its `block_minutes` slot within the day (consecutive minutes)."""
    ts = pd.DatetimeIndex(frame["timestamp"])
    minute = (ts.hour * 60 + ts.minute).to_numpy()
    day = np.asarray((ts - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(days=1), dtype="int64")
    key = day * (1440 // block_minutes + 1) + minute // block_minutes
    return np.unique(key, return_inverse=True)[1]


# ----------------------------------------------------------------------------- the paired comparison


@dataclass(frozen=True)
class Comparison:
    """Challenger family vs the model in service on the same rows: how much better, and how sure."""

    metric: str
    challenger: str
    challenger_score: float | None
    champion_score: float | None
    advantage: float | None  # challenger better by (in the metric's direction); None: not comparable
    ci_low: float | None
    ci_high: float | None
    confidence: float
    days: tuple[str, ...] = ()
    rows: int = 0
    resamples: int = BOOTSTRAP_RESAMPLES
    block_minutes: int = BLOCK_MINUTES

    def holds_up(self, margin: float) -> bool:
        """The whole confidence interval of the advantage lies above the margin."""
        return self.ci_low is not None and self.ci_low > margin

    def as_dict(self) -> dict:
        return {
            "metric": self.metric, "challenger": self.challenger, "challenger_score": self.challenger_score,
            "champion_score": self.champion_score, "advantage": self.advantage, "ci_low": self.ci_low,
            "ci_high": self.ci_high, "confidence": self.confidence, "days": list(self.days), "rows": self.rows,
            "resamples": self.resamples, "block_minutes": self.block_minutes,
        }


def paired_comparison(
    metric: str,
    y: np.ndarray,
    p_challenger: np.ndarray,
    p_champion: np.ndarray,
    blocks: np.ndarray,
    confidence: float,
    challenger: str = "challenger",
    days: tuple[str, ...] = (),
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> Comparison:
    """Advantage of the challenger over the champion on the same rows, with a paired block-bootstrap CI."""
    y = np.asarray(y, dtype="float64")
    a, b = np.asarray(p_challenger, dtype="float64"), np.asarray(p_champion, dtype="float64")
    sign = 1.0 if higher_is_better(metric) else -1.0
    a_score, b_score = score(metric, y, a), score(metric, y, b)
    empty = Comparison(metric, challenger, a_score, b_score, None, None, None, confidence, days, int(len(y)), resamples)
    if a_score is None or b_score is None:
        return empty
    n_blocks = int(blocks.max()) + 1
    rng = np.random.default_rng(seed)
    diffs = []
    for start in range(0, resamples, 100):  # bounded memory: 100 resamples x rows at a time
        counts = rng.multinomial(n_blocks, np.full(n_blocks, 1.0 / n_blocks), size=min(100, resamples - start))
        weights = counts[:, blocks].astype("float64")
        diffs.append(sign * (weighted_score(metric, y, a, weights) - weighted_score(metric, y, b, weights)))
    diffs = np.concatenate(diffs)
    diffs = diffs[np.isfinite(diffs)]
    if diffs.size == 0:
        return empty
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(diffs, [tail, 1.0 - tail])
    return Comparison(metric, challenger, a_score, b_score, sign * (a_score - b_score), float(low), float(high),
                      confidence, days, int(len(y)), resamples)


# ----------------------------------------------------------------------------- records over trailing days


@dataclass
class Evidence:
    """What a decision rests on: every family's and baseline's record, and the challenger vs the champion."""

    metric: str
    days: list[str]  # the record's days, oldest first (today last)
    records: dict[str, float | None]  # candidate family -> pooled score over the record's rows
    baselines: dict[str, float | None]  # baseline -> pooled score over the same rows
    rows: int
    challenger: str | None
    comparison: Comparison | None = None  # None: no champion scored on any of these days
    # the best record vs the preferred family, when they differ (why the preferred one was kept or not)
    versus_preferred: Comparison | None = None
    by_day: dict[str, dict[str, float | None]] = field(default_factory=dict)  # day -> family -> AUC that day

    def as_dict(self) -> dict:
        return {
            "metric": self.metric, "days": self.days, "rows": self.rows, "records": self.records,
            "baselines": self.baselines, "challenger": self.challenger, "by_day": self.by_day,
            "comparison": self.comparison.as_dict() if self.comparison else None,
            "versus_preferred": self.versus_preferred.as_dict() if self.versus_preferred else None,
        }


def _wide(frame: pd.DataFrame, role: str) -> pd.DataFrame:
    """Scored rows of one role, one column of P(up) per model, indexed by (day, timestamp)."""
    rows = frame.loc[(frame["role"] == role) & frame["scored"].astype(bool)]
    return rows.pivot_table(index=["day", "timestamp"], columns="model", values="p_up", aggfunc="first", dropna=False)


def gather_evidence(
    frames: dict[str, pd.DataFrame],
    families: list[str],
    metric: str,
    confidence: float,
    champion_release: str | None,
    preferred: str | None = None,
) -> Evidence:
    """Records of `families` and the comparison with the champion over `frames` ({day: predictions}).

    `frames` are the trailing stored days and today, each a core.predictions table. A day enters the
    records on the rows where every family has a probability (a day lacking a family is left out).
    The champion is compared on the days where the release `champion_release` was scored (its
    "champion" rows with that release, from its release date on).
    """
    days = sorted(frames)
    long = pd.concat([f.assign(day=d) for d, f in frames.items()], ignore_index=True) if frames else pd.DataFrame()
    candidates = _wide(long, CANDIDATE) if len(long) else pd.DataFrame()
    present = [f for f in families if f in candidates.columns]
    candidates = candidates.reindex(columns=families)
    complete = candidates.notna().all(axis=1) if len(candidates) else pd.Series(dtype=bool)
    candidates = candidates.loc[complete]
    labels = long.loc[long["scored"].astype(bool)].groupby(["day", "timestamp"])["label"].first() if len(long) else None
    used_days = sorted(set(candidates.index.get_level_values("day"))) if len(candidates) else []
    y = labels.reindex(candidates.index).to_numpy(dtype="float64") if len(candidates) else np.array([])
    records = {f: (score(metric, y, candidates[f].to_numpy()) if f in present else None) for f in families}
    baselines_wide = _wide(long, BASELINE).reindex(candidates.index) if len(candidates) else pd.DataFrame()
    baselines = {
        b: score(metric, y[ok], baselines_wide[b].to_numpy()[ok])
        for b in baselines_wide.columns
        for ok in [np.isfinite(baselines_wide[b].to_numpy(dtype="float64"))]
    }
    by_day = {}
    for day in used_days:
        rows = candidates.xs(day, level="day")
        y_day = labels.loc[day].reindex(rows.index).to_numpy(dtype="float64")
        by_day[day] = {f: score("auc", y_day, rows[f].to_numpy()) for f in families}
    finite = {f: s for f, s in records.items() if s is not None}
    challenger = None
    if finite:
        pick = max if higher_is_better(metric) else min
        challenger = pick(finite, key=finite.__getitem__)
    evidence = Evidence(metric, used_days, records, baselines, int(len(y)), challenger, by_day=by_day)
    if challenger is not None and preferred in finite and challenger != preferred:
        rows = candidates.reset_index()
        evidence.versus_preferred = paired_comparison(
            metric, y, rows[challenger].to_numpy(), rows[preferred].to_numpy(), block_ids(rows), confidence,
            challenger, tuple(used_days),
        )
        if not evidence.versus_preferred.holds_up(0.0):
            evidence.challenger = challenger = preferred
    if challenger is not None and champion_release is not None:
        evidence.comparison = _compare_with_champion(long, challenger, metric, confidence, champion_release)
    return evidence


def _compare_with_champion(long: pd.DataFrame, challenger: str, metric: str, confidence: float, release: str) -> Comparison | None:
    champ = long.loc[(long["model"] == CHAMPION) & (long["release"].astype(str) == release) & long["scored"].astype(bool)]
    champ = champ.loc[champ["day"] >= release]  # out of sample: a release dated R was trained before R
    chall = long.loc[(long["model"] == challenger) & (long["role"] == CANDIDATE) & long["scored"].astype(bool)]
    both = champ.merge(chall[["day", "timestamp", "p_up"]], on=["day", "timestamp"], suffixes=("_champion", "_challenger"))
    both = both.loc[np.isfinite(both["p_up_champion"]) & np.isfinite(both["p_up_challenger"])]
    both = both.sort_values(["day", "timestamp"], ignore_index=True)
    if both.empty:
        return None
    days = tuple(sorted(both["day"].unique()))
    return paired_comparison(
        metric, both["label"].to_numpy(), both["p_up_challenger"].to_numpy(), both["p_up_champion"].to_numpy(),
        block_ids(both), confidence, challenger, days,
    )

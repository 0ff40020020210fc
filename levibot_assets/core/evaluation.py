"""Score models and baselines on exactly the same test rows, the same way, in one place.

Used by every model asset (LightGBM, TFT): give it the test rows, {name: P(up) per test row} and
the training rows; baselines are fitted on the training rows here. Rows where any model has no
probability (NaN: e.g. a TFT without enough history) are dropped for every model and baseline
alike, so all scores in one table come from identical rows. The trading rule's edge threshold
is estimated from the training rows only (core.metrics).

`baselines` selects which baselines are fitted (default: all of core.baselines.BASELINES); a
caller whose candidates include a baseline's family (best_release: logistic) leaves it out so
no model is compared with itself (core.baselines.rule_baselines). Every model's and baseline's
P(up) on every test row is kept in `Evaluation.predictions` (with the label and whether the row
was scored), so the scores can be recomputed from the stored predictions (core.predictions).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from levibot_assets.core.baselines import baseline_probabilities
from levibot_assets.core.features import FORWARD_RETURN_COLUMN, LABEL_COLUMN
from levibot_assets.core.metrics import (
    METRICS,
    TradingResult,
    classification_scores,
    edge_threshold,
    higher_is_better,
    trading_rule,
)

PREDICTION_COLUMNS = ("timestamp", "label", "scored")
SCORE_COLUMNS = (*METRICS, "n_trades", "total_return")


class EvaluationError(ValueError):
    """The test rows cannot be scored (message says why)."""


@dataclass(frozen=True)
class Scoring:
    """The two values scoring depends on besides the rows: passed as one value so that callers in
    between (core.release.decision.evaluate_with_champion) hand it on without knowing its parts."""

    horizon: int  # label horizon in bars: the trading rule's holding period
    fee_bps: float  # fee per side


@dataclass
class Evaluation:
    scores: dict[str, dict[str, float]]  # name -> SCORE_COLUMNS, models first, then baselines
    models: list[str]
    baselines: list[str]
    trading: dict[str, TradingResult] = field(repr=False)
    buy_and_hold: pd.Series = field(repr=False)  # cumulative log return of close over the test rows
    facts: dict[str, Any]  # rows, time range, threshold, fees, horizon
    # one row per test row: timestamp, label, scored (every model had a probability: the rows
    # every score comes from), then P(up) of each model and baseline (NaN where it had none)
    predictions: pd.DataFrame = field(default=None, repr=False)

    def best_baseline(self, metric: str = "auc") -> tuple[str, float]:
        pick = max if higher_is_better(metric) else min
        name = pick(self.baselines, key=lambda b: self.scores[b][metric])
        return name, self.scores[name][metric]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready comparison: facts, every score, and the best baseline by AUC."""
        name, auc = self.best_baseline("auc")
        return {**self.facts, "scores": self.scores, "models": self.models, "baselines": self.baselines,
                "best_baseline": name, "best_baseline_auc": auc}

    def markdown_table(self) -> str:
        metrics = list(METRICS.values())
        header = "| model | " + " | ".join(m.label for m in metrics) + " | trades | net log return |"
        lines = [header, "|---|" + "---:|" * (len(metrics) + 2)]
        for name in self.models + self.baselines:
            s = self.scores[name]
            label = f"**{name}**" if name in self.models else f"{name} (baseline)"
            cells = " | ".join(f"{s[m.name]:.{m.digits}f}" for m in metrics)
            lines.append(f"| {label} | {cells} | {s['n_trades']} | {s['total_return']:+.4f} |")
        f = self.facts
        lines.append("")
        lines.append(
            f"{f['n_test_rows']} test rows ({f['test_start']} .. {f['test_end']}), {f['n_train_rows']} training rows; "
            f"rule trades every {f['horizon']} bars when |P(up) - 0.5| > {f['edge_threshold']:.4f} "
            f"(fees {f['fee_bps']:g} bps per side)."
        )
        return "\n".join(lines)


def evaluate_models(
    test_rows: pd.DataFrame,
    probas: Mapping[str, np.ndarray],
    train_rows: pd.DataFrame,
    scoring: Scoring,
    baselines: Sequence[str] | None = None,
) -> Evaluation:
    """Score each model's P(up) and the baselines (all, or `baselines`) on the test rows every model scored."""
    if not probas:
        raise EvaluationError("no model probabilities to evaluate")
    arrays = {name: np.asarray(p, dtype="float64") for name, p in probas.items()}
    for name, p in arrays.items():
        if p.shape != (len(test_rows),):
            raise EvaluationError(f"{name}: {p.shape[0] if p.ndim else 0} probabilities for {len(test_rows)} test rows")
    common = np.logical_and.reduce([np.isfinite(p) for p in arrays.values()])
    rows = test_rows.loc[common].reset_index(drop=True)
    y = rows[LABEL_COLUMN].to_numpy(dtype="float64")
    if len(np.unique(y)) < 2:
        raise EvaluationError(f"the {len(rows)} test rows every model scored hold a single class")
    if set(arrays) & set(PREDICTION_COLUMNS):
        raise EvaluationError(f"model names {sorted(set(arrays) & set(PREDICTION_COLUMNS))} are reserved column names")
    # baselines predict row by row: fitted once, asked for every test row, scored on the common ones
    baseline_all = baseline_probabilities(train_rows, test_rows, baselines, scoring.horizon)
    if set(arrays) & set(baseline_all):
        raise EvaluationError(f"model names {sorted(set(arrays) & set(baseline_all))} clash with baseline names")
    everything = {**{n: p[common] for n, p in arrays.items()}, **{n: p[common] for n, p in baseline_all.items()}}
    threshold = edge_threshold(train_rows[FORWARD_RETURN_COLUMN].to_numpy(), scoring.fee_bps)
    scores, trading = {}, {}
    for name, p in everything.items():
        result = trading_rule(rows["timestamp"], rows[FORWARD_RETURN_COLUMN].to_numpy(), p,
                              scoring.horizon, threshold, scoring.fee_bps)
        trading[name] = result
        scores[name] = {**classification_scores(y, p), "sharpe": result.sharpe, "n_trades": result.n_trades,
                        "total_return": result.total_return}
    close = rows["close"].to_numpy(dtype="float64")
    return Evaluation(
        scores=scores,
        models=list(arrays),
        baselines=list(baseline_all),
        trading=trading,
        buy_and_hold=pd.Series(np.log(close / close[0]), index=pd.DatetimeIndex(rows["timestamp"])),
        facts={
            "n_test_rows": int(len(rows)),
            "n_test_rows_dropped": int((~common).sum()),
            "n_train_rows": int(len(train_rows)),
            "test_start": str(rows["timestamp"].iloc[0]),
            "test_end": str(rows["timestamp"].iloc[-1]),
            "train_start": str(train_rows["timestamp"].iloc[0]),
            "train_end": str(train_rows["timestamp"].iloc[-1]),
            "edge_threshold": threshold,
            "fee_bps": scoring.fee_bps,
            "horizon": scoring.horizon,
        },
        predictions=pd.DataFrame({
            "timestamp": pd.DatetimeIndex(pd.to_datetime(test_rows["timestamp"], utc=True)),
            "label": test_rows[LABEL_COLUMN].to_numpy(dtype="float64"),
            "scored": common,
            **arrays,
            **baseline_all,
        }),
    )

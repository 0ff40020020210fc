"""Score models and baselines on exactly the same test rows, the same way, in one place.

Used by every model asset (LightGBM, TFT) and best_release: give it the test rows, {name: P(up) per
test row}, the training rows and {name: P(up) per training row} (`calibration`, NaN where the model
was not asked: callers predict the day before the test day anyway, as context, and align those
probabilities to the training rows); baselines are fitted on the training rows here. Rows where any
model has no test probability (NaN: e.g. a TFT without enough history) are dropped for every model
and baseline alike, so all scores in one table come from identical rows.

Trading rule (core.metrics): each model's and baseline's entry threshold is the (1 - s) quantile of
|P(up) - 0.5| of its own probabilities on the calibration rows (training rows, strictly before the
test day; baselines predict the same rows), s = Scoring.trade_share (LEVIBOT_TRADE_SHARE). The test
rows' probabilities never enter a threshold. Per model the scores hold trades, hit rate, gross edge
per trade and the round-trip fee in bps, the after-fee total and Sharpe, and the facts and the
Markdown table say in words when a model's gross edge per trade is below the round-trip fee.

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
    entry_threshold,
    higher_is_better,
    round_trip_bps,
    trading_rule,
)
from levibot_assets.core.ohlcv import utc_timestamps

PREDICTION_COLUMNS = ("timestamp", "label", "scored")
SCORE_COLUMNS = (*METRICS, "n_trades", "total_return", "hit_rate", "gross_edge_bps", "round_trip_bps", "entry_threshold")


class EvaluationError(ValueError):
    """The test rows cannot be scored (message says why)."""


@dataclass(frozen=True)
class Scoring:
    """The values scoring depends on besides the rows: passed as one value so that callers in
    between (core.release.decision.evaluate_with_champion) hand it on without knowing its parts."""

    horizon: int  # label horizon in bars: the trading rule's holding period
    fee_bps: float  # fee per side
    trade_share: float  # target share of slots traded: sets each model's entry threshold


@dataclass
class Evaluation:
    scores: dict[str, dict[str, float]]  # name -> SCORE_COLUMNS, models first, then baselines
    models: list[str]
    baselines: list[str]
    trading: dict[str, TradingResult] = field(repr=False)
    buy_and_hold: pd.Series = field(repr=False)  # cumulative log return of close over the test rows
    facts: dict[str, Any]  # rows, time ranges, calibration, fees, horizon, who loses after fees
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
        header = ("| model | " + " | ".join(m.label for m in metrics)
                  + " | trades | hit rate | gross bps/trade | fee bps/trade | net log return | θ |")
        lines = [header, "|---|" + "---:|" * (len(metrics) + 6)]
        for name in self.models + self.baselines:
            s = self.scores[name]
            label = f"**{name}**" if name in self.models else f"{name} (baseline)"
            cells = " | ".join(f"{s[m.name]:.{m.digits}f}" for m in metrics)
            lines.append(
                f"| {label} | {cells} | {s['n_trades']} | {_maybe(s['hit_rate'], '.1%')} | "
                f"{_maybe(s['gross_edge_bps'], '+.1f')} | {s['round_trip_bps']:g} | {s['total_return']:+.4f} | "
                f"{_maybe(s['entry_threshold'], '.4f')} |"
            )
        f = self.facts
        lines.append("")
        lines.append(
            f"{f['n_test_rows']} test rows ({f['test_start']} .. {f['test_end']}), {f['n_train_rows']} training rows; "
            f"rule trades every {f['horizon']} bars when |P(up) - 0.5| > θ, each model's θ the "
            f"{100 * (1 - f['trade_share']):.3g}% quantile of its |P(up) - 0.5| on {f['n_calibration_rows']} training rows "
            f"({f['calibration_start']} .. {f['calibration_end']}), to trade about {100 * f['trade_share']:.3g}% of slots "
            f"(fees {f['fee_bps']:g} bps per side)."
        )
        for name, sentence in f["loses_after_fees"].items():
            lines.append(f"- {name}: {sentence}")
        for name in f["not_calibrated"]:
            lines.append(f"- {name}: no probability on any calibration row, so no θ: does not trade")
        return "\n".join(lines)


def _maybe(x: float, spec: str) -> str:
    return format(x, spec) if np.isfinite(x) else "n/a"


def _aligned(probas: Mapping[str, np.ndarray], n: int, what: str) -> dict[str, np.ndarray]:
    arrays = {name: np.asarray(p, dtype="float64") for name, p in probas.items()}
    for name, p in arrays.items():
        if p.shape != (n,):
            raise EvaluationError(f"{name}: {p.shape[0] if p.ndim else 0} probabilities for {n} {what} rows")
    return arrays


def evaluate_models(
    test_rows: pd.DataFrame,
    probas: Mapping[str, np.ndarray],
    train_rows: pd.DataFrame,
    scoring: Scoring,
    baselines: Sequence[str] | None = None,
    *,
    calibration: Mapping[str, np.ndarray],
) -> Evaluation:
    """Score each model's P(up) and the baselines (all, or `baselines`) on the test rows every model scored.

    `calibration` holds each model's P(up) on `train_rows` (NaN where it gave none): the rows where
    some model has one are the calibration rows every entry threshold comes from. A model with none
    of them gets no threshold (NaN) and stays flat; it is still scored on the classification metrics.
    """
    if not probas:
        raise EvaluationError("no model probabilities to evaluate")
    arrays = _aligned(probas, len(test_rows), "test")
    if set(calibration) != set(arrays):
        raise EvaluationError(f"calibration probabilities are for {sorted(calibration)}, the models are {sorted(arrays)}")
    calibration = _aligned(calibration, len(train_rows), "training")
    calibrated = np.logical_or.reduce([np.isfinite(p) for p in calibration.values()])
    if not calibrated.any():
        raise EvaluationError("no model has a probability for any training row: the entry thresholds have no calibration rows")
    common = np.logical_and.reduce([np.isfinite(p) for p in arrays.values()])
    rows = test_rows.loc[common].reset_index(drop=True)
    y = rows[LABEL_COLUMN].to_numpy(dtype="float64")
    if len(np.unique(y)) < 2:
        raise EvaluationError(f"the {len(rows)} test rows every model scored hold a single class")
    if set(arrays) & set(PREDICTION_COLUMNS):
        raise EvaluationError(f"model names {sorted(set(arrays) & set(PREDICTION_COLUMNS))} are reserved column names")
    # baselines predict row by row: fitted once, asked for every test row and every calibration row
    calibration_rows = train_rows.loc[calibrated]
    asked = pd.concat([test_rows, calibration_rows], ignore_index=True)
    baseline_both = baseline_probabilities(train_rows, asked, baselines, scoring.horizon)
    if set(arrays) & set(baseline_both):
        raise EvaluationError(f"model names {sorted(set(arrays) & set(baseline_both))} clash with baseline names")
    baseline_all = {n: p[: len(test_rows)] for n, p in baseline_both.items()}
    # a model with no probability on any calibration row (a champion short of context) gets no θ: flat
    thresholds = {name: entry_threshold(p, scoring.trade_share) if np.isfinite(p).any() else float("nan")
                  for name, p in {**calibration, **{n: p[len(test_rows):] for n, p in baseline_both.items()}}.items()}
    everything = {**{n: p[common] for n, p in arrays.items()}, **{n: p[common] for n, p in baseline_all.items()}}
    scores, trading = {}, {}
    for name, p in everything.items():
        result = trading_rule(rows["timestamp"], rows[FORWARD_RETURN_COLUMN].to_numpy(), p,
                              scoring.horizon, thresholds[name], scoring.fee_bps)
        trading[name] = result
        scores[name] = {**classification_scores(y, p), "sharpe": result.sharpe, "n_trades": result.n_trades,
                        "total_return": result.total_return, "hit_rate": result.hit_rate,
                        "gross_edge_bps": result.gross_edge_bps, "round_trip_bps": result.round_trip_bps,
                        "entry_threshold": thresholds[name]}
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
            "n_calibration_rows": int(calibrated.sum()),
            "calibration_start": str(calibration_rows["timestamp"].iloc[0]),
            "calibration_end": str(calibration_rows["timestamp"].iloc[-1]),
            "trade_share": scoring.trade_share,
            "fee_bps": scoring.fee_bps,
            "round_trip_bps": round_trip_bps(scoring.fee_bps),
            "horizon": scoring.horizon,
            "loses_after_fees": {n: r.fee_verdict() for n, r in trading.items() if r.fee_verdict()},
            "not_calibrated": [n for n, t in thresholds.items() if np.isnan(t)],
        },
        predictions=pd.DataFrame({
            "timestamp": pd.DatetimeIndex(utc_timestamps(test_rows["timestamp"])),
            "label": test_rows[LABEL_COLUMN].to_numpy(dtype="float64"),
            "scored": common,
            **arrays,
            **baseline_all,
        }),
    )

"""Scores against reference computations (sklearn, hand-worked trading examples) and the evaluation table."""
import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as sk

from levibot_assets.core import metrics
from levibot_assets.core.evaluation import EvaluationError, Scoring, evaluate_models
from levibot_assets.core.features import FEATURE_COLUMNS, FEATURE_FRAME_COLUMNS

START = pd.Timestamp("2023-04-10", tz="UTC")


def test_classification_scores_match_sklearn():
    rng = np.random.default_rng(3)
    y = (rng.random(2000) < 0.45).astype(float)
    p = np.round(np.clip(0.45 + 0.2 * (y - 0.5) + rng.normal(scale=0.2, size=2000), 0, 1), 2)  # many ties
    assert metrics.roc_auc(y, p) == pytest.approx(sk.roc_auc_score(y, p), abs=1e-12)
    assert metrics.log_loss(y, p) == pytest.approx(sk.log_loss(y, np.clip(p, 1e-15, 1 - 1e-15)), rel=1e-9)
    assert metrics.brier(y, p) == pytest.approx(sk.brier_score_loss(y, p), rel=1e-12)
    assert metrics.accuracy(y, p) == pytest.approx(sk.accuracy_score(y, p >= 0.5), rel=1e-12)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="both classes"):
        metrics.roc_auc(np.ones(5), np.full(5, 0.7))
    with pytest.raises(ValueError, match="within"):
        metrics.brier(np.array([0.0, 1.0]), np.array([0.2, np.nan]))
    with pytest.raises(ValueError, match="0 or 1"):
        metrics.accuracy(np.array([0.0, 2.0]), np.array([0.2, 0.3]))
    with pytest.raises(ValueError, match="same length"):
        metrics.log_loss(np.array([0.0, 1.0]), np.array([0.2]))
    with pytest.raises(ValueError, match="no edge"):
        metrics.edge_threshold(np.zeros(10), 10)


def test_edge_threshold_is_the_round_trip_cost_over_twice_the_mean_move():
    # mean |fwd| = 0.002, round trip 2 * 10 bps = 0.002 -> trade only when |p - 0.5| > 0.5 (never)
    assert metrics.edge_threshold(np.array([0.001, -0.003]), 10) == pytest.approx(0.5)
    assert metrics.edge_threshold(np.array([0.01, -0.01]), 5) == pytest.approx(0.05)


def test_trading_rule_by_hand():
    """45 minutes, H = 15: slots at 0, 15, 30; rows between slot starts never trade."""
    ts = pd.Series(START + pd.to_timedelta(np.arange(45), unit="min"))
    p = np.full(45, 0.99)  # off-slot rows would trade if they were (wrongly) used
    fwd = np.full(45, 0.05)
    p[0], fwd[0] = 0.9, 0.010  # long: +0.010 - 0.002
    p[15], fwd[15] = 0.2, 0.004  # short: -0.004 - 0.002
    p[30], fwd[30] = 0.55, 0.030  # |0.05| < threshold 0.1: flat
    result = metrics.trading_rule(ts, fwd, p, horizon=15, threshold=0.1, fee_bps=10)
    expected = np.array([0.008, -0.006, 0.0])
    np.testing.assert_allclose(result.net_returns, expected)
    assert list(result.positions) == [1, -1, 0]
    assert result.n_trades == 2
    assert result.total_return == pytest.approx(0.002)
    annualiser = np.sqrt(365 * 24 * 60 / 15)
    assert result.sharpe == pytest.approx(expected.mean() / expected.std(ddof=1) * annualiser)


def test_trading_rule_is_flat_where_the_slot_start_is_missing_or_unscored():
    minutes = np.r_[np.arange(0, 15), np.arange(16, 45)]  # minute 15 missing: slot 2 has no decision row
    ts = pd.Series(START + pd.to_timedelta(minutes, unit="min"))
    p = np.full(len(ts), 0.9)
    p[minutes == 30] = np.nan
    result = metrics.trading_rule(ts, np.full(len(ts), 0.01), p, horizon=15, threshold=0.1, fee_bps=10)
    assert list(result.positions) == [1, 0, 0]
    assert result.n_trades == 1


def test_a_rule_that_never_trades_has_zero_sharpe_and_pays_nothing():
    ts = pd.Series(START + pd.to_timedelta(np.arange(120), unit="min"))
    result = metrics.trading_rule(ts, np.full(120, 0.01), np.full(120, 0.6), horizon=15, threshold=0.2, fee_bps=10)
    assert result.n_trades == 0 and result.sharpe == 0.0 and result.total_return == 0.0


def _rows(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"timestamp": START + pd.to_timedelta(np.arange(n), unit="min")})
    frame["close"] = 100 * np.exp(np.cumsum(rng.normal(scale=1e-3, size=n)))
    for column in FEATURE_COLUMNS:
        frame[column] = rng.normal(size=n)
    frame["fwd_return"] = rng.normal(scale=2e-3, size=n)
    frame["label"] = (frame["fwd_return"] > 0).astype(float)
    frame["label_available"] = True
    return frame[FEATURE_FRAME_COLUMNS]


def test_evaluation_scores_every_model_and_baseline_on_the_same_rows():
    train, test = _rows(3000, 1), _rows(600, 2)
    informed = np.clip(0.5 + 0.3 * (test["label"].to_numpy() - 0.5), 0, 1)
    partial = informed.copy()
    partial[:20] = np.nan  # a model without context for the first rows
    evaluation = evaluate_models(test, {"good": informed, "partial": partial}, train, Scoring(horizon=15, fee_bps=10.0))
    assert evaluation.models == ["good", "partial"]
    assert evaluation.baselines == ["majority", "last_return_sign", "logistic"]
    assert evaluation.facts["n_test_rows"] == 580 and evaluation.facts["n_test_rows_dropped"] == 20
    rows_y = test["label"].to_numpy()[20:]
    assert evaluation.scores["good"]["auc"] == pytest.approx(sk.roc_auc_score(rows_y, informed[20:]))
    assert evaluation.scores["majority"]["auc"] == pytest.approx(0.5)
    assert evaluation.best_baseline("auc")[1] < evaluation.scores["good"]["auc"]
    table = evaluation.markdown_table()
    for name in ["good", "partial", "majority", "last_return_sign", "logistic"]:
        assert name in table
    as_dict = evaluation.as_dict()
    assert as_dict["best_baseline_auc"] == evaluation.best_baseline("auc")[1]
    assert set(as_dict["scores"]["good"]) == {"auc", "accuracy", "log_loss", "brier", "sharpe", "n_trades", "total_return"}


def test_evaluation_refuses_mismatched_or_one_class_rows():
    train, test = _rows(3000, 1), _rows(200, 2)
    with pytest.raises(EvaluationError, match="200 test rows"):
        evaluate_models(test, {"m": np.full(10, 0.5)}, train, Scoring(horizon=15, fee_bps=10.0))
    one_class = test.assign(label=1.0)
    with pytest.raises(EvaluationError, match="single class"):
        evaluate_models(one_class, {"m": np.full(200, 0.5)}, train, Scoring(horizon=15, fee_bps=10.0))

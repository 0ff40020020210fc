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
    with pytest.raises(ValueError, match="no finite calibration probability"):
        metrics.entry_threshold(np.full(10, np.nan), 0.1)
    with pytest.raises(ValueError, match="share of slots"):
        metrics.entry_threshold(np.full(10, 0.6), 0.0)


def test_entry_threshold_is_the_quantile_of_the_calibration_conviction():
    # |p - 0.5| = 0.0, 0.1, 0.2, 0.3, 0.4 (NaN skipped): trading the top 25 % means |p - 0.5| > 0.3
    p = np.array([0.5, 0.4, 0.7, 0.2, 0.9, np.nan])
    assert metrics.entry_threshold(p, 0.25) == pytest.approx(0.3)
    assert metrics.entry_threshold(p, 1.0) == pytest.approx(0.0)


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
    # gross: +0.010 (long, right), -0.004 (short into a rise, wrong)
    assert result.hit_rate == pytest.approx(0.5)
    assert result.gross_edge_bps == pytest.approx((100 - 40) / 2)
    assert result.round_trip_bps == 20
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
    assert np.isnan(result.hit_rate) and np.isnan(result.gross_edge_bps)
    assert result.fee_verdict() is None


def test_the_fee_verdict_speaks_only_when_the_gross_edge_is_below_the_round_trip_fee():
    ts = pd.Series(START + pd.to_timedelta(np.arange(60), unit="min"))
    p = np.full(60, 0.8)
    small = metrics.trading_rule(ts, np.full(60, 0.0005), p, horizon=15, threshold=0.1, fee_bps=10)
    assert small.gross_edge_bps == pytest.approx(5.0) and small.n_trades == 4
    assert small.fee_verdict() == "gross edge 5.0 bps per trade < round-trip cost 20 bps: loses after fees"
    large = metrics.trading_rule(ts, np.full(60, 0.0030), p, horizon=15, threshold=0.1, fee_bps=10)
    assert large.gross_edge_bps == pytest.approx(30.0) and large.fee_verdict() is None


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


SCORING = Scoring(horizon=15, fee_bps=10.0, trade_share=0.1)


def _last_day(train: pd.DataFrame, proba: np.ndarray) -> np.ndarray:
    """P(up) on the training rows, NaN but on the last 1440 (the day before the test day, as callers give it)."""
    out = np.full(len(train), np.nan)
    out[-1440:] = proba[-1440:]
    return out


def _spread(rows: pd.DataFrame, seed: int) -> np.ndarray:
    """An uninformed model whose P(up) is spread over 0.3 .. 0.7."""
    return np.random.default_rng(seed).uniform(0.3, 0.7, size=len(rows))


def test_evaluation_scores_every_model_and_baseline_on_the_same_rows():
    train, test = _rows(3000, 1), _rows(600, 2)
    informed = np.clip(0.5 + 0.3 * (test["label"].to_numpy() - 0.5), 0, 1)
    partial = informed.copy()
    partial[:20] = np.nan  # a model without context for the first rows
    calibration = {name: _last_day(train, np.clip(0.5 + 0.3 * (train["label"].to_numpy() - 0.5), 0, 1))
                   for name in ("good", "partial")}
    evaluation = evaluate_models(test, {"good": informed, "partial": partial}, train, SCORING, calibration=calibration)
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
    assert set(as_dict["scores"]["good"]) == {"auc", "accuracy", "log_loss", "brier", "sharpe", "n_trades", "total_return",
                                              "hit_rate", "gross_edge_bps", "round_trip_bps", "entry_threshold"}
    assert evaluation.facts["n_calibration_rows"] == 1440
    assert evaluation.facts["calibration_start"] == str(train["timestamp"].iloc[-1440])


def test_evaluation_refuses_mismatched_or_one_class_rows():
    train, test = _rows(3000, 1), _rows(200, 2)
    calibration = {"m": _last_day(train, np.full(3000, 0.5))}
    with pytest.raises(EvaluationError, match="200 test rows"):
        evaluate_models(test, {"m": np.full(10, 0.5)}, train, SCORING, calibration=calibration)
    one_class = test.assign(label=1.0)
    with pytest.raises(EvaluationError, match="single class"):
        evaluate_models(one_class, {"m": np.full(200, 0.5)}, train, SCORING, calibration=calibration)
    with pytest.raises(EvaluationError, match="3000 training rows"):
        evaluate_models(test, {"m": np.full(200, 0.5)}, train, SCORING, calibration={"m": np.full(10, 0.5)})
    with pytest.raises(EvaluationError, match=r"calibration probabilities are for \['x'\]"):
        evaluate_models(test, {"m": np.full(200, 0.5)}, train, SCORING, calibration={"x": np.full(3000, 0.5)})
    with pytest.raises(EvaluationError, match="no calibration rows"):
        evaluate_models(test, {"m": np.full(200, 0.5)}, train, SCORING, calibration={"m": np.full(3000, np.nan)})


def test_the_entry_threshold_comes_from_the_calibration_rows_only():
    train, test = _rows(3000, 1), _rows(600, 2)
    calibration = {"m": _last_day(train, _spread(train, 5))}
    first = evaluate_models(test, {"m": _spread(test, 6)}, train, SCORING, calibration=calibration)
    other_test_day = evaluate_models(test, {"m": np.clip(_spread(test, 7) * 1.5 - 0.25, 0, 1)}, train, SCORING,
                                     calibration=calibration)
    theta = first.scores["m"]["entry_threshold"]
    assert theta == pytest.approx(np.quantile(np.abs(calibration["m"][-1440:] - 0.5), 0.9))
    assert other_test_day.scores["m"]["entry_threshold"] == theta
    assert other_test_day.scores["m"]["n_trades"] != first.scores["m"]["n_trades"]
    # the rows before the last day were not predicted: NaN there, so they cannot move the quantile either
    other_calibration = {"m": _last_day(train, _spread(train, 8))}
    moved = evaluate_models(test, {"m": _spread(test, 6)}, train, SCORING, calibration=other_calibration)
    assert moved.scores["m"]["entry_threshold"] != theta
    # baselines get theirs the same way: fitted on the training rows, predicted on the calibration rows
    assert {b: first.scores[b]["entry_threshold"] for b in first.baselines} == \
        {b: moved.scores[b]["entry_threshold"] for b in moved.baselines}


def test_a_model_with_spread_trades_about_the_target_share_of_slots():
    train, test = _rows(3000, 1), _rows(1440, 2)
    slots = 1440 // 15
    for share in (0.1, 0.5):
        evaluation = evaluate_models(test, {"m": _spread(test, 6)}, train,
                                     Scoring(horizon=15, fee_bps=10.0, trade_share=share),
                                     calibration={"m": _last_day(train, _spread(train, 5))})
        assert 0.5 * share * slots <= evaluation.scores["m"]["n_trades"] <= 1.5 * share * slots
    # the majority baseline says the same for every row: no slot is more convincing, it never trades
    assert evaluation.scores["majority"]["n_trades"] == 0


def test_the_table_says_when_the_gross_edge_is_below_the_round_trip_fee():
    train, test = _rows(3000, 1), _rows(600, 2)
    def seer(rows):  # knows the direction, with some spread in its conviction: earns |fwd| ~ 16 bps per trade
        return 0.5 + (rows["label"].to_numpy() - 0.5) * (_spread(rows, 9) - 0.25)

    calibration = {"seer": _last_day(train, seer(train)), "backwards": _last_day(train, 1 - seer(train))}
    cheap = evaluate_models(test, {"seer": seer(test), "backwards": 1 - seer(test)}, train,
                            Scoring(horizon=15, fee_bps=1.0, trade_share=0.5), calibration=calibration)
    scores = cheap.scores["seer"]
    assert scores["hit_rate"] == 1.0 and scores["gross_edge_bps"] > scores["round_trip_bps"] == 2
    assert "seer" not in cheap.facts["loses_after_fees"]
    assert "seer: gross edge" not in cheap.markdown_table()
    backwards = cheap.scores["backwards"]
    assert backwards["n_trades"] > 0 and backwards["hit_rate"] == 0.0 and backwards["gross_edge_bps"] < 0
    sentence = f"gross edge {backwards['gross_edge_bps']:.1f} bps per trade < round-trip cost 2 bps: loses after fees"
    assert cheap.facts["loses_after_fees"]["backwards"] == sentence
    assert f"- backwards: {sentence}" in cheap.markdown_table()
    dear = evaluate_models(test, {"seer": seer(test)}, train, Scoring(horizon=15, fee_bps=20.0, trade_share=0.5),
                           calibration={"seer": calibration["seer"]})
    assert dear.facts["loses_after_fees"]["seer"].endswith("< round-trip cost 40 bps: loses after fees")
    assert dear.scores["seer"]["total_return"] < 0 < cheap.scores["seer"]["total_return"]


def test_a_model_without_calibration_probabilities_is_scored_but_never_trades():
    train, test = _rows(3000, 1), _rows(600, 2)
    calibration = {"m": _last_day(train, _spread(train, 5)), "blind": np.full(3000, np.nan)}
    evaluation = evaluate_models(test, {"m": _spread(test, 6), "blind": _spread(test, 7)}, train, SCORING,
                                 calibration=calibration)
    assert evaluation.scores["m"]["n_trades"] > 0
    assert evaluation.scores["blind"]["n_trades"] == 0 and np.isnan(evaluation.scores["blind"]["entry_threshold"])
    assert evaluation.scores["blind"]["auc"] == pytest.approx(sk.roc_auc_score(test["label"], _spread(test, 7)))
    assert evaluation.facts["not_calibrated"] == ["blind"]
    assert "- blind: no probability on any calibration row" in evaluation.markdown_table()

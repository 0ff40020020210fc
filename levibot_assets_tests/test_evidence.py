"""Decisions on evidence: weighted scores, the paired block bootstrap, records over trailing days,
and a decision recomputed from the stored predictions alone."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from levibot_assets.core.dataset import split_window
from levibot_assets.core.layout import DataLayout
from levibot_assets.core.metrics import classification_scores, roc_auc
from levibot_assets.core.predictions import predictions_frame, read_predictions, recent_predictions, write_predictions
from levibot_assets.core.release.decision import CHAMPION, Champion, DecisionPolicy, decide, evaluate_with_champion
from levibot_assets.core.release.deploy import publish
from levibot_assets.core.release.evidence import (
    block_ids, gather_evidence, paired_comparison, weighted_score,
)
from levibot_assets.core.evaluation import Scoring
from levibot_assets_tests import release_fixtures as rf

SCORING = Scoring(horizon=15, fee_bps=10.0, trade_share=0.02)


@pytest.mark.parametrize("metric", ["auc", "accuracy", "brier", "log_loss"])
def test_weighted_scores_equal_the_scores_of_repeated_rows(metric):
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 300).astype(float)
    p = np.round(rng.uniform(0, 1, 300), 2)  # ties included
    w = rng.integers(0, 4, 300)
    w[:2] = 1
    repeated = np.repeat(np.arange(300), w)
    expected = classification_scores(y[repeated], p[repeated])[metric]
    assert weighted_score(metric, y, p, w[None, :].astype(float))[0] == pytest.approx(expected)
    assert weighted_score(metric, y, p, np.ones((1, 300)))[0] == pytest.approx(classification_scores(y, p)[metric])


def _rows(n_days: int, start="2025-10-01"):
    ts = pd.date_range(start, periods=n_days * 1440, freq="min", tz="UTC")
    return pd.DataFrame({"timestamp": ts})


def test_paired_bootstrap_separates_a_real_advantage_from_noise():
    rng = np.random.default_rng(7)
    rows = _rows(3)
    y = rng.integers(0, 2, len(rows)).astype(float)
    signal = y + rng.normal(0, 3.0, len(rows))
    good = 1 / (1 + np.exp(-signal))
    coin = rng.uniform(0, 1, len(rows))
    blocks = block_ids(rows)
    assert blocks.max() + 1 == 3 * 24
    clear = paired_comparison("auc", y, good, coin, blocks, 0.9)
    assert clear.advantage == pytest.approx(roc_auc(y, good) - roc_auc(y, coin))
    assert clear.ci_low > 0 and clear.holds_up(0.0) and not clear.holds_up(clear.ci_low + 0.001)
    same = paired_comparison("auc", y, coin, coin, blocks, 0.9)
    assert same.advantage == 0 and not same.holds_up(0.0)
    other_coin = rng.uniform(0, 1, len(rows))
    noise = paired_comparison("auc", y, other_coin, coin, blocks, 0.9)
    assert noise.ci_low < 0 < noise.ci_high  # two coins: no advantage holds up
    calibrated = 1 / (1 + np.exp(-(y - 0.5) - rng.normal(0, 0.5, len(rows))))
    lower = paired_comparison("log_loss", y, calibrated, np.full(len(rows), 0.5), blocks, 0.9)
    assert lower.advantage > 0 and lower.challenger_score < lower.champion_score  # lower log loss is the advantage


def _predictions(day: str, p_by_model: dict, y: np.ndarray, champion_release: str | None = None) -> pd.DataFrame:
    ts = pd.date_range(day, periods=len(y), freq="min", tz="UTC")
    parts = []
    for name, p in p_by_model.items():
        role = "baseline" if name == "majority" else (CHAMPION if name == CHAMPION else "candidate")
        parts.append(pd.DataFrame({"timestamp": ts, "model": name, "role": role, "p_up": p, "label": y, "scored": True,
                                   "release": champion_release if name == CHAMPION else None}))
    return pd.concat(parts, ignore_index=True)


def test_the_challenger_is_chosen_on_the_record_not_on_one_day():
    rng = np.random.default_rng(7)
    frames = {}
    for i, day in enumerate(pd.date_range("2025-10-01", periods=5).strftime("%Y-%m-%d")):
        y = rng.integers(0, 2, 1440).astype(float)
        steady = 1 / (1 + np.exp(-(y - 0.5) * 1.0 - rng.normal(0, 1.5, 1440)))
        # "lucky" wins only on the last day, by far; loses (a coin) on the four before
        lucky = 1 / (1 + np.exp(-(y - 0.5) * 3.0 - rng.normal(0, 1.5, 1440))) if i == 4 else rng.uniform(0, 1, 1440)
        frames[day] = _predictions(day, {"steady": steady, "lucky": lucky, "majority": np.full(1440, 0.5)}, y)
    today = frames["2025-10-05"]
    one_day = gather_evidence({"2025-10-05": today}, ["steady", "lucky"], "auc", 0.9, None)
    five_days = gather_evidence(frames, ["steady", "lucky"], "auc", 0.9, None)
    assert one_day.challenger == "lucky" and five_days.challenger == "steady"
    assert five_days.days == sorted(frames) and five_days.rows == 5 * 1440
    assert five_days.baselines["majority"] == pytest.approx(0.5)
    assert five_days.by_day["2025-10-05"]["lucky"] > five_days.by_day["2025-10-05"]["steady"]


def test_a_decision_is_recomputed_from_the_stored_predictions(tmp_path, monkeypatch):
    """Three days with the same champion in service; the stored files alone give back the decision's
    difference and its interval."""
    rf.register_skill(monkeypatch)
    layout = DataLayout(tmp_path / "data")
    champion_model = rf.SkillClassifier(0.4, seed=1)
    publish(layout, rf.released_decision("2025-10-01", rf.SYMBOL, champion_model))
    policy = DecisionPolicy("auc", 0.0, record_days=10, confidence=0.9)
    for day in (dt.date(2025, 10, 2), dt.date(2025, 10, 3), dt.date(2025, 10, 4)):
        data = split_window(rf.feature_window(rf.SYMBOL, day), day, rf.HORIZON)
        candidates = {"skill": rf.SkillClassifier(1.0, seed=2)}
        evaluation, error = evaluate_with_champion(data, candidates, champion_model, SCORING)
        champion = Champion("2025-10-01", "skill", "2025-10-01@x", evaluation.scores[CHAMPION], error)
        history = recent_predictions(layout, rf.SYMBOL, day, policy.record_days - 1)
        decision = decide(day, rf.SYMBOL, {t: rf.trained(m) for t, m in candidates.items()}, evaluation, champion,
                          policy, [], history)
        write_predictions(layout, day, rf.SYMBOL, predictions_frame(evaluation, "2025-10-01"))
    comparison = decision.evidence["comparison"]
    assert comparison["days"] == ["2025-10-02", "2025-10-03", "2025-10-04"]
    assert decision.released and comparison["ci_low"] > 0, decision.reason
    # recompute from the files: champion rows released 2025-10-01 against the challenger's rows, same rows
    stored = pd.concat([read_predictions(layout, d, rf.SYMBOL).assign(day=d) for d in comparison["days"]])
    stored = stored.loc[stored["scored"]]
    champ = stored.loc[stored["model"] == CHAMPION].set_index(["day", "timestamp"])
    chall = stored.loc[stored["model"] == "skill"].set_index(["day", "timestamp"]).loc[champ.index]
    y = champ["label"].to_numpy()
    assert len(y) == comparison["rows"]
    advantage = roc_auc(y, chall["p_up"].to_numpy()) - roc_auc(y, champ["p_up"].to_numpy())
    assert comparison["advantage"] == pytest.approx(advantage)
    again = paired_comparison("auc", y, chall["p_up"].to_numpy(), champ["p_up"].to_numpy(),
                              block_ids(champ.reset_index()), 0.9)
    assert (again.ci_low, again.ci_high) == pytest.approx((comparison["ci_low"], comparison["ci_high"]))
    assert f"[{comparison['ci_low']:+.4f}, {comparison['ci_high']:+.4f}]" in decision.reason


def test_the_preferred_family_stays_the_challenger_unless_beaten_beyond_noise():
    rng = np.random.default_rng(11)
    frames = {}
    for day in pd.date_range("2025-10-01", periods=5).strftime("%Y-%m-%d"):
        y = rng.integers(0, 2, 1440).astype(float)
        base = (y - 0.5) * 0.6 + rng.normal(0, 1.5, 1440)
        preferred = 1 / (1 + np.exp(-base))
        close = 1 / (1 + np.exp(-(base + rng.normal(0, 0.3, 1440))))  # the same skill plus noise
        strong = 1 / (1 + np.exp(-((y - 0.5) * 3.0 + rng.normal(0, 1.5, 1440))))  # far better
        frames[day] = _predictions(day, {"close": close, "avg": preferred, "strong": strong,
                                         "majority": np.full(1440, 0.5)}, y)
    noise = {d: f.loc[f["model"] != "strong"] for d, f in frames.items()}
    kept = gather_evidence(noise, ["close", "avg"], "auc", 0.9, None, preferred="avg")
    assert kept.challenger == "avg"
    if kept.versus_preferred is not None:  # "close" led by noise: its lead's interval reaches below 0
        assert kept.versus_preferred.challenger == "close" and not kept.versus_preferred.holds_up(0.0)
    beaten = gather_evidence(frames, ["close", "avg", "strong"], "auc", 0.9, None, preferred="avg")
    assert beaten.challenger == "strong" and beaten.versus_preferred.holds_up(0.0)

"""Predictions as data, the live score, and the logistic family as a releasable candidate.

Real LightGBM and logistic fits on synthetic feature windows; best_release through dagster.materialize.
"""
from __future__ import annotations

import datetime as dt
import json
import os

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from levibot_assets_tests.graph import best_release
from levibot_assets.cli import main
from levibot_assets.core.baselines import LOGISTIC_C_GRID, LOGISTIC_FILE, LogisticClassifier, fit_logistic
from levibot_assets.core.evaluation import Scoring, evaluate_models
from levibot_assets.core.features import FEATURE_COLUMNS
from levibot_assets.core.integrity import sha256_file
from levibot_assets.core.layout import DataLayout
from levibot_assets.core.metrics import roc_auc
from levibot_assets.core.model_api import TrainedModel, model_class
from levibot_assets.core.predictions import (
    COLUMNS,
    live_score,
    predictions_frame,
    read_predictions,
    write_predictions,
)
from levibot_assets.core.release.decision import DecisionPolicy, decide, evaluate_with_champion
from levibot_assets.core.release.deploy import current_release_date, publish
from levibot_assets.core.release.store import ReleaseError, load_release, verify_release
from levibot_assets.core.tables import atomic_write_parquet
from levibot_assets.partitions import partition_key
from levibot_assets.resources.pipeline import PipelineConfig
from levibot_assets.settings import Settings
from levibot_assets.resources.storage import StorageResource
from levibot_assets.serving import load_current
from levibot_assets_tests import release_fixtures as rf
from levibot_assets_tests.recorded import load_decision, scores_from_predictions

SCORING = Scoring(horizon=15, fee_bps=10.0, trade_share=0.1)  # the default label horizon, fee and share
D1, D2 = dt.date(2025, 10, 3), rf.TEST_DATE  # 2025-10-03, 2025-10-04


@pytest.fixture(scope="module")
def data():
    return rf.split()


@pytest.fixture(scope="module")
def logistic(data) -> LogisticClassifier:
    return fit_logistic(data.train, rf.HORIZON)


# ------------------------------------------------------------------------- the logistic family


def test_logistic_is_chosen_on_training_rows_and_matches_sklearn(data, logistic):
    assert logistic.C in LOGISTIC_C_GRID
    assert set(logistic.facts["fold_auc_by_C"]) == {str(c) for c in LOGISTIC_C_GRID}
    assert logistic.facts["train_rows"] == len(data.train) and "walk-forward" in logistic.facts["selection"]
    best = max(logistic.facts["fold_auc_by_C"].values())
    assert logistic.facts["fold_auc_by_C"][str(logistic.C)] == best
    # the L2 optimum, whichever solver reaches it: lbfgs run to a far tighter tolerance than its default
    reference = make_pipeline(StandardScaler(), LogisticRegression(C=logistic.C, tol=1e-12, max_iter=100_000))
    reference.fit(data.train[FEATURE_COLUMNS].to_numpy(), data.train["label"].to_numpy().astype(int))
    expected = reference.predict_proba(data.test[FEATURE_COLUMNS].to_numpy())[:, 1]
    np.testing.assert_allclose(logistic.predict_proba(data.test), expected, rtol=0, atol=1e-5)
    # the folds that chose C are purged walk-forward splits of the training rows only
    shuffled = fit_logistic(data.train.sample(frac=1.0, random_state=1), rf.HORIZON)
    np.testing.assert_array_equal(shuffled.coef, logistic.coef)


def test_logistic_fit_is_sklearns_optimum_and_refuses_a_single_class():
    """The numpy Newton fit reaches the optimum of sklearn's objective (its own newton-cholesky solver
    as the reference), for every C of the grid, with the intercept unpenalised."""
    from levibot_assets.core.baselines import _newton_logistic

    rng = np.random.default_rng(3)
    z = rng.normal(size=(3000, 5))
    y = (z @ np.array([1.0, -0.5, 0.0, 0.2, 2.0]) + 1.5 + rng.logistic(size=3000) > 0).astype(int)
    for C in LOGISTIC_C_GRID:
        coef, intercept = _newton_logistic(z, y, C)
        reference = LogisticRegression(C=C, solver="newton-cholesky", tol=1e-10, max_iter=1000).fit(z, y)
        np.testing.assert_allclose(coef, reference.coef_[0], rtol=0, atol=1e-9)
        assert intercept == pytest.approx(reference.intercept_[0], abs=1e-9)
    with pytest.raises(ValueError, match="needs both classes"):
        _newton_logistic(z, np.ones(3000), 1.0)


def test_logistic_release_is_json_hashed_and_loaded_by_the_serving_loader(tmp_path, data, logistic):
    assert model_class("logistic") is LogisticClassifier
    layout = DataLayout(tmp_path / "data")
    publish(layout, rf.released_decision(rf.TEST_DATE, rf.SYMBOL, logistic))
    release_dir = layout.release_dir(rf.TEST_DATE, rf.SYMBOL)
    manifest, _ = verify_release(release_dir)
    assert manifest["model_type"] == "logistic"
    assert manifest["files"] == {LOGISTIC_FILE: {"sha256": sha256_file(release_dir / LOGISTIC_FILE)}}
    stored = json.loads((release_dir / LOGISTIC_FILE).read_text())  # plain numbers, nothing to unpickle
    assert stored["features"] == FEATURE_COLUMNS and len(stored["coef"]) == len(FEATURE_COLUMNS)
    served = load_current(rf.SYMBOL, layout.root)
    assert served.model_type == "logistic"
    np.testing.assert_array_equal(served.predict_proba(data.context), logistic.predict_proba(data.context))
    assert os.readlink(layout.best_link("logistic", ".json")) == f"releases/{rf.TEST_DATE}/{rf.SYMBOL}/{LOGISTIC_FILE}"

    tampered = dict(stored, intercept=stored["intercept"] + 1.0)
    (release_dir / LOGISTIC_FILE).write_text(json.dumps(tampered))
    with pytest.raises(ReleaseError, match="sha256"):
        load_release(release_dir)


def test_a_baseline_that_is_a_candidate_is_not_a_baseline_of_the_rule(data, logistic):
    lgbm = rf.lgbm(data)
    evaluation, _ = evaluate_with_champion(data, {"lgbm": lgbm, "logistic": logistic}, None, SCORING)
    assert evaluation.models == ["lgbm", "logistic"]
    assert evaluation.baselines == ["majority", "last_return_sign"]
    trained = {"lgbm": TrainedModel(lgbm, {}), "logistic": TrainedModel(logistic, {"params": logistic.params()})}
    decision = decide(rf.TEST_DATE, rf.SYMBOL, trained, evaluation, None, DecisionPolicy("auc"))
    assert decision.scores["best_baseline_name"] in ("majority", "last_return_sign")
    assert decision.scores["best_baseline"] == max(evaluation.scores[b]["auc"] for b in ("majority", "last_return_sign"))
    # where logistic is not a candidate (the model assets), it is still shown as a baseline, fitted the same way
    alone = evaluate_models(data.test, {"lgbm": lgbm.predict_proba(data.test)}, data.train, SCORING,
                            calibration={"lgbm": lgbm.predict_proba(data.train)})
    assert alone.baselines == ["majority", "last_return_sign", "logistic"]
    assert alone.scores["logistic"]["auc"] == evaluation.scores["logistic"]["auc"]


# ------------------------------------------------------------------------- predictions as data


def test_every_score_is_recomputed_from_the_stored_predictions(tmp_path, data):
    informed = rf.SkillClassifier(1.0).predict_proba(data.test)
    partial = rf.SkillClassifier(0.5, seed=3).predict_proba(data.test)
    partial[:40] = np.nan  # a model short of context: those rows are scored by nobody
    calibration = {"a": rf.SkillClassifier(1.0).predict_proba(data.train),
                   "b": rf.SkillClassifier(0.5, seed=3).predict_proba(data.train)}
    evaluation = evaluate_models(data.test, {"a": informed, "b": partial}, data.train, SCORING, calibration=calibration)
    frame = predictions_frame(evaluation)
    layout = DataLayout(tmp_path)
    path = write_predictions(layout, rf.TEST_DATE, rf.SYMBOL, frame)
    assert path == layout.predictions(rf.TEST_DATE, rf.SYMBOL) == tmp_path / "predictions" / "2025-10-04" / "BTCUSDT.parquet"
    table = pq.read_table(path)  # plain parquet
    assert table.column_names == list(COLUMNS)
    assert str(table.schema.field("timestamp").type) == "timestamp[ns, tz=UTC]"
    assert str(table.schema.field("p_up").type) == "double"
    back = read_predictions(layout, rf.TEST_DATE, rf.SYMBOL)
    assert len(back) == 5 * len(data.test) and int(back["scored"].sum()) == 5 * (len(data.test) - 40)
    assert back.loc[back["model"] == "b", "p_up"].isna().sum() == 40
    recomputed = scores_from_predictions(back)
    assert set(recomputed) == {"a", "b", "majority", "last_return_sign", "logistic"}
    for name, auc in recomputed.items():
        assert auc == evaluation.scores[name]["auc"], name
    rows = back.loc[(back["model"] == "a") & back["scored"]]
    assert roc_auc_score(rows["label"], rows["p_up"]) == pytest.approx(evaluation.scores["a"]["auc"], abs=1e-12)


def _day(date: str, label: np.ndarray, champion: np.ndarray | None, release: str | None) -> pd.DataFrame:
    ts = pd.date_range(date, periods=len(label), freq="min", tz="UTC")
    parts = [pd.DataFrame({"timestamp": ts, "model": "lgbm", "role": "candidate", "p_up": 0.5, "label": label,
                           "scored": True, "release": None})]
    if champion is not None:
        parts.append(pd.DataFrame({"timestamp": ts, "model": "champion", "role": "champion", "p_up": champion,
                                   "label": label, "scored": True, "release": release}))
    return pd.concat(parts, ignore_index=True)


def test_live_score_counts_only_days_with_an_earlier_release_in_service(tmp_path):
    layout = DataLayout(tmp_path)
    rng = np.random.default_rng(0)
    y = {d: rng.integers(0, 2, 300).astype(float) for d in ("2025-10-01", "2025-10-02", "2025-10-03", "2025-10-04")}
    p = {d: np.clip(0.5 + 0.3 * (y[d] - 0.5) + rng.normal(0, 0.3, 300), 0, 1) for d in y}
    write_predictions(layout, "2025-10-01", "X", _day("2025-10-01", y["2025-10-01"], None, None))  # nothing in service
    write_predictions(layout, "2025-10-02", "X", _day("2025-10-02", y["2025-10-02"], p["2025-10-02"], "2025-10-01"))
    write_predictions(layout, "2025-10-03", "X", _day("2025-10-03", y["2025-10-03"], p["2025-10-03"], "2025-10-03"))  # re-run
    write_predictions(layout, "2025-10-04", "X", _day("2025-10-04", y["2025-10-04"], p["2025-10-04"], "2025-10-02"))

    live = live_score(layout, "X")
    assert live.days == ["2025-10-01", "2025-10-02", "2025-10-03", "2025-10-04"]
    assert live.by_day["2025-10-01"] is None and live.by_day["2025-10-03"] is None  # missing, not 0.5
    assert live.by_day["2025-10-02"] == roc_auc(y["2025-10-02"], p["2025-10-02"])
    assert live.days_counted == 2 and live.days_missing == 2 and live.rows == 600
    pooled = roc_auc(np.concatenate([y["2025-10-02"], y["2025-10-04"]]), np.concatenate([p["2025-10-02"], p["2025-10-04"]]))
    assert live.pooled_auc == pooled and live.day_auc == live.by_day["2025-10-04"]
    until = live_score(layout, "X", until="2025-10-03", window=2)
    assert until.days == ["2025-10-02", "2025-10-03"] and until.pooled_auc == live.by_day["2025-10-02"]
    assert until.day_auc is None
    assert live_score(layout, "OTHER").days == [] and live_score(layout, "OTHER").pooled_auc is None


def test_daily_auc_table_puts_the_live_score_beside_candidates_and_baselines(tmp_path):
    from levibot_assets.core.predictions import LIVE, POOLED, daily_auc_table
    from levibot_assets.core.reports import daily_auc_png

    layout = DataLayout(tmp_path)
    rng = np.random.default_rng(1)
    days = ["2025-10-01", "2025-10-02", "2025-10-03"]
    y = {d: rng.integers(0, 2, 200).astype(float) for d in days}
    p = {d: np.clip(0.5 + 0.2 * (y[d] - 0.5) + rng.normal(0, 0.3, 200), 0, 1) for d in days}
    q = {d: rng.random(200) for d in days}
    for d, release in zip(days, (None, "2025-10-01", "2025-10-03")):  # in service on 10-02 only
        frame = _day(d, y[d], p[d] if release else None, release)
        baseline = frame.loc[frame["model"] == "lgbm"].assign(model="majority", role="baseline", p_up=q[d])
        write_predictions(layout, d, "X", pd.concat([frame, baseline], ignore_index=True))

    table = daily_auc_table(layout, "X")
    assert list(table.index) == [*days, POOLED] and list(table.columns) == [LIVE, "lgbm", "majority"]
    assert table.attrs["baselines"] == ["majority"]
    assert np.isnan(table.loc["2025-10-01", LIVE]) and np.isnan(table.loc["2025-10-03", LIVE])  # missing, not 0.5
    assert table.loc["2025-10-02", LIVE] == table.loc[POOLED, LIVE] == live_score(layout, "X").pooled_auc
    assert table.loc["2025-10-03", "majority"] == roc_auc(y["2025-10-03"], q["2025-10-03"])
    assert table.loc[POOLED, "majority"] == roc_auc(np.concatenate([y[d] for d in days]), np.concatenate([q[d] for d in days]))
    assert list(daily_auc_table(layout, "X", until="2025-10-02", window=1).index) == ["2025-10-02", POOLED]
    assert daily_auc_table(layout, "OTHER").empty
    assert daily_auc_png(table, "X").startswith(b"\x89PNG")


# ------------------------------------------------------------------------- best_release through Dagster


def _materialize(storage: StorageResource, date: dt.date, instance) -> dict:
    result = dg.materialize([best_release], partition_key=partition_key(date, rf.SYMBOL),
                            resources={"storage": storage, "pipeline": PipelineConfig.from_settings(Settings())}, instance=instance)
    assert result.success
    return result.asset_materializations_for_node("best_release")[0].metadata


def test_best_release_stores_predictions_scores_the_live_model_and_offers_logistic(tmp_path, monkeypatch, capsys):
    rf.register_skill(monkeypatch)
    rf.skill_in_slot(monkeypatch, "tft")
    layout = DataLayout(tmp_path / "data")
    storage = StorageResource(data_dir=str(layout.root))
    for day, frame in rf.feature_window(days=4).items():
        atomic_write_parquet(layout.table("features", day, rf.SYMBOL), frame)
    for date, skill in ((D1, 1.5), (D2, 2.5)):
        model_dir = layout.model_dir(date, rf.SYMBOL)
        rf.lgbm(rf.split(test_date=date)).save(model_dir)
        rf.SkillClassifier(skill).save(model_dir)
        (model_dir / "lgbm_metrics.json").write_text(json.dumps({"best_params": {"num_leaves": 7}}))
        (model_dir / "tft_metrics.json").write_text("{}")

    recorded = []  # (decision, predictions) as each run left them
    with dg.instance_for_test() as instance:
        meta1 = _materialize(storage, D1, instance)
        recorded.append((load_decision(layout, D1, rf.SYMBOL), read_predictions(layout, D1, rf.SYMBOL)))
        meta2 = _materialize(storage, D2, instance)
        recorded.append((load_decision(layout, D2, rf.SYMBOL), read_predictions(layout, D2, rf.SYMBOL)))
        assert main(["releases", "--data-dir", str(layout.root)]) == 0
        cli = capsys.readouterr().out
        meta3 = _materialize(storage, D2, instance)  # a re-run of D2: its champion is D2's own release
        recorded.append((load_decision(layout, D2, rf.SYMBOL), read_predictions(layout, D2, rf.SYMBOL)))

    # day 1: nothing in service, so no live score; day 2: the day-1 release was in service all day
    assert meta1["released"].value and current_release_date(layout, rf.SYMBOL) == D2.isoformat()
    assert meta1["predictions"].value.endswith("predictions/2025-10-03/BTCUSDT.parquet")
    assert "live_auc" not in meta1 and meta1["live_days_30d"].value == 0 and meta1["live_days_missing_30d"].value == 1
    for decision, frame in recorded:
        assert str(frame["timestamp"].dt.tz) == "UTC" and frame["p_up"].dtype == np.float64
        models = set(frame["model"])
        assert {"lgbm", "tft", "logistic", "majority", "last_return_sign"} <= models
        assert ("champion" in models) is (decision.champion_release is not None)
        recomputed = scores_from_predictions(frame)
        every = {**decision.metrics["candidates"], **decision.metrics["baselines"]}
        if decision.metrics["champion"] is not None:
            every["champion"] = decision.metrics["champion"]
        assert set(every) == set(recomputed)
        for name, scores in every.items():
            assert recomputed[name] == scores["auc"], (decision.date, name)  # exactly, from the parquet alone
        assert decision.scores["challenger"] == recomputed[decision.challenger_type]
        assert decision.scores["best_baseline"] == max(recomputed["majority"], recomputed["last_return_sign"])
    decision2 = recorded[1][0]
    assert decision2.champion_release == D1.isoformat() and decision2.released
    assert meta2["live_auc"].value == round(decision2.scores["champion"], 4)  # metadata shows 4 decimals
    assert meta2["live_auc_pooled_30d"].value == meta2["live_auc"].value
    assert meta2["live_days_30d"].value == 1 and meta2["live_days_missing_30d"].value == 1
    # the views across days: the chart of the symbol, and what serves each symbol with its live AUC
    assert meta2["live_chart"].value.startswith(f"![{rf.SYMBOL} daily AUC](data:image/png;base64,")
    (row,) = [line for line in meta2["in_service"].value.splitlines() if line.startswith(f"| {rf.SYMBOL} |")]
    assert f"| {meta2['live_auc'].value:.4f} | 1 |" in row and f"| {meta2['current_release'].value} |" in row
    assert (f"BTCUSDT live score: pooled AUC {meta2['live_auc'].value:.4f} over 1 day(s)" in cli), cli
    # the re-run scored against D2's own release: not a live day, counted as missing (not 0.5)
    assert recorded[2][0].champion_release == D2.isoformat() and not recorded[2][0].released
    assert "live_auc" not in meta3 and meta3["live_days_30d"].value == 0 and meta3["live_days_missing_30d"].value == 2
    assert "live_auc_pooled_30d" not in meta3
    frame3 = recorded[2][1]
    assert set(frame3.loc[frame3["model"] == "champion", "release"]) == {D2.isoformat()}

"""Releases: the promotion rule, the release directory, summary/history under concurrency, crash
safety under SIGKILL, rollback and roll-forward, tamper refusal, and the Dagster wiring."""
from __future__ import annotations

import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from levibot_assets_tests.graph import features, raw_ohlcv
from levibot_assets_tests.graph import lgbm_model, tft_model
from levibot_assets_tests.graph import best_release
from levibot_assets.core.dataset import align_to_rows
from levibot_assets.core.evaluation import Scoring
from levibot_assets.core.integrity import sha256_file
from levibot_assets.core.layout import DataLayout
from levibot_assets.core.metrics import classification_scores
from levibot_assets.core.release.decision import CHAMPION, Champion, DecisionPolicy, beats, decide, evaluate_with_champion
from levibot_assets.core.release.deploy import (
    current_release_date,
    in_service_id,
    list_releases,
    publish,
    read_history,
    read_summary,
    rollback,
)
from levibot_assets.core.release.store import (
    MANIFEST,
    ReleaseError,
    load_release,
    read_manifest,
    verify_release,
)
from levibot_assets.core.tables import atomic_write_parquet
from levibot_assets.definitions import build_resources
from levibot_assets.jobs import rollback_job
from levibot_assets.partitions import partition_key
from levibot_assets.resources.pipeline import PipelineConfig
from levibot_assets.settings import Settings
from levibot_assets.resources.storage import StorageResource
from levibot_assets_tests import release_fixtures as rf
from levibot_assets_tests.recorded import load_decision
from levibot_assets_tests.conftest import REPO_ROOT

D0, D1, D2 = dt.date(2025, 10, 2), dt.date(2025, 10, 3), dt.date(2025, 10, 4)
SCORING = Scoring(horizon=15, fee_bps=10.0, trade_share=0.1)  # the default label horizon, fee and share


@pytest.fixture
def layout(tmp_path) -> DataLayout:
    return DataLayout(tmp_path / "data")


@pytest.fixture
def skill(monkeypatch):
    rf.register_skill(monkeypatch)
    return rf.SkillClassifier


def _decide(candidates: dict, champion_model=None, champion_date="2025-10-03", metric="auc", margin=0.0, layout=None):
    """decide() on the test split; with `layout`, the champion carries the id of the release in service."""
    data = rf.split()
    evaluation, error = evaluate_with_champion(data, candidates, champion_model, SCORING)
    champion = None
    if champion_model is not None:
        champion_id = in_service_id(layout, rf.SYMBOL) if layout else f"{champion_date}@test"
        champion = Champion(champion_date, champion_model.model_type, champion_id, evaluation.scores.get(CHAMPION), error)
    trained = {t: rf.trained(m) for t, m in candidates.items()}
    policy = DecisionPolicy(metric, margin)
    return decide(rf.TEST_DATE, rf.SYMBOL, trained, evaluation, champion, policy, ["features/x/BTCUSDT"]), evaluation


def _publish_champion(layout, model, date=D1):
    publish(layout, rf.released_decision(date, rf.SYMBOL, model))
    served, _ = load_release(layout.release_dir(date, rf.SYMBOL))
    return served


# ------------------------------------------------------------------------- the promotion rule


@pytest.mark.parametrize(
    "a,b,metric,margin,expected",
    [
        (0.6, 0.5, "auc", 0.0, True),
        (0.5, 0.5, "auc", 0.0, False),
        (0.55, 0.5, "auc", 0.1, False),
        (0.60, 0.69, "log_loss", 0.0, True),
        (0.70, 0.69, "log_loss", 0.0, False),
        (float("nan"), 0.5, "auc", 0.0, False),
        (0.5, None, "auc", 0.0, True),
    ],
)
def test_beats_respects_direction_and_margin(a, b, metric, margin, expected):
    assert beats(a, b, metric, margin) is expected


def test_first_release_only_needs_to_beat_the_baselines(layout, skill):
    decision, evaluation = _decide({"skill": skill(1.5)})
    assert decision.released, decision.reason
    assert decision.reason.startswith("first release for BTCUSDT")
    entry = publish(layout, decision)

    release_dir = layout.release_dir(rf.TEST_DATE, rf.SYMBOL)
    assert os.readlink(layout.current_link(rf.SYMBOL)) == f"../releases/{rf.TEST_DATE}/{rf.SYMBOL}"
    manifest, _ = verify_release(release_dir)
    assert manifest["files"] == {"skill.json": {"sha256": sha256_file(release_dir / "skill.json")}}
    assert manifest["model_type"] == "skill" and manifest["trained_on"] == ["features/x/BTCUSDT"]
    assert manifest["metrics"]["candidates"]["skill"]["auc"] == pytest.approx(evaluation.scores["skill"]["auc"])
    assert set(manifest["metrics"]["baselines"]) == set(evaluation.baselines)
    assert manifest["metrics"]["champion"] is None
    assert manifest["decision"]["released"] is True and manifest["libraries"]["lightgbm"]
    assert entry["released"] and entry["current_release"] == rf.TEST_DATE.isoformat()
    assert read_summary(layout, rf.TEST_DATE)["symbols"]["BTCUSDT"]["reason"] == decision.reason
    (event,) = read_history(layout)
    assert event["event"] == "promote" and event["previous"] is None
    assert os.readlink(layout.best_link("skill", ".json")) == f"releases/{rf.TEST_DATE}/{rf.SYMBOL}/skill.json"


def test_nothing_released_when_no_candidate_beats_the_baselines(layout, skill):
    decision, evaluation = _decide({"skill": skill(-1.0)})
    assert not decision.released
    assert "does not beat the best baseline" in decision.reason and "nothing released" in decision.reason
    assert decision.scores["best_baseline"] == max(evaluation.scores[b]["auc"] for b in evaluation.baselines)
    entry = publish(layout, decision)
    assert not layout.release_dir(rf.TEST_DATE, rf.SYMBOL).exists()
    assert not os.path.lexists(layout.current_link(rf.SYMBOL))
    assert entry == read_summary(layout, rf.TEST_DATE)["symbols"]["BTCUSDT"] and entry["released"] is False
    assert read_history(layout) == []
    assert load_decision(layout, rf.TEST_DATE, rf.SYMBOL).reason == decision.reason


def test_the_latest_decision_of_a_date_is_the_one_loaded_back(layout, skill):
    publish(layout, rf.released_decision(rf.TEST_DATE, rf.SYMBOL, skill(1.0)))
    assert load_decision(layout, rf.TEST_DATE, rf.SYMBOL).released
    rerun, _ = _decide({"skill": skill(-1.0)})
    publish(layout, rerun)
    loaded = load_decision(layout, rf.TEST_DATE, rf.SYMBOL)
    assert not loaded.released and loaded.reason == rerun.reason and loaded.scores == rerun.to_json()["scores"]
    assert current_release_date(layout, rf.SYMBOL) == rf.TEST_DATE.isoformat()  # the earlier release stays


def test_champion_stays_when_the_challenger_is_not_better(layout, skill):
    champion = _publish_champion(layout, skill(2.0, seed=1))
    decision, _ = _decide({"skill": skill(0.8), "lgbm": rf.lgbm()}, champion)
    assert not decision.released
    assert "vs champion 2025-10-03" in decision.reason and "does not lie above the margin" in decision.reason
    assert "stays in service" in decision.reason
    comparison = decision.evidence["comparison"]
    assert comparison["advantage"] < 0 and comparison["ci_low"] <= comparison["advantage"] <= comparison["ci_high"]
    publish(layout, decision)
    assert current_release_date(layout, rf.SYMBOL) == "2025-10-03"
    assert read_summary(layout, rf.TEST_DATE)["symbols"]["BTCUSDT"]["current_release"] == "2025-10-03"


def test_challenger_beating_the_champion_is_promoted(layout, skill):
    champion = _publish_champion(layout, skill(0.5, seed=1))
    decision, evaluation = _decide({"skill": skill(2.0), "lgbm": rf.lgbm()}, champion, layout=layout)
    assert decision.released and decision.challenger_type == "skill"
    assert decision.scores["champion"] == evaluation.scores[CHAMPION]["auc"]
    publish(layout, decision)
    assert current_release_date(layout, rf.SYMBOL) == rf.TEST_DATE.isoformat()
    assert read_history(layout)[-1]["previous"] == "2025-10-03"


def test_promote_margin_protects_the_champion(layout, skill):
    champion = _publish_champion(layout, skill(1.0, seed=1))
    plain, _ = _decide({"skill": skill(1.3)}, champion)
    guarded, _ = _decide({"skill": skill(1.3)}, champion, margin=0.2)
    assert plain.released and not guarded.released
    assert "margin 0.2" in guarded.reason


def test_lower_is_better_metrics_pick_the_lower_score(skill):
    decision, evaluation = _decide({"skill": skill(1.5), "other": skill(0.3, seed=2)}, metric="log_loss")
    assert decision.challenger_type == "skill"
    assert decision.scores["challenger"] == min(evaluation.scores[n]["log_loss"] for n in ("skill", "other"))


def test_champion_is_scored_on_exactly_the_challengers_rows(layout, skill):
    data = rf.split()
    blind = int((data.context["timestamp"] < data.test["timestamp"].iloc[60]).sum())  # blind to 60 test rows
    champion = _publish_champion(layout, skill(1.0, seed=1, blind_rows=blind))
    decision, evaluation = _decide({"lgbm": rf.lgbm(data)}, champion)
    assert evaluation.facts["n_test_rows_dropped"] == 60
    assert decision.test_rows == len(data.test) - 60
    rows = data.test.iloc[60:]
    for name, model in (("lgbm", rf.lgbm(data)), (CHAMPION, champion)):
        p = align_to_rows(data.context, model.predict_proba(data.context), data.test)[60:]
        expected = classification_scores(rows["label"].to_numpy(), p)
        assert evaluation.scores[name]["auc"] == pytest.approx(expected["auc"])


def test_a_champion_that_cannot_be_scored_does_not_block_the_challenger(skill):
    class Broken(rf.SkillClassifier):
        def predict_proba(self, frame):
            raise RuntimeError("checkpoint from an incompatible version")

    decision, evaluation = _decide({"skill": skill(1.5)}, Broken(1.0))
    assert CHAMPION not in evaluation.scores
    assert decision.released and "could not be scored" in decision.reason and "incompatible" in decision.reason


# ------------------------------------------------------------------------- release files


def test_republishing_a_date_replaces_the_release_atomically(layout):
    first, second = rf.lgbm(rounds=5), rf.lgbm(rounds=12)
    publish(layout, rf.released_decision(D2, "ETHUSDT", first))
    publish(layout, rf.released_decision(D2, "ETHUSDT", second))
    model, manifest = load_release(layout.release_dir(D2, "ETHUSDT"))
    data = rf.split()
    np.testing.assert_allclose(model.predict_proba(data.test), second.predict_proba(data.test))
    assert sorted(p.name for p in layout.release_dir(D2, "ETHUSDT").parent.iterdir()) == ["ETHUSDT", "summary.json"]
    assert len(read_history(layout, "ETHUSDT")) == 2


def test_tampered_model_file_is_refused(layout):
    model = rf.lgbm()
    for date in (D0, D1):
        publish(layout, rf.released_decision(date, rf.SYMBOL, model))
    victim = layout.release_dir(D0, rf.SYMBOL) / "lgbm.txt"
    victim.write_text(victim.read_text().replace("num_leaves=", "num_leaves=9", 1))
    with pytest.raises(ReleaseError, match="does not match the sha256"):
        load_release(layout.release_dir(D0, rf.SYMBOL))
    with pytest.raises(ReleaseError, match="does not match the sha256"):
        rollback(layout, rf.SYMBOL, "previous")
    assert current_release_date(layout, rf.SYMBOL) == D1.isoformat()
    (layout.release_dir(D1, rf.SYMBOL) / "lgbm.txt").unlink()
    with pytest.raises(ReleaseError, match="missing"):
        verify_release(layout.release_dir(D1, rf.SYMBOL))


def test_manifest_cannot_point_outside_the_release(layout):
    publish(layout, rf.released_decision(D0, rf.SYMBOL, rf.lgbm()))
    path = layout.release_dir(D0, rf.SYMBOL) / MANIFEST
    manifest = json.loads(path.read_text())
    manifest["files"] = {"../../evil.pkl": {"sha256": "0" * 64}}
    path.write_text(json.dumps(manifest))
    with pytest.raises(ReleaseError, match="outside the release directory"):
        read_manifest(path.parent)


def test_rollback_and_roll_forward(layout):
    model = rf.lgbm()
    for date in (D0, D1, D2):
        publish(layout, rf.released_decision(date, rf.SYMBOL, model))
    assert rollback(layout, rf.SYMBOL, "previous")["release"] == D1.isoformat()
    assert rollback(layout, rf.SYMBOL, "previous")["release"] == D0.isoformat()
    with pytest.raises(ReleaseError, match="oldest"):
        rollback(layout, rf.SYMBOL, "previous")
    event = rollback(layout, rf.SYMBOL, D2.isoformat())
    assert (event["release"], event["previous"]) == (D2.isoformat(), D0.isoformat())
    assert os.readlink(layout.current_link(rf.SYMBOL)) == f"../releases/{D2}/{rf.SYMBOL}"
    assert [e["event"] for e in read_history(layout)] == ["promote"] * 3 + ["rollback"] * 3
    assert [(r.date, r.current) for r in list_releases(layout, rf.SYMBOL)] == [
        (D0.isoformat(), False), (D1.isoformat(), False), (D2.isoformat(), True)
    ]
    with pytest.raises(ReleaseError, match="no releases for symbol 'DOGEUSDT'.*BTCUSDT"):
        rollback(layout, "DOGEUSDT", "previous")
    with pytest.raises(ReleaseError, match="no release dated 2025-09-01"):
        rollback(layout, rf.SYMBOL, "2025-09-01")
    with pytest.raises(ReleaseError, match="neither 'previous' nor"):
        rollback(layout, rf.SYMBOL, "yesterday")


# ------------------------------------------------------------------------- processes


def _child(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code), *args]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT)}


PUBLISH_SCRIPT = """
    import datetime as dt, sys
    from levibot_assets.core.layout import DataLayout
    from levibot_assets.core.lgbm import LgbmClassifier
    from levibot_assets.core.release.decision import ReleaseDecision
    from levibot_assets.core.release.deploy import publish

    data_dir, model_dir, symbol, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    layout, model = DataLayout(data_dir), LgbmClassifier.load(model_dir)
    print("ready", flush=True)
    for i in range(rounds):
        date = dt.date(2025, 10, 1) + dt.timedelta(days=i % 4)
        scores = {"challenger": 0.5 + i / 1000}
        publish(layout, ReleaseDecision(date.isoformat(), symbol, True, "test", "auc", "lgbm", scores, model=model))
"""


@pytest.fixture
def model_dir(tmp_path) -> Path:
    directory = tmp_path / "model"
    rf.lgbm().save(directory)
    return directory


def test_concurrent_summaries_of_three_symbols_keep_every_entry(layout, model_dir):
    symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    procs = [
        subprocess.Popen(_child(PUBLISH_SCRIPT, str(layout.root), str(model_dir), s, "8"), env=_env(), stdout=subprocess.PIPE)
        for s in symbols
    ]
    for proc in procs:
        proc.wait(timeout=120)
        assert proc.returncode == 0
    for day in range(4):
        summary = read_summary(layout, dt.date(2025, 10, 1 + day))
        assert sorted(summary["symbols"]) == symbols
    history = read_history(layout)
    assert len(history) == 24 and {e["symbol"] for e in history} == set(symbols)
    for symbol in symbols:
        verify_release(layout.release_dir(current_release_date(layout, symbol), symbol))


def _assert_serving_state_valid(layout: DataLayout, symbol: str) -> None:
    date = current_release_date(layout, symbol)
    if date is None:
        return
    model, manifest = load_release(layout.release_dir(date, symbol))  # verifies every sha256
    assert manifest["date"] == date and model.model_type == "lgbm"
    for path in layout.releases_dir.glob("*/summary.json"):
        json.loads(path.read_text())


def test_sigkill_during_promotion_leaves_a_complete_release_in_service(layout, model_dir):
    rng = random.Random(7)
    for _ in range(6):
        proc = subprocess.Popen(
            _child(PUBLISH_SCRIPT, str(layout.root), str(model_dir), rf.SYMBOL, "100000"),
            env=_env(), stdout=subprocess.PIPE, start_new_session=True,
        )
        try:
            assert proc.stdout.readline().strip() == b"ready"
            time.sleep(rng.uniform(0.05, 0.6))
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        _assert_serving_state_valid(layout, rf.SYMBOL)
    assert len(read_history(layout)) > 6
    # a fresh writer takes over the lock and cleans what the killed one left behind
    publish(layout, rf.released_decision(D0, rf.SYMBOL, rf.lgbm()))
    _assert_serving_state_valid(layout, rf.SYMBOL)
    assert not list(layout.releases_dir.glob("*/.*staging*"))


# ------------------------------------------------------------------------- Dagster wiring


def test_best_release_asset_publishes_the_decision_it_records(tmp_path, monkeypatch, skill):
    rf.skill_in_slot(monkeypatch, "tft")
    layout = DataLayout(tmp_path / "data")
    storage = StorageResource(data_dir=str(layout.root))
    for day, frame in rf.feature_window(days=3).items():
        atomic_write_parquet(layout.table("features", day, rf.SYMBOL), frame)
    model_dir = layout.model_dir(rf.TEST_DATE, rf.SYMBOL)
    rf.lgbm().save(model_dir)
    rf.SkillClassifier(1.5).save(model_dir)
    (model_dir / "lgbm_metrics.json").write_text(json.dumps({"best_params": {"num_leaves": 7}}))
    (model_dir / "tft_metrics.json").write_text("{}")

    result = rf.materialize_best_release(storage)
    assert result.success
    meta = result.asset_materializations_for_node("best_release")[0].metadata
    assert meta["released"].value is True and meta["challenger"].value == "tft"
    assert current_release_date(layout, rf.SYMBOL) == rf.TEST_DATE.isoformat()
    assert read_manifest(layout.release_dir(rf.TEST_DATE, rf.SYMBOL))["model_type"] == "skill"
    recorded = load_decision(layout, rf.TEST_DATE, rf.SYMBOL)  # the decision as summary.json keeps it
    assert recorded.released and recorded.reason == meta["reason"].value
    served, _ = load_release(layout.release_dir(rf.TEST_DATE, rf.SYMBOL))
    assert isinstance(served, rf.SkillClassifier) and served.skill == 1.5

    publish(layout, rf.released_decision(D1, rf.SYMBOL, rf.lgbm()))
    ok = rollback_job.execute_in_process(
        run_config={"ops": {"rollback_release": {"config": {"symbol": rf.SYMBOL, "to": rf.TEST_DATE.isoformat()}}}},
        resources={"storage": storage, "pipeline": PipelineConfig.from_settings(Settings())},
    )
    assert ok.success and current_release_date(layout, rf.SYMBOL) == rf.TEST_DATE.isoformat()
    failed = rollback_job.execute_in_process(
        run_config={"ops": {"rollback_release": {"config": {"symbol": rf.SYMBOL, "to": "2020-01-01"}}}},
        resources={"storage": storage, "pipeline": PipelineConfig.from_settings(Settings())}, raise_on_error=False,
    )
    assert not failed.success


@pytest.mark.slow
def test_nightly_graph_decides_and_the_next_night_scores_the_champion(levibot_env):
    """raw -> features -> lgbm + tft -> best_release for two nights on synthetic candles (plumbing)."""
    settings = levibot_env(OPTUNA_TRIALS=2, THREADS=1, TFT_MAX_MINUTES=0.05)
    layout = DataLayout(settings.data_dir)
    first, second = dt.date(2023, 4, 4), dt.date(2023, 4, 5)
    assets = [raw_ohlcv, features, lgbm_model, tft_model, best_release]

    def run(date, selection):
        result = dg.materialize(assets, resources=build_resources(settings), partition_key=partition_key(date, rf.SYMBOL),
                                instance=instance, selection=selection)
        assert result.success
        return result

    champion_date = (first - dt.timedelta(days=1)).isoformat()
    publish(layout, rf.released_decision(champion_date, rf.SYMBOL, rf.lgbm()))  # a model already in service
    with dg.instance_for_test() as instance:
        for back in range(4, -1, -1):
            run(first - dt.timedelta(days=back), [raw_ohlcv, features])
        run(second, [raw_ohlcv, features])
        decisions = []
        for date in (first, second):
            result = run(date, [lgbm_model, tft_model, best_release])
            meta = result.asset_materializations_for_node("best_release")[0].metadata
            decision = load_decision(layout, date, rf.SYMBOL)
            assert meta["released"].value is decision.released and meta["reason"].value == decision.reason
            assert read_summary(layout, date)["symbols"][rf.SYMBOL]["released"] is decision.released
            assert layout.release_dir(date, rf.SYMBOL).exists() is decision.released
            assert "**champion**" in meta["scores"].value and isinstance(decision.scores["champion"], float)
            decisions.append(decision)
    d1, d2 = decisions
    assert d1.champion_release == champion_date
    assert d2.champion_release == (first.isoformat() if d1.released else champion_date)
    assert current_release_date(layout, rf.SYMBOL) == (
        second.isoformat() if d2.released else d2.champion_release
    )
    verify_release(layout.release_dir(current_release_date(layout, rf.SYMBOL), rf.SYMBOL))

"""Fixtures for the release, serving and CLI tests: synthetic feature windows and models.

Persistence, serving and crash tests use the real LgbmClassifier (trained in a second on synthetic
features). Tests of the promotion rule need models of a chosen skill, which no honest model has on
synthetic data: `SkillClassifier` is a test-only Classifier whose P(up) mixes the true forward
return with seeded noise in a chosen proportion (it reads fwd_return, which a real model never
may). It is registered as model type "skill" for the duration of a test.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from levibot_assets.core.atomic import atomic_write_text
from levibot_assets.core.dataset import TrainTest, split_window
from levibot_assets.core.features import FORWARD_RETURN_COLUMN, compute_features
from levibot_assets.core.lgbm import LgbmClassifier, fit_lgbm
from levibot_assets.core.model_api import MODEL_FAMILIES, ModelFamily, TrainedModel
from levibot_assets.core.release.decision import ReleaseDecision
from levibot_assets.core.sources.synthetic import synthetic_day

SYMBOL = "BTCUSDT"
TEST_DATE = dt.date(2025, 10, 4)
HORIZON = 15
SKILL_FILE = "skill.json"


@lru_cache(maxsize=8)
def _features(symbol: str, date: dt.date) -> pd.DataFrame:
    bars = pd.concat([synthetic_day(symbol, date - dt.timedelta(days=1)), synthetic_day(symbol, date)], ignore_index=True)
    return compute_features(bars, date, HORIZON)


def feature_window(symbol: str = SYMBOL, test_date: dt.date = TEST_DATE, days: int = 3) -> dict[str, pd.DataFrame]:
    """{'YYYY-MM-DD': features} for the test day and the days before it (synthetic candles)."""
    dates = [test_date - dt.timedelta(days=i) for i in reversed(range(days))]
    return {d.isoformat(): _features(symbol, d).copy() for d in dates}


def split(symbol: str = SYMBOL, test_date: dt.date = TEST_DATE) -> TrainTest:
    return split_window(feature_window(symbol, test_date), test_date, HORIZON)


def lgbm(data: TrainTest | None = None, rounds: int = 10, leaves: int = 7) -> LgbmClassifier:
    """A real LightGBM model trained on the training rows (different rounds/leaves -> different model)."""
    data = data or split()
    return fit_lgbm(data.train, {"num_boost_round": rounds, "num_leaves": leaves, "min_data_in_leaf": 50}, threads=1)


NOISE_SLOTS = 100_003  # noise per minute of time, repeating after ~69 days


@lru_cache(maxsize=8)
def _noise(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(NOISE_SLOTS)


class SkillClassifier:
    """P(up) = sigmoid(skill * z(fwd_return) + noise): skill 0 is a coin, higher skill ranks better.

    `blind_rows` leading rows of every frame get NaN, like a model short of context.
    """

    model_type = "skill"

    def __init__(self, skill: float, seed: int = 0, blind_rows: int = 0):
        self.skill, self.seed, self.blind_rows = float(skill), int(seed), int(blind_rows)

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        fwd = frame[FORWARD_RETURN_COLUMN].to_numpy(dtype="float64")
        scale = np.nanstd(fwd) or 1.0
        keys = frame["timestamp"].astype("int64").to_numpy() // 60_000_000_000
        noise = _noise(self.seed)[keys % NOISE_SLOTS]
        z = np.nan_to_num(fwd / scale)
        p = 1.0 / (1.0 + np.exp(-(self.skill * z + noise)))
        p[: self.blind_rows] = np.nan
        return p

    def save(self, directory: Path) -> list[Path]:
        data = {"skill": self.skill, "seed": self.seed, "blind_rows": self.blind_rows}
        return [atomic_write_text(Path(directory) / SKILL_FILE, json.dumps(data))]

    @classmethod
    def load(cls, directory: Path) -> "SkillClassifier":
        return cls(**json.loads((Path(directory) / SKILL_FILE).read_text()))


class FileModel:
    """A stand-in that saves one file named like its type's model (lgbm.txt, tft.ckpt) and never loads.

    For tests of deploying, best_* links and history, where only files and hashes matter.
    """

    def __init__(self, model_type: str = "lgbm", text: str = "model"):
        self.model_type, self.text = model_type, text

    def save(self, directory: Path) -> list[Path]:
        return [atomic_write_text(Path(directory) / MODEL_FAMILIES[self.model_type].main_file, self.text)]


def register_skill(monkeypatch) -> None:
    monkeypatch.setitem(MODEL_FAMILIES, "skill", ModelFamily(f"{__name__}:SkillClassifier", SKILL_FILE))


def skill_in_slot(monkeypatch, slot: str) -> None:
    """SkillClassifier as a fast stand-in for the `slot` family (lgbm, tft); its asset stays, so
    best_release still loads the slot as a candidate."""
    skill = MODEL_FAMILIES["skill"]
    monkeypatch.setitem(MODEL_FAMILIES, slot, dataclasses.replace(MODEL_FAMILIES[slot], class_path=skill.class_path,
                                                                  main_file=skill.main_file))


def trained(model) -> TrainedModel:
    return TrainedModel(model=model, metrics={})


def released_decision(
    date: dt.date | str, symbol: str, model, score: float = 0.6, champion_id: str | None = None
) -> ReleaseDecision:
    """A promotion decision carrying `model` (for tests of writing, deploying and crashing).

    Without `champion_id` it is deployed whatever is in service (no champion re-check).
    """
    date = date if isinstance(date, str) else date.isoformat()
    return ReleaseDecision(
        date=date,
        symbol=symbol,
        released=True,
        reason="test promotion",
        select_metric="auc",
        challenger_type=model.model_type,
        scores={"challenger": score, "champion": None, "best_baseline": 0.5, "best_baseline_name": "majority"},
        champion_id=champion_id,
        model=model,
    )


def materialize_best_release(storage):
    """best_release alone for (TEST_DATE, SYMBOL), its inputs read from files already on disk."""
    import dagster as dg

    from levibot_assets_tests.graph import best_release
    from levibot_assets.partitions import partition_key
    from levibot_assets.resources.pipeline import PipelineConfig
    from levibot_assets.settings import Settings

    with dg.instance_for_test() as instance:
        return dg.materialize([best_release], partition_key=partition_key(TEST_DATE, SYMBOL),
                              resources={"storage": storage, "pipeline": PipelineConfig.from_settings(Settings())}, instance=instance)

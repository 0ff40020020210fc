"""The TFT classifier: save/load round trip, NaN only without context, time budget, clean cwd, bad input.

One tiny training on synthetic days serves most tests (model quality is never claimed on it).
"""
import datetime as dt
import os

import numpy as np
import pandas as pd
import pytest

from levibot_assets.core.features import LABEL_COLUMN, compute_features
from levibot_assets.core.sources.synthetic import synthetic_day
from levibot_assets.core.tft import ENCODER_LENGTH, TftClassifier, TftConfig, TftTrainingError, train_tft

SYMBOL = "BTCUSDT"
FIRST = dt.date(2025, 10, 10)
HORIZON = 15
TFT = {"horizon": HORIZON, "threads": 1, "max_minutes": 5.0}  # train_tft arguments
TINY = TftConfig(max_epochs=2, batch_size=64, batches_per_epoch=3, validation_stride=4, hidden_size=8,
                 attention_head_size=1, hidden_continuous_size=4)


def _features(date: dt.date) -> pd.DataFrame:
    bars = pd.concat([synthetic_day(SYMBOL, date - dt.timedelta(days=1)), synthetic_day(SYMBOL, date)], ignore_index=True)
    return compute_features(bars, date, HORIZON)


@pytest.fixture(scope="module")
def train_frame() -> pd.DataFrame:
    return pd.concat([_features(FIRST), _features(FIRST + dt.timedelta(days=1))], ignore_index=True)


@pytest.fixture(scope="module")
def trained(train_frame, tmp_path_factory):
    """Train once inside an empty working directory; hand back the model, the lines logged and the cwd."""
    workdir = tmp_path_factory.mktemp("cwd")
    lines: list[str] = []
    before = os.getcwd()
    os.chdir(workdir)
    try:
        model = train_tft(train_frame, **TFT, progress=lines.append, seed=0, config=TINY)
    finally:
        os.chdir(before)
    return model, lines, workdir


@pytest.fixture(scope="module")
def unseen() -> pd.DataFrame:
    """A later day, with a 10-minute hole in the middle, never seen in training."""
    frame = _features(FIRST + dt.timedelta(days=3))
    return frame.drop(index=range(700, 710)).reset_index(drop=True)


def test_training_writes_nothing_into_the_working_directory(trained):
    _, _, workdir = trained
    assert list(workdir.iterdir()) == []


def test_progress_reports_each_epoch(trained):
    model, lines, _ = trained
    epoch_lines = [line for line in lines if line.startswith("TFT epoch")]
    assert len(epoch_lines) == model.training["epochs"] == TINY.max_epochs
    assert "train loss" in epoch_lines[0] and "val loss" in epoch_lines[0]
    assert model.training["stop_reason"] == "max_epochs"


def test_probabilities_with_nan_exactly_where_context_is_missing(trained, unseen):
    model, _, _ = trained
    proba = model.predict_proba(unseen)
    assert proba.shape == (len(unseen),)
    expected_nan = np.zeros(len(unseen), dtype=bool)
    expected_nan[:ENCODER_LENGTH] = True  # no earlier rows in the frame
    expected_nan[700 : 700 + ENCODER_LENGTH] = True  # first rows after the hole
    assert np.array_equal(np.isnan(proba), expected_nan)
    scored = proba[~expected_nan]
    assert ((scored >= 0) & (scored <= 1)).all()
    assert scored.std() > 0


def test_predictions_follow_rows_not_frame_order(trained, unseen):
    model, _, _ = trained
    shuffled = unseen.sample(frac=1.0, random_state=1)
    np.testing.assert_allclose(model.predict_proba(shuffled), model.predict_proba(unseen)[shuffled.index.to_numpy()])


def test_checkpoint_round_trip_predicts_the_same(trained, unseen, tmp_path):
    model, _, _ = trained
    written = model.save(tmp_path / "model")
    assert sorted(p.name for p in written) == ["tft.ckpt", "tft.json"]
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["tft.ckpt", "tft.json"]  # no temp leftovers
    loaded = TftClassifier.load(tmp_path / "model")
    assert loaded.model_type == "tft" and loaded.training == model.training
    np.testing.assert_allclose(loaded.predict_proba(unseen), model.predict_proba(unseen), atol=1e-6)


def test_tiny_time_budget_stops_training(train_frame):
    model = train_tft(train_frame, **{**TFT, "max_minutes": 1e-4}, config=TINY)
    assert model.training["stop_reason"] == "time_budget"
    assert model.training["epochs"] < TINY.max_epochs


def test_too_few_rows_is_refused(train_frame):
    with pytest.raises(TftTrainingError, match="too few"):
        train_tft(train_frame.iloc[:300], **TFT, config=TINY)


def test_a_single_class_is_refused(train_frame):
    frame = train_frame.copy()
    frame[LABEL_COLUMN] = frame[LABEL_COLUMN].where(frame[LABEL_COLUMN].isna(), 1.0)
    with pytest.raises(TftTrainingError, match="single class"):
        train_tft(frame, **TFT, config=TINY)


def test_nan_labels_marked_available_are_refused(train_frame):
    frame = train_frame.copy()
    frame.loc[100, LABEL_COLUMN] = np.nan
    with pytest.raises(TftTrainingError, match="NaN label"):
        train_tft(frame, **TFT, config=TINY)


def test_missing_columns_are_refused(train_frame):
    with pytest.raises(TftTrainingError, match="rsi_14"):
        train_tft(train_frame.drop(columns=["rsi_14"]), **TFT, config=TINY)


@pytest.mark.slow
def test_tft_model_asset_trains_within_budget_and_scores_the_test_day(levibot_env):
    import json

    import dagster as dg

    from levibot_assets_tests.graph import features, raw_ohlcv
    from levibot_assets_tests.graph import tft_model
    from levibot_assets.core.layout import DataLayout
    from levibot_assets.definitions import build_resources
    from levibot_assets.partitions import partition_key

    settings = levibot_env(TFT_MAX_MINUTES=0.05, THREADS=1, SOURCE="synthetic")
    test_day = dt.date(2023, 4, 4)

    def materialize(date, selection):
        return dg.materialize([raw_ohlcv, features, tft_model], resources=build_resources(settings),
                              partition_key=partition_key(date, SYMBOL), instance=instance, selection=selection)

    with dg.instance_for_test() as instance:
        assert materialize(test_day - dt.timedelta(days=3), [raw_ohlcv]).success  # warm-up
        for back in (2, 1, 0):  # 2 training days, then the test day
            assert materialize(test_day - dt.timedelta(days=back), [raw_ohlcv, features]).success
        result = materialize(test_day, [tft_model])
        logs = [e.user_message for e in instance.all_logs(result.run_id)]
    (mat,) = result.asset_materializations_for_node("tft_model")
    assert 0.0 <= mat.metadata["auc"].value <= 1.0
    assert any(line.startswith("TFT trained") for line in logs)
    model_dir = DataLayout(settings.data_dir).model_dir(test_day, SYMBOL)
    stored = json.loads((model_dir / "tft_metrics.json").read_text())
    assert stored["stop_reason"] in ("time_budget", "early_stopping", "max_epochs")
    assert stored["evaluation"]["n_test_rows_dropped"] == 0  # the previous day gave the first test bars context
    assert (model_dir / "tft.ckpt").stat().st_size > 0

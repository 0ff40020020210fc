"""lgbm_model through dagster.materialize with a temporary instance, on synthetic candles (plumbing only)."""
import datetime as dt
import json

import dagster as dg
import pytest

from levibot_assets_tests.graph import features, raw_ohlcv
from levibot_assets_tests.graph import lgbm_model
from levibot_assets.core.layout import DataLayout
from levibot_assets.definitions import build_resources
from levibot_assets.partitions import partition_key

ASSETS = [raw_ohlcv, features, lgbm_model]
TEST_DAY = dt.date(2023, 4, 4)


def _materialize(settings, instance, date, selection):
    return dg.materialize(ASSETS, resources=build_resources(settings), partition_key=partition_key(date, "BTCUSDT"),
                          instance=instance, selection=selection, raise_on_error=False)


def _failure_text(result) -> str:
    failure = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"][0]
    error = failure.event_specific_data.error
    return error.message + (error.cause.message if error.cause else "")


@pytest.mark.slow
def test_lgbm_model_trains_on_the_window_and_scores_the_test_day(levibot_env):
    settings = levibot_env(OPTUNA_TRIALS=2, THREADS=1, TRADE_SHARE=0.2)  # ~19 of 96 slots: sure to trade
    layout = DataLayout(settings.data_dir)
    with dg.instance_for_test() as instance:
        assert _materialize(settings, instance, TEST_DAY - dt.timedelta(days=4), [raw_ohlcv]).success  # warm-up
        for back in range(3, -1, -1):  # 3 training days, then the test day
            assert _materialize(settings, instance, TEST_DAY - dt.timedelta(days=back), [raw_ohlcv, features]).success
        result = _materialize(settings, instance, TEST_DAY, [lgbm_model])
        assert result.success, _failure_text(result)
        logs = [e.user_message for e in instance.all_logs(result.run_id)]
    (mat,) = result.asset_materializations_for_node("lgbm_model")
    meta = {k: v.value for k, v in mat.metadata.items()}
    for name in ("auc", "accuracy", "log_loss", "brier", "sharpe", "best_baseline_auc", "train_seconds"):
        assert isinstance(meta[name], float), name
    assert 0.0 <= meta["auc"] <= 1.0
    assert meta["trials"] == 2 and isinstance(meta["n_trades"], int) and isinstance(meta["pruned_trials"], int)
    assert "logistic (baseline)" in meta["comparison"] and "data:image/png;base64," in meta["plot"]
    assert meta["plot_path"] == str(layout.model_plot(TEST_DAY, "BTCUSDT", "lgbm"))
    assert layout.model_plot(TEST_DAY, "BTCUSDT", "lgbm").read_bytes().startswith(b"\x89PNG")
    assert sum("optuna trial" in line for line in logs) == 2  # one progress line per trial in the run log

    model_dir = layout.model_dir(TEST_DAY, "BTCUSDT")
    assert (model_dir / "lgbm.txt").read_text().startswith("tree")
    stored = json.loads((model_dir / "lgbm_metrics.json").read_text())
    assert stored["evaluation"]["scores"]["lgbm"]["auc"] == pytest.approx(meta["auc"], abs=5e-5)  # metadata: 4 decimals
    # the entry threshold comes from the day before the test day: the rule trades (about LEVIBOT_TRADE_SHARE of the slots)
    assert stored["evaluation"]["calibration_start"].startswith("2023-04-03") and meta["n_trades"] > 0
    assert stored["evaluation"]["trade_share"] == 0.2
    assert stored["evaluation"]["scores"]["lgbm"]["n_trades"] == meta["n_trades"]
    assert stored["train_days"] == ["2023-04-01", "2023-04-02", "2023-04-03"]
    assert stored["test_date"] == TEST_DAY.isoformat() and stored["trials"] == 2


@pytest.mark.slow
def test_lgbm_model_without_training_days_fails_clearly(levibot_env):
    settings = levibot_env(OPTUNA_TRIALS=1, THREADS=1)
    with dg.instance_for_test() as instance:
        assert _materialize(settings, instance, TEST_DAY, [raw_ohlcv, features]).success
        result = _materialize(settings, instance, TEST_DAY, [lgbm_model])
    assert not result.success
    assert "no training days before 2023-04-04" in _failure_text(result)


def test_a_long_range_plots_only_the_newest_date_of_each_symbol():
    from levibot_assets.assets.models import PRESENT_ALL_UP_TO, presented

    short = [(TEST_DAY - dt.timedelta(days=k), "BTCUSDT") for k in range(PRESENT_ALL_UP_TO)]
    assert presented(short) == set(short)
    long = [(TEST_DAY - dt.timedelta(days=k), symbol) for k in range(PRESENT_ALL_UP_TO) for symbol in ("BTCUSDT", "ETHUSDT")]
    assert presented(long) == {(TEST_DAY, "BTCUSDT"), (TEST_DAY, "ETHUSDT")}

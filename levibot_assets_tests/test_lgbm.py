"""LightGBM training: reproducible model files, no leakage, shared Optuna studies, clear input errors.

Synthetic candles are used for plumbing only (never for claims about model quality).
"""
import datetime as dt

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from levibot_assets.core.dataset import DatasetError, split_window
from levibot_assets.core.features import compute_features, training_rows
from levibot_assets.core.lgbm import MODEL_FILE, LgbmClassifier, train_lgbm, tune
from levibot_assets.core.metrics import roc_auc
from levibot_assets.core.sources.synthetic import synthetic_day

FIRST = dt.date(2023, 4, 1)
HORIZON, TRIALS = 15, 3
LGBM = {"horizon": HORIZON, "threads": 1}  # train_lgbm/tune arguments besides the trials


@pytest.fixture(scope="module")
def window() -> dict[str, pd.DataFrame]:
    """Fourteen days of synthetic features, 2023-04-01 .. 04-14, each with the previous day as warm-up."""
    days = [FIRST + dt.timedelta(days=i) for i in range(-1, 14)]
    bars = {d: synthetic_day("ETHUSDT", d) for d in days}
    return {
        d.isoformat(): compute_features(pd.concat([bars[d - dt.timedelta(days=1)], bars[d]]), d, HORIZON)
        for d in days[1:]
    }


def _first_days(window, n):
    return dict(list(window.items())[:n])


def test_model_file_is_byte_identical_across_runs(window, tmp_path):
    data = split_window(_first_days(window, 4), FIRST + dt.timedelta(days=3), HORIZON)
    lines = []
    first = train_lgbm(data.train, n_trials=TRIALS, **LGBM, progress=lines.append)
    second = train_lgbm(data.train, n_trials=TRIALS, **LGBM)
    (path_a,) = first.model.save(tmp_path / "a")
    (path_b,) = second.model.save(tmp_path / "b")
    assert path_a.name == MODEL_FILE
    assert path_a.read_bytes() == path_b.read_bytes()
    assert path_a.read_text().startswith("tree")  # LightGBM's native text format, not a pickle
    reloaded = LgbmClassifier.load(tmp_path / "a")
    np.testing.assert_array_equal(reloaded.predict_proba(data.test), first.model.predict_proba(data.test))
    assert len(lines) == TRIALS  # one progress line per trial
    assert all("optuna trial" in line and "best so far" in line for line in lines)
    assert first.facts()["trials"] == TRIALS


def test_one_trial_takes_the_first_draw_without_cross_validation(window):
    """With one trial there is nothing to choose between: the parameters are those the first trial of a
    scored study gets, no fold is fitted, and the facts say so instead of showing a CV score."""
    data = split_window(_first_days(window, 4), FIRST + dt.timedelta(days=3), HORIZON)
    lines = []
    single = train_lgbm(data.train, n_trials=1, **LGBM, progress=lines.append)
    scored = tune(data.train, n_trials=2, **LGBM)
    assert single.tuning.best_params == scored.study.trials[0].params
    facts = single.facts()
    assert (facts["trials"], facts["cv_folds"], facts["cv_log_loss"]) == (1, 0, None)
    assert len(lines) == 1 and "no cross-validation" in lines[0]
    assert train_lgbm(data.train, n_trials=2, **LGBM).facts()["cv_folds"] == 3


def test_long_studies_report_at_most_eight_progress_lines_and_always_the_last_trial():
    import optuna

    from levibot_assets.core.lgbm import _progress_callback

    lines = []
    study = optuna.create_study()
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=20, callbacks=[_progress_callback(lines.append, 20)])
    assert [line.split(":")[0] for line in lines] == [f"optuna trial {n}/20" for n in (3, 6, 9, 12, 15, 18, 20)]


def test_leakage_canary_shuffled_labels_score_chance_out_of_sample(window):
    """Trained on shuffled labels, models must score AUC ~ 0.5 on the 10 later days.

    Overlapping H-bar labels make neighbouring rows near copies, so ~14,000 test rows are only
    ~1,000 independent ones (AUC standard error ~0.015 per model): the mean over three
    shuffles keeps the 0.05 margin wide and the test stable.
    """
    data = split_window(_first_days(window, 4), FIRST + dt.timedelta(days=3), HORIZON)
    test = pd.concat([training_rows(frame) for day, frame in window.items() if day >= "2023-04-05"], ignore_index=True)
    assert len(test) > 12_000
    aucs = []
    for seed in range(3):
        shuffled = data.train.assign(label=np.random.default_rng(seed).permutation(data.train["label"].to_numpy()))
        model = train_lgbm(shuffled, n_trials=TRIALS, **LGBM).model
        aucs.append(roc_auc(test["label"].to_numpy(), model.predict_proba(test)))
    assert abs(np.mean(aucs) - 0.5) < 0.05, aucs


def test_shared_study_collects_trials_from_several_callers(window, tmp_path):
    """Two tune() calls on one RDB study stop together at n_trials (sqlite here; PostgreSQL in production)."""
    train = split_window(_first_days(window, 3), FIRST + dt.timedelta(days=2), HORIZON).train
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    first = tune(train, **LGBM, storage=storage, study_name="lgbm-2023-04-03-ETHUSDT", n_trials=2)
    second = tune(train, **LGBM, storage=storage, study_name="lgbm-2023-04-03-ETHUSDT", n_trials=3)
    assert first.n_trials == 2 and second.n_trials == 3
    assert second.best_value <= first.best_value
    assert second.best_params == second.study.best_params
    with pytest.raises(ValueError, match="study_name"):
        tune(train, **LGBM, n_trials=2, storage=storage)


def test_bad_windows_are_refused_with_clear_errors(window):
    horizon = HORIZON
    test_date = FIRST + dt.timedelta(days=2)
    three = _first_days(window, 3)
    with pytest.raises(DatasetError, match="test day 2023-04-04 is missing"):
        split_window(three, FIRST + dt.timedelta(days=3), horizon)
    with pytest.raises(DatasetError, match="too few training rows"):
        split_window({k: v.iloc[:300] if k < test_date.isoformat() else v for k, v in three.items()}, test_date, horizon)
    with pytest.raises(DatasetError, match="too few test rows"):
        split_window({**three, test_date.isoformat(): three[test_date.isoformat()].iloc[:50]}, test_date, horizon)
    with pytest.raises(DatasetError, match="single class"):
        split_window({k: v.assign(label=v["label"].where(v["label"].isna(), 1.0)) for k, v in three.items()}, test_date, horizon)
    broken = three["2023-04-01"].copy()
    broken.loc[10, "label"] = np.nan  # label_available says known, but the label is NaN
    with pytest.raises(DatasetError, match="NaN label"):
        split_window({**three, "2023-04-01": broken}, test_date, horizon)
    with pytest.raises(DatasetError, match="after the test day"):
        split_window(window, test_date, horizon)


# --- threads and one-row predictions ---

from levibot_assets.core.features import FEATURE_COLUMNS  # noqa: E402
from levibot_assets.core.lgbm import FeatureInputError, fit_lgbm, thread_limits  # noqa: E402


def test_predictions_use_the_model_threads_not_every_core(window, monkeypatch):
    data = split_window(_first_days(window, 3), FIRST + dt.timedelta(days=2), HORIZON)
    model = fit_lgbm(data.train, {"num_boost_round": 5, "num_leaves": 7}, threads=1)
    assert model.threads == 1
    seen = []
    real = model.booster.predict
    monkeypatch.setattr(model.booster, "predict", lambda X, **kw: seen.append(kw) or real(X, **kw))
    model.predict_proba(data.test)
    assert seen == [{"num_threads": 1}]  # without it LightGBM predicts with all cores (OpenMP default)


def test_one_row_equals_batch_for_nan_rows_too(window):
    data = split_window(_first_days(window, 3), FIRST + dt.timedelta(days=2), HORIZON)
    model = fit_lgbm(data.train, {"num_boost_round": 30, "num_leaves": 15}, threads=1)
    rows = data.test.iloc[:300][FEATURE_COLUMNS].to_numpy(dtype="float64").copy()
    rows[::7, 2] = np.nan
    rows[::11] = np.nan  # all features missing
    batch = model.predict_proba(pd.DataFrame(rows, columns=FEATURE_COLUMNS))
    one = np.array([model.predict_proba(r) for r in rows])
    np.testing.assert_array_equal(one, batch)
    reloaded = LgbmClassifier(lgb.Booster(model_str=model.booster.model_to_string()))
    assert [reloaded.predict_proba(dict(zip(FEATURE_COLUMNS, r))) for r in rows[:20]] == batch[:20].tolist()
    with pytest.raises(FeatureInputError, match="expected 15 values"):
        model.predict_proba(rows[0][:3])


def test_thread_limits_cap_blas_pools_while_training():
    from threadpoolctl import threadpool_info

    with thread_limits(1):
        assert all(pool["num_threads"] == 1 for pool in threadpool_info())


@pytest.mark.parametrize("given, expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_openmp_threads_sleep_when_idle_unless_told_otherwise(given, expected):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given is not None:
        env["OMP_WAIT_POLICY"] = given
    code = "import os, levibot_assets.core.lgbm; print(os.environ['OMP_WAIT_POLICY'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == expected

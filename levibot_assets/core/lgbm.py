"""LightGBM direction classifier: Optuna tuning on purged walk-forward folds, then one refit.

Tuning minimises the mean validation log loss over the folds of core.splits (a proper score: the
trading rule needs calibrated probabilities, not only a good ranking). Each fold's running mean is
reported to Optuna so a MedianPruner can stop hopeless trials early. The best parameters are refit
once on the whole training period; that model is the one saved and evaluated.

Determinism: the TPE sampler is seeded and LightGBM runs with deterministic=True, force_row_wise,
fixed seeds and a fixed thread count, so the same rows give a byte-identical `lgbm.txt` (with an
in-memory study; a study shared by several processes through an RDB seeds each process
differently and depends on their timing, so only the refit from its best trial is deterministic).
The model is stored as LightGBM's native text format, never as a pickle.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import lightgbm as lgb
import numpy as np
import optuna
import pandas as pd

from levibot_assets.core.atomic import atomic_write_text
from levibot_assets.core.features import FEATURE_COLUMNS, LABEL_COLUMN
from levibot_assets.core.metrics import log_loss
from levibot_assets.core.splits import walk_forward_splits
from levibot_assets.settings import Settings

MODEL_FILE = "lgbm.txt"
SEED = 20240601
N_FOLDS = 3
Progress = Callable[[str], None]


class LgbmClassifier:
    """A trained LightGBM booster behind the core.model_api.Classifier protocol."""

    model_type = "lgbm"

    def __init__(self, booster: lgb.Booster):
        self.booster = booster

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """P(up) for every row (LightGBM handles NaN features itself, so no row is left out)."""
        return self.booster.predict(frame[FEATURE_COLUMNS].to_numpy(dtype="float64"))

    def save(self, directory: Path) -> list[Path]:
        return [atomic_write_text(Path(directory) / MODEL_FILE, self.booster.model_to_string())]

    @classmethod
    def load(cls, directory: Path) -> "LgbmClassifier":
        path = Path(directory) / MODEL_FILE
        if not path.is_file():
            raise FileNotFoundError(f"no LightGBM model at {path}")
        return cls(lgb.Booster(model_str=path.read_text(encoding="utf-8")))

    def feature_importance(self) -> dict[str, float]:
        """Total split gain per feature."""
        gains = self.booster.feature_importance(importance_type="gain")
        return dict(zip(self.booster.feature_name(), (float(g) for g in gains)))


def fixed_params(threads: int) -> dict[str, Any]:
    """Parameters that never change: objective, and what makes training reproducible."""
    return {
        "objective": "binary",
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": threads,
        "seed": SEED,
        "bagging_seed": SEED,
        "feature_fraction_seed": SEED,
        "data_random_seed": SEED,
        "bagging_freq": 1,
        "verbosity": -1,
    }


def suggest_params(trial: optuna.Trial) -> dict[str, Any]:
    """The search space (num_boost_round is tuned directly: no early stopping, so refit is exact)."""
    return {
        "num_boost_round": trial.suggest_int("num_boost_round", 20, 400, log=True),
        "learning_rate": trial.suggest_float("learning_rate", 0.005, 0.2, log=True),
        "num_leaves": trial.suggest_int("num_leaves", 4, 64, log=True),
        "min_data_in_leaf": trial.suggest_int("min_data_in_leaf", 20, 1000, log=True),
        "feature_fraction": trial.suggest_float("feature_fraction", 0.4, 1.0),
        "bagging_fraction": trial.suggest_float("bagging_fraction", 0.4, 1.0),
        "lambda_l2": trial.suggest_float("lambda_l2", 1e-3, 100.0, log=True),
    }


def fit_lgbm(train: pd.DataFrame, params: dict[str, Any], threads: int) -> LgbmClassifier:
    """Train one booster on `train` rows with the tuned `params` (including num_boost_round)."""
    params = dict(params)
    rounds = int(params.pop("num_boost_round"))
    data = lgb.Dataset(
        train[FEATURE_COLUMNS].to_numpy(dtype="float64"),
        label=train[LABEL_COLUMN].to_numpy(dtype="float64"),
        feature_name=list(FEATURE_COLUMNS),
        free_raw_data=True,
    )
    booster = lgb.train({**fixed_params(threads), **params}, data, num_boost_round=rounds)
    return LgbmClassifier(booster)


@dataclass
class TuningResult:
    best_params: dict[str, Any]
    best_value: float
    study: optuna.Study
    n_trials: int  # finished trials in the study (complete + pruned), all processes together
    n_pruned: int
    seconds: float
    folds: int = N_FOLDS


def _objective(train: pd.DataFrame, folds, threads: int) -> Callable[[optuna.Trial], float]:
    def objective(trial: optuna.Trial) -> float:
        params = suggest_params(trial)
        losses = []
        for step, fold in enumerate(folds):
            model = fit_lgbm(train.iloc[fold.train], params, threads)
            valid = train.iloc[fold.valid]
            losses.append(log_loss(valid[LABEL_COLUMN].to_numpy(), model.predict_proba(valid)))
            trial.report(float(np.mean(losses)), step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return float(np.mean(losses))

    return objective


def _progress_callback(progress: Progress, total: int) -> Callable[[optuna.Study, optuna.trial.FrozenTrial], None]:
    def report(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        best = f"{study.best_value:.5f} (trial {study.best_trial.number})" if complete else "none yet"
        if trial.state == optuna.trial.TrialState.PRUNED:
            steps = max(trial.intermediate_values) + 1 if trial.intermediate_values else 0
            outcome = f"pruned after {steps} fold(s)"
        else:
            outcome = f"log loss {trial.value:.5f}" if trial.value is not None else trial.state.name.lower()
        progress(f"optuna trial {trial.number + 1}/{total}: {outcome}; best so far {best}")

    return report


def _finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return study.get_trials(deepcopy=False, states=states)


def _open_study(storage: str | None, study_name: str | None) -> optuna.Study:
    """Create or join the study; retried once because two workers creating Optuna's schema in an
    empty database at the same instant collide (optuna/optuna#1092)."""
    import sqlalchemy.exc

    def create() -> optuna.Study:
        return optuna.create_study(
            storage=storage or None,
            study_name=study_name,
            load_if_exists=bool(storage),
            direction="minimize",
            # Workers sharing a study need different seeds, or they would all propose the same trials.
            sampler=optuna.samplers.TPESampler(seed=SEED + os.getpid() if storage else SEED),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0),
        )

    try:
        return create()
    except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
        time.sleep(0.5)
        return create()


def tune(
    train: pd.DataFrame,
    settings: Settings,
    *,
    storage: str | None = None,
    study_name: str | None = None,
    n_trials: int | None = None,
    progress: Progress | None = None,
) -> TuningResult:
    """Tune on purged walk-forward folds of `train`; returns the study's best parameters.

    With `storage` (an RDB URL such as postgresql+psycopg2://..., default settings.optuna_storage) the study
    `study_name` is created or joined (load_if_exists), so several processes calling tune() at once
    share its trials; together they stop at `n_trials` finished trials (default
    settings.optuna_trials). Without storage the study lives in memory and is deterministic.
    """
    storage = storage if storage is not None else settings.optuna_storage
    n_trials = n_trials if n_trials is not None else settings.optuna_trials
    if storage and not study_name:
        raise ValueError("a shared Optuna storage needs a study_name (one per (date, symbol))")
    folds = walk_forward_splits(train["timestamp"], settings.label_horizon, n_folds=N_FOLDS)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = _open_study(storage, study_name)
    started = time.perf_counter()
    remaining = n_trials - len(_finished(study))
    if remaining > 0:
        callbacks = [optuna.study.MaxTrialsCallback(n_trials, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))]
        if progress is not None:
            callbacks.append(_progress_callback(progress, n_trials))
        study.optimize(_objective(train, folds, settings.threads), n_trials=remaining, callbacks=callbacks)
    finished = _finished(study)
    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in finished):
        raise RuntimeError(f"Optuna study {study_name or '(in memory)'} has no completed trial to take parameters from")
    return TuningResult(
        best_params=dict(study.best_params),
        best_value=float(study.best_value),
        study=study,
        n_trials=len(finished),
        n_pruned=sum(t.state == optuna.trial.TrialState.PRUNED for t in finished),
        seconds=time.perf_counter() - started,
    )


@dataclass
class LgbmTraining:
    model: LgbmClassifier
    tuning: TuningResult
    train_seconds: float  # tuning + refit

    def facts(self) -> dict[str, Any]:
        """Training facts for the metrics JSON and Dagster metadata."""
        return {
            "train_seconds": round(self.train_seconds, 3),
            "trials": self.tuning.n_trials,
            "pruned_trials": self.tuning.n_pruned,
            "cv_log_loss": self.tuning.best_value,
            "cv_folds": self.tuning.folds,
            "best_params": self.tuning.best_params,
        }


def train_lgbm(
    train: pd.DataFrame,
    settings: Settings,
    *,
    study_name: str | None = None,
    progress: Progress | None = None,
) -> LgbmTraining:
    """Tune (see tune) and refit the best parameters on every training row."""
    started = time.perf_counter()
    tuning = tune(train, settings, study_name=study_name, progress=progress)
    model = fit_lgbm(train, tuning.best_params, settings.threads)
    return LgbmTraining(model=model, tuning=tuning, train_seconds=time.perf_counter() - started)

"""LightGBM direction classifier: Optuna tuning on purged walk-forward folds, then one refit.

Tuning minimises the mean validation log loss over the folds of core.splits (a proper score: the
trading rule needs calibrated probabilities, not only a good ranking). Each fold's running mean is
reported to Optuna so a MedianPruner can stop hopeless trials early. The best parameters are refit
once on the whole training period; that model is the one saved and evaluated. One trial in an
in-memory study has nothing to choose between: its parameters are drawn and refit, no fold is
fitted, and the facts say so (cv_folds 0, cv_log_loss None).

Determinism: the TPE sampler is seeded and LightGBM runs with deterministic=True, force_row_wise,
fixed seeds and a fixed thread count, so the same rows give a byte-identical `lgbm.txt` (with an
in-memory study; a study shared by several processes through an RDB seeds each process
differently and depends on their timing, so only the refit from its best trial is deterministic).
The model is stored as LightGBM's native text format, never as a pickle.

Threads: every LightGBM call (training, Dataset construction, batch prediction) gets an explicit
num_threads (`threads`: the run's share of the cores, LEVIBOT_THREADS, see
settings.default_threads), and BLAS/OpenMP pools are capped to the same number with threadpoolctl
while a model trains, so several runs at once never ask for more threads than there are cores.

Serving: `LgbmClassifier.predict_proba` takes a features frame (batch: an array of P(up)), or one
row as a mapping of feature name to value or a 1-D sequence in FEATURE_COLUMNS order (a float). One
row goes through LightGBM's single-row C API (LGBM_BoosterPredictForMatSingleRowFast, prepared once
per model), which returns exactly what Booster.predict returns for that row without its per-call
setup or pandas' column selection.
"""
from __future__ import annotations

import ctypes
import os
import sys
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

# Idle OpenMP threads sleep instead of spinning (libgomp reads this once, when it is loaded, which
# importing lightgbm does): with several runs on few cores, spinning threads took the cores the
# other runs needed (BENCHMARKS.md section 4). An OMP_WAIT_POLICY already set, even empty, is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _import_lightgbm():
    """lightgbm, without the scikit-learn it imports when installed (with scipy: about 0.7 s of CPU
    at each process start, most of `levibot predict`'s cold start) for its sklearn-style API, which
    this module never uses (Booster, Dataset and train only). sklearn stays importable afterwards;
    only lightgbm's own sklearn wrappers are disabled, and not at all if sklearn was imported first."""
    if "sklearn" in sys.modules:
        import lightgbm

        return lightgbm
    sys.modules["sklearn"] = None  # type: ignore[assignment]  # `import sklearn` raises ImportError
    try:
        import lightgbm
    finally:
        if sys.modules.get("sklearn", ...) is None:
            del sys.modules["sklearn"]
    return lightgbm


lgb = _import_lightgbm()
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

if TYPE_CHECKING:  # optuna is imported where a model is tuned: loading one to serve needs none of it
    import optuna

from levibot_assets.core.atomic import atomic_write_text
from levibot_assets.core.features import FEATURE_COLUMNS, LABEL_COLUMN
from levibot_assets.core.metrics import log_loss
from levibot_assets.core.model_api import MODEL_FAMILIES, FeatureInputError, Fitted, TrainingConfig, thread_limits
from levibot_assets.core.splits import walk_forward_splits

MODEL_FILE = MODEL_FAMILIES["lgbm"].main_file
SEED = 20240601
N_FOLDS = 3
Progress = Callable[[str], None]
N_FEATURES = len(FEATURE_COLUMNS)
_Row = ctypes.c_double * N_FEATURES
_C_API_PREDICT_NORMAL, _C_API_DTYPE_FLOAT64 = 0, 1


def _missing_error(names) -> FeatureInputError:
    missing = [c for c in FEATURE_COLUMNS if c not in names]
    return FeatureInputError(f"missing feature(s) {missing}; the model needs all of FEATURE_COLUMNS: {FEATURE_COLUMNS}")


def _value_error(values, exc: Exception) -> FeatureInputError:
    for name, value in zip(FEATURE_COLUMNS, values):
        try:
            ctypes.c_double(value)  # the one-row path's own rule: real numbers only, no strings
        except (TypeError, ValueError):
            return FeatureInputError(
                f"feature {name!r} is {value!r}: values must be real numbers (use float('nan') for a missing value)"
            )
    return FeatureInputError(f"features must be real numbers ({exc})")


def _lib() -> ctypes.CDLL:
    """LightGBM's shared library under a private ctypes handle (argtypes set here touch nothing of lightgbm's)."""
    lib = ctypes.CDLL(lgb.basic._LIB._name)
    lib.LGBM_BoosterPredictForMatSingleRowFastInit.argtypes = [
        ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int32,
        ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p),
    ]
    lib.LGBM_BoosterPredictForMatSingleRowFast.argtypes = [
        ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_int64), ctypes.POINTER(ctypes.c_double),
    ]
    lib.LGBM_FastConfigFree.argtypes = [ctypes.c_void_p]
    lib.LGBM_GetLastError.restype = ctypes.c_char_p
    return lib


_LIB = None
_LIB_LOCK = threading.Lock()


def _free_fast_config(lib: ctypes.CDLL, handle: ctypes.c_void_p, booster: lgb.Booster) -> None:
    lib.LGBM_FastConfigFree(handle)  # `booster` rides along so it outlives the config that points into it


class _SingleRow:
    """One-row prediction through LGBM_BoosterPredictForMatSingleRowFast, set up once per booster.

    Same predictor, same trees, same sigmoid as Booster.predict (results are bit-identical); one
    thread (a single row has nothing to parallelise). Calls are serialised by a lock: LightGBM's
    single-row predictor reuses buffers.
    """

    def __init__(self, booster: lgb.Booster):
        global _LIB
        with _LIB_LOCK:
            if _LIB is None:
                _LIB = _lib()
        if booster.num_feature() != N_FEATURES:
            raise FeatureInputError(f"the model has {booster.num_feature()} features, the contract {N_FEATURES}")
        handle = ctypes.c_void_p()
        iteration = booster.best_iteration if booster.best_iteration > 0 else -1  # as Booster.predict
        status = _LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
            booster._handle, _C_API_PREDICT_NORMAL, 0, iteration, _C_API_DTYPE_FLOAT64, N_FEATURES,
            b"num_threads=1", ctypes.byref(handle),
        )
        if status != 0:
            raise lgb.basic.LightGBMError(_LIB.LGBM_GetLastError().decode())
        self._handle = handle
        self._call = _LIB.LGBM_BoosterPredictForMatSingleRowFast
        self._lock = threading.Lock()
        weakref.finalize(self, _free_fast_config, _LIB, handle, booster)

    def __call__(self, row: ctypes.Array) -> float:
        out, out_len = ctypes.c_double(), ctypes.c_int64()
        with self._lock:
            status = self._call(self._handle, row, ctypes.byref(out_len), ctypes.byref(out))
        if status != 0 or out_len.value != 1:
            raise lgb.basic.LightGBMError(_LIB.LGBM_GetLastError().decode() if status else "expected one prediction")
        return out.value


class LgbmClassifier:
    """A trained LightGBM booster behind the core.model_api.Classifier protocol.

    `threads`: OpenMP threads for batch predictions (LightGBM would otherwise take every core);
    one-row predictions always use one.
    """

    model_type = "lgbm"
    scores_single_rows = True  # predict_proba takes one row as a mapping or a sequence (serving's fast path)

    def __init__(self, booster: lgb.Booster, threads: int = 1):
        self.booster = booster
        self.threads = threads
        self._single_row: _SingleRow | None = None

    def predict_proba(self, features) -> np.ndarray | float:
        """P(up) from the model; LightGBM treats NaN features as missing, so no row is left out.

        - DataFrame (a batch; extra columns are ignored): an array, one probability per row.
        - Mapping of feature name -> number (a dict, or a pandas Series such as frame.iloc[i];
          extra keys are ignored), or a 1-D sequence/array of N_FEATURES numbers in FEATURE_COLUMNS
          order: one row, a float.
        - 2-D array of N_FEATURES columns in FEATURE_COLUMNS order: an array.
        Anything else, a missing feature, a wrong length or a non-numeric value: FeatureInputError.
        """
        if isinstance(features, np.ndarray):
            if features.ndim == 1:
                return self._predict_row(self._array_row(features))
            if features.ndim == 2 and features.shape[1] == N_FEATURES:
                return self._predict_matrix(features)
            raise FeatureInputError(
                f"expected one row of {N_FEATURES} values or a (rows, {N_FEATURES}) array in FEATURE_COLUMNS order, "
                f"got an array of shape {features.shape}"
            )
        if isinstance(features, pd.DataFrame):
            try:
                matrix = features[FEATURE_COLUMNS]
            except KeyError:
                raise _missing_error(set(features.columns)) from None
            return self._predict_matrix(matrix.to_numpy(dtype="float64"))
        if isinstance(features, (Mapping, pd.Series)):
            try:
                values = [features[name] for name in FEATURE_COLUMNS]
            except KeyError:
                raise _missing_error(set(features.keys())) from None
            return self._predict_row(self._values_row(values))
        if isinstance(features, (list, tuple)):
            if len(features) != N_FEATURES:
                raise FeatureInputError(self._length_message(len(features)))
            return self._predict_row(self._values_row(features))
        raise FeatureInputError(
            f"predict_proba takes a DataFrame (rows), a mapping of feature name to value or a 1-D sequence "
            f"of {N_FEATURES} values in FEATURE_COLUMNS order (one row), not {type(features).__name__}"
        )

    def _predict_matrix(self, matrix: np.ndarray) -> np.ndarray:
        return self.booster.predict(matrix, num_threads=self.threads)

    def _predict_row(self, row: ctypes.Array) -> float:
        if self._single_row is None:
            self._single_row = _SingleRow(self.booster)  # racing threads may both build one: harmless
        return self._single_row(row)

    @staticmethod
    def _length_message(n: int) -> str:
        return f"expected {N_FEATURES} values in FEATURE_COLUMNS order {FEATURE_COLUMNS}, got {n}"

    @staticmethod
    def _values_row(values) -> ctypes.Array:
        try:
            return _Row(*values)
        except TypeError as exc:
            raise _value_error(values, exc) from None

    def _array_row(self, array: np.ndarray) -> ctypes.Array:
        if array.shape[0] != N_FEATURES:
            raise FeatureInputError(self._length_message(array.shape[0]))
        if array.dtype != np.float64 or not array.flags.c_contiguous:
            try:
                array = np.ascontiguousarray(array, dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise _value_error(list(array), exc) from None
        return _Row.from_buffer_copy(array)

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
    return LgbmClassifier(booster, threads=threads)


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
    import optuna

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


PROGRESS_LINES = 8  # trial lines per study at most: in a Dagster run each line is an event-log write


def _progress_callback(progress: Progress, total: int) -> Callable[[optuna.Study, optuna.trial.FrozenTrial], None]:
    import optuna

    every = -(-total // PROGRESS_LINES)  # ceil: every trial up to 8 trials, every 4th of 32, the last one always

    def report(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if (trial.number + 1) % every and trial.number + 1 != total:
            return
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
    import optuna

    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return study.get_trials(deepcopy=False, states=states)


def _open_study(storage: str | None, study_name: str | None) -> optuna.Study:
    """Create or join the study; retried once because two workers creating Optuna's schema in an
    empty database at the same instant collide (optuna/optuna#1092)."""
    import optuna
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
    *,
    horizon: int,
    n_trials: int,
    threads: int,
    storage: str | None = None,
    study_name: str | None = None,
    progress: Progress | None = None,
) -> TuningResult:
    """Tune on purged walk-forward folds of `train` (purged for `horizon`-bar labels); returns the
    study's best parameters. Every LightGBM call gets `threads` threads.

    With `storage` (an RDB URL such as postgresql+psycopg2://..., LEVIBOT_OPTUNA_STORAGE) the study
    `study_name` is created or joined (load_if_exists), so several processes calling tune() at once
    share its trials; together they stop at `n_trials` finished trials. Without storage the study
    lives in memory and is deterministic.
    """
    import optuna

    if storage and not study_name:
        raise ValueError("a shared Optuna storage needs a study_name (one per (date, symbol))")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = _open_study(storage, study_name)
    if n_trials == 1 and not storage:
        return _single_draw(study, progress)
    folds = walk_forward_splits(train["timestamp"], horizon, n_folds=N_FOLDS)
    started = time.perf_counter()
    remaining = n_trials - len(_finished(study))
    if remaining > 0:
        callbacks = [optuna.study.MaxTrialsCallback(n_trials, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))]
        if progress is not None:
            callbacks.append(_progress_callback(progress, n_trials))
        with thread_limits(threads):
            study.optimize(_objective(train, folds, threads), n_trials=remaining, callbacks=callbacks)
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


def _single_draw(study: optuna.Study, progress: Progress | None) -> TuningResult:
    """One trial in a study of its own: its parameters are the seeded sampler's first draw whatever
    the folds would score, so they are not scored (the 3 fold fits were most of a 1-trial training).
    The refit, and so the model, is the one a scored trial gives; cv_log_loss is None, cv_folds 0."""
    started = time.perf_counter()
    params = suggest_params(study.ask())
    if progress is not None:
        progress("optuna: 1 trial, parameters drawn once (nothing to choose between, so no cross-validation)")
    return TuningResult(best_params=params, best_value=float("nan"), study=study, n_trials=1, n_pruned=0,
                        seconds=time.perf_counter() - started, folds=0)


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
            "cv_log_loss": self.tuning.best_value if self.tuning.folds else None,
            "cv_folds": self.tuning.folds,
            "best_params": self.tuning.best_params,
        }


def train_lgbm(
    train: pd.DataFrame,
    *,
    horizon: int,
    n_trials: int,
    threads: int,
    storage: str | None = None,
    study_name: str | None = None,
    progress: Progress | None = None,
) -> LgbmTraining:
    """Tune (see tune, which takes the same arguments) and refit the best parameters on every training row."""
    started = time.perf_counter()
    tuning = tune(train, horizon=horizon, n_trials=n_trials, threads=threads, storage=storage,
                  study_name=study_name, progress=progress)
    with thread_limits(threads):
        model = fit_lgbm(train, tuning.best_params, threads)
    return LgbmTraining(model=model, tuning=tuning, train_seconds=time.perf_counter() - started)


def fit_family(train: pd.DataFrame, config: TrainingConfig, progress: Progress | None, study_name: str) -> Fitted:
    """The lgbm family's fit (core.model_api): tuned by Optuna, refitted on every training row."""
    training = train_lgbm(train, horizon=config.horizon, n_trials=config.optuna_trials, threads=config.threads,
                          storage=config.optuna_storage, study_name=study_name, progress=progress)
    return Fitted(model=training.model, facts=training.facts(), importance=training.model.feature_importance())

"""Baselines every model is shown beside, each fitted on the training rows only, and the logistic family.

- majority: the training up-rate for every row (predicts the majority class; AUC 0.5 by design).
- last_return_sign: the sign of the last 1-bar return, mapped to the up-rate that followed that
  sign in training (Laplace-smoothed), so it scores as a probability and learns whether the market
  was trending or reverting.
- logistic: standardised, L2-regularised logistic regression on the same features as the models
  (`fit_logistic`: the strength C is chosen by walk-forward AUC inside the training rows). Each fit
  minimises sklearn's LogisticRegression objective by Newton steps in numpy (`_newton_logistic`, 16
  parameters) to a gradient of LOGISTIC_TOL, 3-4 steps: its coefficients match sklearn's
  newton-cholesky solver to about 1e-12. sklearn's default (lbfgs, tol 1e-4) stopped up to 4e-3 in
  P(up) away from the optimum; a 13-day window's 7 fits took 132 ms CPU with it, 68 ms with
  newton-cholesky, 56 ms here, and importing sklearn cost about 1 s per process (BENCHMARKS.md).

The logistic model is also a releasable candidate family (`LogisticClassifier`, model type
"logistic", saved as coefficients + scaler in JSON). Where it competes as a candidate (best_release)
it is not also a baseline: `rule_baselines` leaves every baseline that is a candidate out, so the
"beats the best baseline" rule compares the models with majority and last_return_sign, never a
model with itself.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from levibot_assets.core.atomic import atomic_write_text
from levibot_assets.core.features import FEATURE_COLUMNS, LABEL_COLUMN
from levibot_assets.core.metrics import roc_auc
from levibot_assets.core.model_api import MODEL_FAMILIES, TrainedModel, read_model_json
from levibot_assets.core.splits import SplitError, walk_forward_splits

LOGISTIC_FILE = MODEL_FAMILIES["logistic"].main_file
LOGISTIC_FORMAT = 1
# Inverse L2 strengths tried, strongest regularisation first (a tie keeps the stronger one).
LOGISTIC_C_GRID = (0.01, 0.1, 1.0)
LOGISTIC_FOLDS = 2
LOGISTIC_TOL = 1e-8  # largest component of the (mean loss) gradient at the solution
LOGISTIC_MAX_STEPS = 100
DEFAULT_HORIZON = 15


class LogisticClassifier:
    """P(up) = sigmoid(((x - mean) / scale) . coef + intercept), on core.features.FEATURE_COLUMNS.

    Everything it needs is plain numbers in one JSON file: no pickle, nothing executed on load.
    Rows with a NaN feature get NaN. `facts` records how C was chosen (training rows only).
    """

    model_type = "logistic"

    def __init__(self, features: Sequence[str], mean, scale, coef, intercept: float, C: float, facts: dict | None = None):
        self.features = list(features)
        self.mean = np.asarray(mean, dtype="float64")
        self.scale = np.asarray(scale, dtype="float64")
        self.coef = np.asarray(coef, dtype="float64")
        self.intercept = float(intercept)
        self.C = float(C)
        self.facts = dict(facts or {})
        n = len(self.features)
        if not (self.mean.shape == self.scale.shape == self.coef.shape == (n,)):
            raise ValueError(f"logistic model: {n} features but mean/scale/coef of shapes "
                             f"{self.mean.shape}, {self.scale.shape}, {self.coef.shape}")
        if not (np.isfinite(self.mean).all() and np.isfinite(self.coef).all() and (self.scale > 0).all()
                and np.isfinite(self.intercept)):
            raise ValueError("logistic model: non-finite coefficients or a scale that is not positive")

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        x = frame[self.features].to_numpy(dtype="float64")
        return _sigmoid(((x - self.mean) / self.scale) @ self.coef + self.intercept)

    def params(self) -> dict:
        return {"C": self.C, "penalty": "l2", "n_features": len(self.features)}

    def to_json(self) -> dict:
        return {
            "format": LOGISTIC_FORMAT,
            "model_type": self.model_type,
            "features": self.features,
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "coef": self.coef.tolist(),
            "intercept": self.intercept,
            "C": self.C,
            "facts": self.facts,
        }

    def save(self, directory: Path) -> list[Path]:
        text = json.dumps(self.to_json(), indent=1, sort_keys=True, allow_nan=False)
        return [atomic_write_text(Path(directory) / LOGISTIC_FILE, text + "\n")]

    @classmethod
    def load(cls, directory: Path) -> "LogisticClassifier":
        data = read_model_json(Path(directory) / LOGISTIC_FILE, LOGISTIC_FORMAT, cls.model_type, "a logistic model")
        return cls(data["features"], data["mean"], data["scale"], data["coef"], data["intercept"], data["C"],
                   data.get("facts"))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    """scipy's expit formula in numpy (scipy.special costs ~0.4 s at import, a third of serving's
    cold start): exp(-z) overflowing to inf for very negative z gives exactly 0, as expit does."""
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype="float64")))


def _fit_fixed(x: np.ndarray, y: np.ndarray, C: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(mean, scale, coef, intercept) of an L2 logistic regression on standardised x."""
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[~(scale > 0)] = 1.0  # a constant feature: as StandardScaler does
    coef, intercept = _newton_logistic((x - mean) / scale, y, C)
    return mean, scale, coef, intercept


def _newton_logistic(z: np.ndarray, y: np.ndarray, C: float) -> tuple[np.ndarray, float]:
    """(coef, intercept) minimising mean log loss + |coef|^2 / (2 C n), sklearn's LogisticRegression
    objective (the intercept unpenalised), by Newton steps halved until the objective does not rise."""
    n, d = z.shape
    y = np.asarray(y, dtype="float64")
    classes = np.unique(y)
    if len(classes) < 2:
        raise ValueError(f"logistic regression needs both classes; the {n} rows hold only {classes.tolist()}")
    a = np.hstack([z, np.ones((n, 1))])
    penalty = np.r_[np.full(d, 1.0 / (C * n)), 0.0]
    w = np.zeros(d + 1)

    def objective(w: np.ndarray) -> float:
        margin = a @ w
        return float(np.mean(np.logaddexp(0.0, margin) - y * margin) + 0.5 * np.sum(penalty * w * w))

    value = objective(w)
    for _ in range(LOGISTIC_MAX_STEPS):
        p = _sigmoid(a @ w)
        gradient = a.T @ (p - y) / n + penalty * w
        if np.max(np.abs(gradient)) <= LOGISTIC_TOL:
            return w[:-1].copy(), float(w[-1])
        hessian = (a * (p * (1.0 - p))[:, None]).T @ a / n + np.diag(penalty)
        step, t = np.linalg.solve(hessian, gradient), 1.0
        while (candidate := objective(w - t * step)) > value and t > 2.0**-30:
            t /= 2.0
        w, value = w - t * step, candidate
    raise ValueError(f"logistic regression (C={C}) did not converge in {LOGISTIC_MAX_STEPS} Newton steps on {n} rows")


def fit_logistic(
    train: pd.DataFrame, horizon: int = DEFAULT_HORIZON, grid: Sequence[float] = LOGISTIC_C_GRID,
    n_folds: int = LOGISTIC_FOLDS,
) -> LogisticClassifier:
    """Choose C by mean AUC over purged walk-forward folds of `train` (core.splits), refit on all of it.

    Only the training rows are read: the test day never influences C. When the rows are too few
    for the folds (or a fold holds one class), the middle of the grid is taken without selection.
    """
    train = train.sort_values("timestamp", ignore_index=True)
    x = train[FEATURE_COLUMNS].to_numpy(dtype="float64")
    y = train[LABEL_COLUMN].to_numpy().astype(int)
    fold_auc: dict[float, float] = {}
    try:
        folds = walk_forward_splits(train["timestamp"], horizon, n_folds=n_folds)
        for C in grid:
            aucs = []
            for fold in folds:
                mean, scale, coef, intercept = _fit_fixed(x[fold.train], y[fold.train], C)
                p = _sigmoid(((x[fold.valid] - mean) / scale) @ coef + intercept)
                aucs.append(roc_auc(y[fold.valid], p))
            fold_auc[float(C)] = float(np.mean(aucs))
        chosen = max(fold_auc, key=lambda c: (fold_auc[c], -c))
        how = f"walk-forward over {len(folds)} purged folds of the training rows"
    except (SplitError, ValueError) as exc:
        chosen = float(grid[len(grid) // 2])
        how = f"no selection ({exc})"
    mean, scale, coef, intercept = _fit_fixed(x, y, chosen)
    facts = {"C": chosen, "C_grid": [float(c) for c in grid], "fold_auc_by_C": {str(c): a for c, a in fold_auc.items()},
             "selection": how, "train_rows": int(len(train))}
    return LogisticClassifier(FEATURE_COLUMNS, mean, scale, coef, intercept, chosen, facts)


def fit_logistic_candidate(split, horizon: int, candidates=None) -> TrainedModel:
    """The logistic family as a release candidate: fitted on the split's training rows (C chosen inside them)."""
    model = fit_logistic(split.train, horizon)
    return TrainedModel(model=model, metrics={"params": model.params(), **model.facts})


def majority(train: pd.DataFrame, test: pd.DataFrame, horizon: int = DEFAULT_HORIZON) -> np.ndarray:
    return np.full(len(test), float(train[LABEL_COLUMN].mean()))


def last_return_sign(train: pd.DataFrame, test: pd.DataFrame, horizon: int = DEFAULT_HORIZON) -> np.ndarray:
    train_sign, test_sign = np.sign(train["ret_1"].to_numpy()), np.sign(test["ret_1"].to_numpy())
    y = train[LABEL_COLUMN].to_numpy()
    out = np.empty(len(test))
    for s in (-1.0, 0.0, 1.0):
        mask = train_sign == s
        out[test_sign == s] = (y[mask].sum() + 1) / (mask.sum() + 2)
    return out


def logistic(train: pd.DataFrame, test: pd.DataFrame, horizon: int = DEFAULT_HORIZON) -> np.ndarray:
    return fit_logistic(train, horizon).predict_proba(test)


BASELINES = {"majority": majority, "last_return_sign": last_return_sign, "logistic": logistic}


def rule_baselines(candidates: Iterable[str]) -> list[str]:
    """The baselines a candidate must beat: every baseline that is not itself one of the candidates."""
    names = set(candidates)
    return [name for name in BASELINES if name not in names]


def baseline_probabilities(
    train: pd.DataFrame, test: pd.DataFrame, names: Sequence[str] | None = None, horizon: int = DEFAULT_HORIZON
) -> dict[str, np.ndarray]:
    """P(up) of every baseline (or of `names`) for the test rows."""
    unknown = [n for n in (names or []) if n not in BASELINES]
    if unknown:
        raise ValueError(f"unknown baselines {unknown}; known: {', '.join(BASELINES)}")
    return {name: BASELINES[name](train, test, horizon) for name in (names if names is not None else BASELINES)}

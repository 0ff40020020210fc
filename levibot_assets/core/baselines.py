"""Baselines every model is shown beside, each fitted on the training rows only.

- majority: the training up-rate for every row (predicts the majority class; AUC 0.5 by design).
- last_return_sign: the sign of the last 1-bar return, mapped to the up-rate that followed that
  sign in training (Laplace-smoothed), so it scores as a probability and learns whether the market
  was trending or reverting.
- logistic: standardised logistic regression on the same features as the models.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from levibot_assets.core.features import FEATURE_COLUMNS, LABEL_COLUMN

def majority(train: pd.DataFrame, test: pd.DataFrame) -> np.ndarray:
    return np.full(len(test), float(train[LABEL_COLUMN].mean()))


def last_return_sign(train: pd.DataFrame, test: pd.DataFrame) -> np.ndarray:
    train_sign, test_sign = np.sign(train["ret_1"].to_numpy()), np.sign(test["ret_1"].to_numpy())
    y = train[LABEL_COLUMN].to_numpy()
    out = np.empty(len(test))
    for s in (-1.0, 0.0, 1.0):
        mask = train_sign == s
        out[test_sign == s] = (y[mask].sum() + 1) / (mask.sum() + 2)
    return out


def logistic(train: pd.DataFrame, test: pd.DataFrame) -> np.ndarray:
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    model.fit(train[FEATURE_COLUMNS].to_numpy(), train[LABEL_COLUMN].to_numpy().astype(int))
    return model.predict_proba(test[FEATURE_COLUMNS].to_numpy())[:, 1]


BASELINES = {"majority": majority, "last_return_sign": last_return_sign, "logistic": logistic}


def baseline_probabilities(train: pd.DataFrame, test: pd.DataFrame) -> dict[str, np.ndarray]:
    """P(up) of every baseline for the test rows."""
    return {name: fit_predict(train, test) for name, fit_predict in BASELINES.items()}

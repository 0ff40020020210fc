"""What every trained model offers the rest of the pipeline (storage, release, serving).

A model answers P(label = 1) for each row of a features frame (core.features columns). Models
that need history (TFT) read it from the earlier rows of the same frame and return NaN for rows
without enough context; callers pass leading context rows and slice. Models persist themselves in
safe native formats (LightGBM text, a TFT checkpoint, logistic coefficients as JSON) through `save`, which writes atomically and
returns the files it wrote; `load` restores from such a directory.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

# model_type -> "module:Class" implementing Classifier; imported lazily (TFT pulls in torch).
MODEL_CLASSES = {
    "lgbm": "levibot_assets.core.lgbm:LgbmClassifier",
    "tft": "levibot_assets.core.tft:TftClassifier",
    "logistic": "levibot_assets.core.baselines:LogisticClassifier",  # coefficients + scaler as JSON
}


@runtime_checkable
class Classifier(Protocol):
    model_type: str

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray: ...

    def save(self, directory: Path) -> list[Path]: ...

    @classmethod
    def load(cls, directory: Path) -> "Classifier": ...


@dataclass
class TrainedModel:
    """A model with its out-of-sample evaluation and training facts (stored as JSON beside it)."""

    model: Classifier
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def model_type(self) -> str:
        return self.model.model_type


def model_class(model_type: str) -> type:
    try:
        module_name, class_name = MODEL_CLASSES[model_type].split(":")
    except KeyError:
        raise ValueError(f"unknown model type {model_type!r}; known: {', '.join(MODEL_CLASSES)}") from None
    return getattr(importlib.import_module(module_name), class_name)

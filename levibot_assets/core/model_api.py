"""What every trained model offers the rest of the pipeline (storage, release, serving).

A model answers P(label = 1) for each row of a features frame (core.features columns). Models
that need history (TFT) read it from the earlier rows of the same frame and return NaN for rows
without enough context; callers pass leading context rows and slice. Models persist themselves in
safe native formats (LightGBM text, a TFT checkpoint, logistic coefficients as JSON) through `save`, which writes atomically and
returns the files it wrote; `load` restores from such a directory.
"""
from __future__ import annotations

import importlib
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Protocol, runtime_checkable

import numpy as np
import pandas as pd



class FeatureInputError(ValueError):
    """Features handed to predict_proba do not match the feature contract (message says how)."""


@dataclass(frozen=True)
class ModelFamily:
    """One family of models, named once: the model store, releases, serving and the Dagster assets
    all look a model type up here instead of repeating its class, file or asset name."""

    class_path: str  # "module:Class" implementing Classifier; imported lazily (TFT pulls in torch)
    main_file: str  # the file the model is saved as (what a release's best_<type> link points at)
    asset: str | None = None  # the Dagster asset that trains it; None: best_release fits it itself
    kinds: frozenset[str] = frozenset()  # that asset's kinds in the UI
    # "module:function(split, horizon, candidates) -> TrainedModel" for a family best_release fits
    # from the partition's training rows and the candidates before it (families without an asset)
    release_fit: str | None = None
    # the challenger unless another family's record beats it beyond noise (core.release.evidence)
    preferred: bool = False


# model_type -> ModelFamily
MODEL_FAMILIES: dict[str, ModelFamily] = {
    "lgbm": ModelFamily(
        "levibot_assets.core.lgbm:LgbmClassifier", "lgbm.txt", "lgbm_model", frozenset({"lightgbm", "optuna"})
    ),
    "tft": ModelFamily("levibot_assets.core.tft:TftClassifier", "tft.ckpt", "tft_model", frozenset({"pytorch"})),
    # coefficients + scaler as JSON
    "logistic": ModelFamily(
        "levibot_assets.core.baselines:LogisticClassifier", "logistic.json",
        release_fit="levibot_assets.core.baselines:fit_logistic_candidate",
    ),
    # the average of the candidates above: their files + the list of members
    "ensemble": ModelFamily(
        "levibot_assets.core.ensemble:EnsembleClassifier", "ensemble.json",
        release_fit="levibot_assets.core.ensemble:fit_ensemble", preferred=True,
    ),
}


@contextmanager
def thread_limits(threads: int) -> Iterator[None]:
    """Cap the BLAS and OpenMP thread pools loaded in this process (numpy's OpenBLAS, libgomp) to
    `threads` for the duration (threadpoolctl), for training and for the evaluation's logistic fits
    alike; LightGBM also gets num_threads explicitly."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: without it only the explicit num_threads apply
        yield
        return
    with threadpool_limits(limits=threads):
        yield


def asset_trained_types() -> list[str]:
    """The model types that have their own asset (best_release loads them as candidates)."""
    return [model_type for model_type, family in MODEL_FAMILIES.items() if family.asset]


def preferred_type() -> str | None:
    """The family that stays the challenger unless another beats it beyond noise (the ensemble)."""
    return next((model_type for model_type, family in MODEL_FAMILIES.items() if family.preferred), None)


def release_fitted_types() -> list[str]:
    """The model types best_release fits itself, in registry order (an ensemble after its members)."""
    return [model_type for model_type, family in MODEL_FAMILIES.items() if family.release_fit]


def fit_in_release(model_type: str, split, horizon: int, candidates: Mapping[str, "TrainedModel"]) -> "TrainedModel":
    """Fit a release-fitted family on the partition's split (training rows only) and the candidates so far."""
    module_name, function = MODEL_FAMILIES[model_type].release_fit.split(":")
    return getattr(importlib.import_module(module_name), function)(split, horizon, candidates)


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
        module_name, class_name = MODEL_FAMILIES[model_type].class_path.split(":")
    except KeyError:
        raise ValueError(f"unknown model type {model_type!r}; known: {', '.join(MODEL_FAMILIES)}") from None
    return getattr(importlib.import_module(module_name), class_name)


def load_from_bytes(model_type: str, contents: Mapping[str, bytes]) -> Classifier:
    """Load a model from the bytes of its files, written to a private directory: the bytes a caller
    checked (against a manifest's or a metrics file's sha256) are the ones loaded, not a path that
    could be replaced in between. Checkpoints are pickles, so this matters."""
    with tempfile.TemporaryDirectory(prefix="levibot-model-") as tmp:
        for name, data in contents.items():
            (Path(tmp) / name).write_bytes(data)
        return model_class(model_type).load(Path(tmp))

"""What every trained model offers the rest of the pipeline (storage, release, serving).

A model answers P(label = 1) for each row of a features frame (core.features columns). Models
that need history (TFT) read it from the earlier rows of the same frame and return NaN for rows
without enough context; callers pass leading context rows and slice. Models persist themselves in
safe native formats (LightGBM text, a TFT checkpoint, logistic coefficients as JSON) through `save`, which writes atomically and
returns the files it wrote; `load` restores from such a directory.
"""
from __future__ import annotations

import importlib
import json
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
    """One family of models, named once: the model store, releases, serving, best_release and the
    Dagster assets all derive what they need of a model type from its entry here.

    A family is trained at one of two stages:
    - "asset": by its own asset `<type>_model` (model_asset_name), `fit(train_rows, config:
      TrainingConfig, progress, study_name) -> Fitted`, on the partition's training rows;
    - "release": by best_release, `fit(split, horizon, candidates) -> TrainedModel`, from the same
      training rows and the candidates before it in this registry (an ensemble after its members).
    """

    class_path: str  # "module:Class" implementing Classifier; imported lazily (TFT pulls in torch)
    main_file: str  # the file the model is saved as (what a release's best_<type> link points at)
    fit: str | None = None  # "module:function" with its stage's signature; None: releases load, nothing trains it
    stage: str = "asset"  # "asset" or "release" (see above)
    libraries: tuple[str, ...] = ()  # what it is built with (the asset's kinds in the UI)
    accelerator: bool = False  # trains faster on a GPU: a Kubernetes step pod asks for one
    # the challenger unless another family's record beats it beyond noise (core.release.evidence)
    preferred: bool = False


# model_type -> ModelFamily, in the order candidates are built
MODEL_FAMILIES: dict[str, ModelFamily] = {
    "lgbm": ModelFamily("levibot_assets.core.lgbm:LgbmClassifier", "lgbm.txt", "levibot_assets.core.lgbm:fit_family",
                        libraries=("lightgbm", "optuna")),
    "tft": ModelFamily("levibot_assets.core.tft:TftClassifier", "tft.ckpt", "levibot_assets.core.tft:fit_family",
                       libraries=("pytorch",), accelerator=True),
    # coefficients + scaler as JSON
    "logistic": ModelFamily("levibot_assets.core.baselines:LogisticClassifier", "logistic.json",
                            "levibot_assets.core.baselines:fit_logistic_candidate", stage="release"),
    # the average of the candidates above: their files + the list of members
    "ensemble": ModelFamily("levibot_assets.core.ensemble:EnsembleClassifier", "ensemble.json",
                            "levibot_assets.core.ensemble:fit_ensemble", stage="release", preferred=True),
}


def model_asset_name(model_type: str) -> str:
    """The asset (and partition files) of an asset-trained family: `lgbm_model`, `tft_model`."""
    return f"{model_type}_model"


@dataclass(frozen=True)
class TrainingConfig:
    """What an asset-trained family's fit needs of the pipeline's knobs (resources.pipeline builds it)."""

    horizon: int
    optuna_trials: int
    optuna_storage: str | None
    tft_max_minutes: float
    threads: int


@dataclass
class Fitted:
    """What an asset-trained family's fit hands back: the model, training facts, optional feature importance."""

    model: "Classifier"
    facts: dict[str, Any]
    importance: Mapping[str, float] | None = None


def _function(path: str):
    module_name, name = path.split(":")
    return getattr(importlib.import_module(module_name), name)


def fit_in_asset(model_type: str, train: pd.DataFrame, config: TrainingConfig, progress, study_name: str) -> Fitted:
    """Train an asset-trained family on the partition's training rows."""
    return _function(MODEL_FAMILIES[model_type].fit)(train, config, progress, study_name)


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
    return [model_type for model_type, family in MODEL_FAMILIES.items() if family.fit and family.stage == "asset"]


def preferred_type() -> str | None:
    """The family that stays the challenger unless another beats it beyond noise (the ensemble)."""
    return next((model_type for model_type, family in MODEL_FAMILIES.items() if family.preferred), None)


def release_fitted_types() -> list[str]:
    """The model types best_release fits itself, in registry order (an ensemble after its members)."""
    return [model_type for model_type, family in MODEL_FAMILIES.items() if family.fit and family.stage == "release"]


def fit_in_release(model_type: str, split, horizon: int, candidates: Mapping[str, "TrainedModel"]) -> "TrainedModel":
    """Fit a release-fitted family on the partition's split (training rows only) and the candidates so far."""
    return _function(MODEL_FAMILIES[model_type].fit)(split, horizon, candidates)


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

    @property
    def params(self) -> dict:
        """The hyper-parameters it was trained with (tuned or chosen), as its release records them."""
        return dict(self.metrics.get("best_params") or self.metrics.get("params") or {})


def model_class(model_type: str) -> type:
    try:
        module_name, class_name = MODEL_FAMILIES[model_type].class_path.split(":")
    except KeyError:
        raise ValueError(f"unknown model type {model_type!r}; known: {', '.join(MODEL_FAMILIES)}") from None
    return getattr(importlib.import_module(module_name), class_name)


def read_model_json(path: Path, fmt: int, model_type: str, what: str) -> dict[str, Any]:
    """The JSON a model saved at `path`, refused naming the file unless it is `what` of format `fmt`
    and of `model_type`."""
    data = json.loads(Path(path).read_text())
    if data.get("format") != fmt or data.get("model_type") != model_type:
        raise ValueError(f"{path}: not {what} of format {fmt}")
    return data


def load_from_bytes(model_type: str, contents: Mapping[str, bytes]) -> Classifier:
    """Load a model from the bytes of its files, written to a private directory: the bytes a caller
    checked (against a manifest's or a metrics file's sha256) are the ones loaded, not a path that
    could be replaced in between. Checkpoints are pickles, so this matters."""
    with tempfile.TemporaryDirectory(prefix="levibot-model-") as tmp:
        for name, data in contents.items():
            (Path(tmp) / name).write_bytes(data)
        return model_class(model_type).load(Path(tmp))

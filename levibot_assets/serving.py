"""Serving: the model in service for a symbol, following current/<SYMBOL> without a restart.

    model = load_current("BTCUSDT")          # verifies manifest hashes, then loads
    p_up = model.predict_proba(features)     # per call: one os.readlink; reload if the link moved

With the data directory on an object store, current/<SYMBOL> is a pointer object: reading it is a
GET, so it is read at most every `refresh_s` seconds (default 1 s there, every call on local disk).

`features` is a DataFrame of rows (an array of P(up) back), or, for a LightGBM release, one row:
a mapping of feature name to value ({"ret_1": 0.001, ...}, extra keys ignored) or a 1-D array /
sequence of the values in core.features.FEATURE_COLUMNS order (a float back, through LightGBM's
single-row C API: no pandas on that path). Missing names, a wrong length or non-numeric values
raise FeatureInputError; NaN means "missing" as in the batch path. A TFT release needs a frame
with its context rows.

A release is loaded only from bytes whose sha256 matched its manifest (core.release.store.load_release).
If the link moves to a release that fails verification or loading, the loader keeps answering with
the model it has, records the problem in `last_error`, and does not retry that same target.
"""
from __future__ import annotations

import os
import threading
import time

import numpy as np
import pandas as pd

from levibot_assets.core.atomic import read_link, resolve_link
from levibot_assets.core.layout import DataLayout
from levibot_assets.core.model_api import Classifier, FeatureInputError
from levibot_assets.core.release.store import ReleaseError, load_release
from levibot_assets.settings import get_settings


REMOTE_REFRESH_S = 1.0


class NoRelease(ReleaseError):
    """Nothing is in service for the symbol (no current/<SYMBOL> link)."""


class ServedModel:
    """The current release of one symbol; cheap to call, reloads when the symlink changes."""

    def __init__(self, layout: DataLayout, symbol: str, refresh_s: float | None = None):
        self.layout = layout
        self.symbol = symbol
        self.link = layout.current_link(symbol)
        self.refresh_s = (REMOTE_REFRESH_S if layout.remote else 0.0) if refresh_s is None else refresh_s
        self._checked_at = time.monotonic()
        self._lock = threading.Lock()
        self._target: str | None = None
        self._failed_target: str | None = None
        self.model: Classifier | None = None
        self.manifest: dict = {}
        self.last_error: str | None = None
        self.reloads = 0
        target = self._read_link()
        if target is None:
            raise NoRelease(f"no release in service for {symbol}: {self.link} does not exist")
        self._load(target, strict=True)

    def _read_link(self) -> str | None:
        return read_link(self.link)

    def _load(self, target: str, strict: bool) -> None:
        with self._lock:
            if target in (self._target, self._failed_target):
                return
            try:
                model, manifest = load_release(resolve_link(self.link, target))
            except Exception as exc:
                if strict:
                    raise
                self._failed_target = target
                self.last_error = f"kept {self._target}: could not load {target}: {exc}"
                return
            self.model, self.manifest = model, manifest
            self._target, self._failed_target, self.last_error = target, None, None
            self.reloads += 1

    def refresh(self) -> None:
        """Follow the link if it moved (called before every prediction; one readlink when unchanged)."""
        if self.refresh_s:
            now = time.monotonic()
            if now - self._checked_at < self.refresh_s:
                return
            self._checked_at = now
        target = self._read_link()
        if target is not None and target != self._target and target != self._failed_target:
            self._load(target, strict=False)

    @property
    def release_date(self) -> str:
        return self.manifest["date"]

    @property
    def model_type(self) -> str:
        return self.manifest["model_type"]

    def predict_proba(self, features) -> np.ndarray | float:
        """P(up) from the release in service now: per row of a DataFrame (rows without context give
        NaN), or a float for one row given as a mapping or a 1-D sequence (LightGBM releases)."""
        self.refresh()
        model = self.model
        if model.model_type != "lgbm" and not isinstance(features, pd.DataFrame):
            raise FeatureInputError(
                f"the {model.model_type} release of {self.symbol} scores DataFrames with their context rows only, "
                f"not a single row given as {type(features).__name__}"
            )
        return model.predict_proba(features)


def load_current(symbol: str, data_dir: str | os.PathLike | None = None, refresh_s: float | None = None) -> ServedModel:
    """The model in service for `symbol` under `data_dir` (default: LEVIBOT_DATA_DIR; a path or s3:// URL)."""
    return ServedModel(DataLayout(data_dir or get_settings().data_dir), symbol, refresh_s)


__all__ = ["FeatureInputError", "NoRelease", "ServedModel", "load_current"]

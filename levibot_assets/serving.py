"""Serving: the model in service for a symbol, following current/<SYMBOL> without a restart.

    model = load_current("BTCUSDT")          # verifies manifest hashes, then loads
    p_up = model.predict_proba(features)     # per call: a readlink and a stat; reload if either changed

With the data directory on an object store, current/<SYMBOL> is a pointer object: reading it is a
GET, so it is read at most every `refresh_s` seconds (default 1 s there, every call on local disk).

`features` is a DataFrame of rows (an array of P(up) back), or, for a LightGBM release, one row:
a mapping of feature name to value ({"ret_1": 0.001, ...}, extra keys ignored) or a 1-D array /
sequence of the values in core.features.FEATURE_COLUMNS order (a float back, through LightGBM's
single-row C API: no pandas on that path). Missing names, a wrong length or non-numeric values
raise FeatureInputError; NaN means "missing" as in the batch path. A TFT release needs a frame
with its context rows.

A release is loaded only from bytes whose sha256 matched its manifest (core.release.store.load_release).
The loader reloads when the link moves and when the release it points at is written again (a
re-run of the date in service replaces releases/<date>/<SYMBOL> under an unchanged link: its
manifest's inode, or ETag on S3, changes). If the new release fails verification or loading, the
loader keeps answering with the model it has, records the problem in `last_error`, and does not
retry that same release.
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
from levibot_assets.core.release.store import MANIFEST, ReleaseError, load_release, manifest_version
from levibot_assets.settings import get_settings


REMOTE_REFRESH_S = 1.0


class NoRelease(ReleaseError):
    """Nothing is in service for the symbol (no current/<SYMBOL> link)."""


class ServedModel:
    """The current release of one symbol; cheap to call, reloads when what is in service changes."""

    def __init__(self, layout: DataLayout, symbol: str, refresh_s: float | None = None):
        self.layout = layout
        self.symbol = symbol
        self.link = layout.current_link(symbol)
        self.refresh_s = (REMOTE_REFRESH_S if layout.remote else 0.0) if refresh_s is None else refresh_s
        self._checked_at = time.monotonic()
        self._lock = threading.Lock()
        self._link = self.link if layout.remote else os.fspath(self.link)  # what is read per call
        self._manifest: tuple[str | None, object] = (None, None)  # (link target, its release's manifest)
        self._loaded: tuple | None = None  # (link target, manifest_version) served now
        self._failed: tuple | None = None  # the last one that could not be loaded
        self.model: Classifier | None = None
        self.manifest: dict = {}
        self.last_error: str | None = None
        self.reloads = 0
        state = self._in_service()
        if state is None:
            raise NoRelease(f"no release in service for {symbol}: {self.link} does not exist")
        self._load(state, strict=True)

    def _in_service(self) -> tuple | None:
        """(link target, version of the release it names), None when there is no link."""
        target = read_link(self._link)
        if target is None:
            return None
        manifest = self._manifest
        if manifest[0] != target:  # a new target: build its manifest path once
            path = resolve_link(self.link, target) / MANIFEST
            manifest = self._manifest = (target, path if self.layout.remote else os.fspath(path))
        return target, manifest_version(manifest[1])

    def _load(self, state: tuple, strict: bool) -> None:
        with self._lock:
            if state in (self._loaded, self._failed):
                return
            target = state[0]
            try:
                model, manifest = load_release(resolve_link(self.link, target))
            except Exception as exc:
                if strict:
                    raise
                self._failed = state
                self.last_error = f"kept {self._loaded[0]}: could not load {target}: {exc}"
                return
            self.model, self.manifest = model, manifest
            self._loaded, self._failed, self.last_error = state, None, None
            self.reloads += 1

    def refresh(self) -> None:
        """Reload if what is in service changed (before every prediction: a readlink and a stat)."""
        if self.refresh_s:
            now = time.monotonic()
            if now - self._checked_at < self.refresh_s:
                return
            self._checked_at = now
        state = self._in_service()
        if state is not None and state != self._loaded and state != self._failed:
            self._load(state, strict=False)

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
        if not getattr(model, "scores_single_rows", False) and not isinstance(features, pd.DataFrame):
            raise FeatureInputError(
                f"the {model.model_type} release of {self.symbol} scores DataFrames with their context rows only, "
                f"not a single row given as {type(features).__name__}"
            )
        return model.predict_proba(features)


def load_current(symbol: str, data_dir: str | os.PathLike | None = None, refresh_s: float | None = None) -> ServedModel:
    """The model in service for `symbol` under `data_dir` (default: LEVIBOT_DATA_DIR; a path or s3:// URL)."""
    return ServedModel(DataLayout(data_dir or get_settings().data_dir), symbol, refresh_s)


__all__ = ["FeatureInputError", "NoRelease", "ServedModel", "load_current"]

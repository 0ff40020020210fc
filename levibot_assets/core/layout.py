"""Where every file lives under the data directory. Nothing else in the project builds paths.

    raw_ohlcv/<date>/<SYMBOL>.parquet, features/<date>/<SYMBOL>.parquet
    models/<date>/<SYMBOL>/lgbm.txt, tft.ckpt (+ metrics JSON)
    releases/<date>/<SYMBOL>/..., releases/<date>/summary.json, releases/history.jsonl
    current/<SYMBOL> -> ../releases/<date>/<SYMBOL>
    best_lgbm.txt, best_tft.ckpt -> releases/...   alerts.jsonl
    predictions/<date>/<SYMBOL>.parquet             test-day P(up) of every model scored by best_release
"""
from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path


def _date_str(date: dt.date | str) -> str:
    return date if isinstance(date, str) else date.isoformat()


@dataclass(frozen=True)
class DataLayout:
    root: Path

    def __init__(self, root: str | os.PathLike):
        object.__setattr__(self, "root", Path(root).absolute())

    def table(self, asset: str, date: dt.date | str, symbol: str) -> Path:
        """Dated parquet file of a tabular asset partition."""
        return self.root / asset / _date_str(date) / f"{symbol}.parquet"

    def table_dates(self, asset: str, symbol: str) -> list[str]:
        """Dates (YYYY-MM-DD, oldest first) that have a stored partition of `asset` for `symbol`."""
        base = self.root / asset
        if not base.is_dir():
            return []
        return sorted(d.name for d in base.iterdir() if (d / f"{symbol}.parquet").is_file())

    def predictions(self, date: dt.date | str, symbol: str) -> Path:
        """best_release's test-day predictions of every candidate, baseline and the champion."""
        return self.table("predictions", date, symbol)

    def model_dir(self, date: dt.date | str, symbol: str) -> Path:
        return self.root / "models" / _date_str(date) / symbol

    def model_plot(self, date: dt.date | str, symbol: str, model_type: str) -> Path:
        """The evaluation PNG written beside a partition's model."""
        return self.model_dir(date, symbol) / f"{model_type}_evaluation.png"

    @property
    def releases_dir(self) -> Path:
        return self.root / "releases"

    def release_dir(self, date: dt.date | str, symbol: str) -> Path:
        return self.releases_dir / _date_str(date) / symbol

    def release_summary(self, date: dt.date | str) -> Path:
        return self.releases_dir / _date_str(date) / "summary.json"

    @property
    def release_history(self) -> Path:
        return self.releases_dir / "history.jsonl"

    def release_staging_dir(self, date: dt.date | str, symbol: str, token: str) -> Path:
        """Where a release is assembled before one rename puts it at release_dir (same filesystem)."""
        return self.releases_dir / _date_str(date) / f".{symbol}.staging-{token}"

    @property
    def current_dir(self) -> Path:
        return self.root / "current"

    def current_link(self, symbol: str) -> Path:
        return self.current_dir / symbol

    def best_link(self, model_type: str, suffix: str) -> Path:
        return self.root / f"best_{model_type}{suffix}"

    @property
    def alerts_file(self) -> Path:
        return self.root / "alerts.jsonl"

    @property
    def locks_dir(self) -> Path:
        return self.root / ".locks"

    def lock_file(self, name: str) -> Path:
        """An fcntl.flock lock file shared by processes writing the same thing (e.g. `summary-<date>`)."""
        return self.locks_dir / f"{name}.lock"

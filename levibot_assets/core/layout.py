"""Where every file lives under the data directory. Nothing else in the project builds paths.

    raw_ohlcv/<date>/<SYMBOL>.parquet, features/<date>/<SYMBOL>.parquet
    models/<date>/<SYMBOL>/lgbm.txt, tft.ckpt (+ metrics JSON)
    releases/<date>/<SYMBOL>/..., releases/<date>/summary.json, releases/history.jsonl
    current/<SYMBOL> -> ../releases/<date>/<SYMBOL>
    best_lgbm.txt, best_tft.ckpt -> releases/...   alerts.jsonl
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

    def model_dir(self, date: dt.date | str, symbol: str) -> Path:
        return self.root / "models" / _date_str(date) / symbol

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

    def current_link(self, symbol: str) -> Path:
        return self.root / "current" / symbol

    def best_link(self, model_type: str, suffix: str) -> Path:
        return self.root / f"best_{model_type}{suffix}"

    @property
    def alerts_file(self) -> Path:
        return self.root / "alerts.jsonl"

    @property
    def locks_dir(self) -> Path:
        return self.root / ".locks"

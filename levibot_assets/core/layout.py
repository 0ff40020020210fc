"""Where every file lives under the data directory. Nothing else in the project builds paths.

    raw_ohlcv/<date>/<SYMBOL>.parquet, features/<date>/<SYMBOL>.parquet (+ .parquet.sha256 beside each)
    models/<date>/<SYMBOL>/lgbm.txt, tft.ckpt (+ metrics JSON)
    releases/<date>/<SYMBOL>/..., releases/<date>/summary.json, releases/history.jsonl
    current/<SYMBOL> -> ../releases/<date>/<SYMBOL>
    best_lgbm.txt, best_tft.ckpt -> releases/...   alerts.jsonl
    predictions/<date>/<SYMBOL>.parquet (+ .sha256) test-day P(up) of every model scored by best_release

The root is a local directory (the default) or an object-store URL such as `s3://bucket/prefix`
(core.object_store): the same keys, with pointer objects where the local layout has symlinks.
"""
from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from levibot_assets.core import object_store


def date_str(date: dt.date | str) -> str:
    """YYYY-MM-DD of a date given either way (partition keys and paths use the text)."""
    return date if isinstance(date, str) else date.isoformat()


def partition_label(date: dt.date | str, symbol: str) -> str:
    """`<date>|<SYMBOL>`: the partition key as Dagster writes it, for messages that say what to materialize."""
    return f"{date_str(date)}|{symbol}"


def checksum_file(path):
    """`<file>.sha256` beside a stored data file: the sha256 its reader accepts (core.integrity.write_checked)."""
    return path.with_name(f"{path.name}.sha256")


def open_root(location: str | os.PathLike) -> Path:
    """A local directory as an absolute Path, or an object-store URL (`s3://...`) as its UPath."""
    text = os.fspath(location)
    if object_store.is_url(text):
        return object_store.open_root(text)
    return Path(text.removeprefix("file://")).absolute()


@dataclass(frozen=True)
class DataLayout:
    root: Path

    def __init__(self, root: str | os.PathLike):
        object.__setattr__(self, "root", root if object_store.is_remote(root) else open_root(root))

    @property
    def remote(self) -> bool:
        """True when the data directory is on an object store."""
        return object_store.is_remote(self.root)

    def table(self, asset: str, date: dt.date | str, symbol: str) -> Path:
        """Dated parquet file of a tabular asset partition."""
        return self.root / asset / date_str(date) / f"{symbol}.parquet"

    @staticmethod
    def table_partition(path) -> tuple[str, str, str]:
        """(asset, date, symbol) of a file that `table` named: the inverse of `table`."""
        return path.parent.parent.name, path.parent.name, path.name.removesuffix(".parquet")

    def table_dates(self, asset: str, symbol: str) -> list[str]:
        """Dates (YYYY-MM-DD, oldest first) that have a stored partition of `asset` for `symbol`."""
        return sorted(p.parent.name for p in (self.root / asset).glob(f"*/{symbol}.parquet"))

    def predictions(self, date: dt.date | str, symbol: str) -> Path:
        """best_release's test-day predictions of every candidate, baseline and the champion."""
        return self.table("predictions", date, symbol)

    def model_dir(self, date: dt.date | str, symbol: str) -> Path:
        return self.root / "models" / date_str(date) / symbol

    def model_plot(self, date: dt.date | str, symbol: str, model_type: str) -> Path:
        """The evaluation PNG written beside a partition's model."""
        return self.model_dir(date, symbol) / f"{model_type}_evaluation.png"

    @property
    def releases_dir(self) -> Path:
        return self.root / "releases"

    def release_dir(self, date: dt.date | str, symbol: str) -> Path:
        return self.releases_dir / date_str(date) / symbol

    def release_summary(self, date: dt.date | str) -> Path:
        return self.releases_dir / date_str(date) / "summary.json"

    @property
    def release_history(self) -> Path:
        return self.releases_dir / "history.jsonl"

    def release_staging_dir(self, date: dt.date | str, symbol: str, token: str) -> Path:
        """Where a release is assembled before one rename puts it at release_dir (same filesystem)."""
        return self.releases_dir / date_str(date) / f".{symbol}.staging-{token}"

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

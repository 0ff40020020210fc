"""Trained models of each (date, symbol): models/<date>/<SYMBOL>/<model files> + <type>_metrics.json.

The metrics file is written last, so its presence says the partition's model is complete. Models
save to and load from a local directory; on an object store that directory is a temporary copy.
"""
from __future__ import annotations

import datetime as dt
import json
import tempfile
from pathlib import Path

from levibot_assets.core.atomic import atomic_write_bytes, atomic_write_text
from levibot_assets.core.layout import DataLayout
from levibot_assets.core.model_api import TrainedModel, model_class
from levibot_assets.core.tables import missing_partition


def _metrics_path(layout: DataLayout, date: dt.date | str, symbol: str, model_type: str) -> Path:
    return layout.model_dir(date, symbol) / f"{model_type}_metrics.json"


def save_trained_model(layout: DataLayout, date: dt.date | str, symbol: str, trained: TrainedModel) -> list[Path]:
    """Model files first, metrics last; returns every file written."""
    directory = layout.model_dir(date, symbol)
    if layout.remote:
        with tempfile.TemporaryDirectory(prefix="levibot-model-") as tmp:
            files = [atomic_write_bytes(directory / Path(f).name, Path(f).read_bytes()) for f in trained.model.save(tmp)]
    else:
        files = [Path(f) for f in trained.model.save(directory)]
    metrics = _metrics_path(layout, date, symbol, trained.model_type)
    atomic_write_text(metrics, json.dumps(trained.metrics, indent=2, sort_keys=True, default=str))
    return files + [metrics]


def load_trained_model(layout: DataLayout, model_type: str, date: dt.date | str, symbol: str) -> TrainedModel:
    metrics = _metrics_path(layout, date, symbol, model_type)
    if not metrics.exists():
        raise missing_partition(f"{model_type}_model", date, symbol, metrics)
    directory = layout.model_dir(date, symbol)
    if layout.remote:
        with tempfile.TemporaryDirectory(prefix="levibot-model-") as tmp:
            for stored in directory.iterdir():
                if stored.suffix != ".png":
                    (Path(tmp) / stored.name).write_bytes(stored.read_bytes())
            model = model_class(model_type).load(Path(tmp))
    else:
        model = model_class(model_type).load(directory)
    return TrainedModel(model=model, metrics=json.loads(metrics.read_text()))

"""Trained models of each (date, symbol): models/<date>/<SYMBOL>/<model files> + <type>_metrics.json.

The metrics file is written last, so its presence says the partition's model is complete.
"""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from levibot_assets.core.atomic import atomic_write_text
from levibot_assets.core.layout import DataLayout
from levibot_assets.core.model_api import TrainedModel, model_class
from levibot_assets.core.tables import missing_partition


def _metrics_path(layout: DataLayout, date: dt.date | str, symbol: str, model_type: str) -> Path:
    return layout.model_dir(date, symbol) / f"{model_type}_metrics.json"


def save_trained_model(layout: DataLayout, date: dt.date | str, symbol: str, trained: TrainedModel) -> list[Path]:
    """Model files first, metrics last; returns every file written."""
    files = [Path(f) for f in trained.model.save(layout.model_dir(date, symbol))]
    metrics = _metrics_path(layout, date, symbol, trained.model_type)
    atomic_write_text(metrics, json.dumps(trained.metrics, indent=2, sort_keys=True, default=str))
    return files + [metrics]


def load_trained_model(layout: DataLayout, model_type: str, date: dt.date | str, symbol: str) -> TrainedModel:
    metrics = _metrics_path(layout, date, symbol, model_type)
    if not metrics.exists():
        raise missing_partition(f"{model_type}_model", date, symbol, metrics)
    model = model_class(model_type).load(layout.model_dir(date, symbol))
    return TrainedModel(model=model, metrics=json.loads(metrics.read_text()))

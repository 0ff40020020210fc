"""Trained models of each (date, symbol): models/<date>/<SYMBOL>/<model files> + <type>_metrics.json.

The metrics file is written last, so its presence says the partition's model is complete, and it
records the sha256 of every model file: a run killed between writing a new model file and its
metrics leaves a pair that does not match, which loading refuses (naming the partition to
materialize again) instead of pairing a new model with the old model's metrics. Models save to and
load from a local directory; on an object store that directory is a temporary copy.
"""
from __future__ import annotations

import datetime as dt
import json
import tempfile
from pathlib import Path

from levibot_assets.core.atomic import atomic_write_bytes, atomic_write_text, read_text
from levibot_assets.core.integrity import MISSING, sha256_bytes, verify
from levibot_assets.core.layout import DataLayout, partition_label
from levibot_assets.core.model_api import TrainedModel, load_from_bytes, model_asset_name, model_class
from levibot_assets.core.tables import MissingPartition, missing_partition

FILES_KEY = "model_files_sha256"  # in the metrics file: {file name: sha256} of the model files it goes with


def _metrics_path(layout: DataLayout, date: dt.date | str, symbol: str, model_type: str) -> Path:
    return layout.model_dir(date, symbol) / f"{model_type}_metrics.json"


def save_trained_model(layout: DataLayout, date: dt.date | str, symbol: str, trained: TrainedModel) -> list[Path]:
    """Model files first, metrics (with the files' sha256) last; returns every file written."""
    directory = layout.model_dir(date, symbol)
    with tempfile.TemporaryDirectory(prefix="levibot-model-") as tmp:
        saved = {Path(f).name: Path(f).read_bytes() for f in trained.model.save(tmp if layout.remote else directory)}
        if layout.remote:
            for name, data in saved.items():
                atomic_write_bytes(directory / name, data)
    metrics = _metrics_path(layout, date, symbol, trained.model_type)
    record = {**trained.metrics, FILES_KEY: {name: sha256_bytes(data) for name, data in saved.items()}}
    atomic_write_text(metrics, json.dumps(record, indent=2, sort_keys=True, default=str))
    return [directory / name for name in saved] + [metrics]


def load_trained_model(layout: DataLayout, model_type: str, date: dt.date | str, symbol: str) -> TrainedModel:
    metrics_path = _metrics_path(layout, date, symbol, model_type)
    if not metrics_path.exists():
        raise missing_partition(model_asset_name(model_type), date, symbol, metrics_path)
    metrics = json.loads(read_text(metrics_path))
    expected = metrics.pop(FILES_KEY, None)
    directory = layout.model_dir(date, symbol)
    if expected is None:  # metrics written before they recorded the files (local disk only)
        return TrainedModel(model=model_class(model_type).load(directory), metrics=metrics)
    contents, problems = verify({name: (directory / name, sha256) for name, sha256 in expected.items()})
    if problems:
        name, problem = next(iter(problems.items()))
        raise MissingPartition(
            f"{directory / name} is {'missing' if problem == MISSING else 'not the model'} {metrics_path.name} "
            f"describes (a run stopped between writing them): materialize {model_asset_name(model_type)} for {partition_label(date, symbol)} again"
        )
    return TrainedModel(model=load_from_bytes(model_type, contents), metrics=metrics)

"""Model assets: each trains on the trailing feature window and is scored on its own date (the test day).

The window (LEVIBOT_TRAIN_DAYS days of features, test day included) is read from storage one
partition at a time, so a range run holds one window in memory; only the test day's features
are declared upstream, so a backfill of dates D1..D2 targets exactly those dates.

Every model asset is built from its family's registry entry (core.model_api.MODEL_FAMILIES,
build_model_asset): `train_and_evaluate(...)` plus the family's fit: the window is split into
purged training rows and test-day rows (core.dataset), the model is fitted on the training rows
only, then it and the baselines are scored on the same test rows (core.evaluation). The scores
go into TrainedModel.metrics (stored as JSON beside the model) and into Dagster metadata.

A range run reads each feature day once (core.dataset.DayCache). Presentation stays out of a long
range's inner loop: a run of more than PRESENT_ALL_UP_TO partitions renders the evaluation plot
and logs the per-partition details (training rows, training progress, the score table) only for the
newest date of each symbol; every partition still gets its scores, table and checks, and
materializing a partition alone (or in a short range) renders its plot.

No `from __future__ import annotations` here: Dagster inspects the context type hint at runtime.
"""

import base64
from typing import Any, Callable, Mapping

import dagster as dg

from levibot_assets.assets.partition_runs import PartitionResult, materialize_partitions, partitioned_asset
from levibot_assets.checks import drift_check_result, model_check_results, model_checks
from levibot_assets.core.atomic import atomic_write_bytes
from levibot_assets.core.dataset import DayCache, TrainTest, align_to_rows, load_feature_window, split_window
from levibot_assets.core.evaluation import Evaluation, Scoring, evaluate_models
from levibot_assets.core.features import contract_version
from levibot_assets.core.metrics import METRICS
from levibot_assets.core.model_api import (
    MODEL_FAMILIES, Fitted, TrainedModel, asset_trained_types, fit_in_asset, model_asset_name, thread_limits,
)
from levibot_assets.core.model_store import save_trained_model
from levibot_assets.core.plots import evaluation_png
from levibot_assets.core.splits import purge_gap
from levibot_assets.partitions import parse_partition_key
from levibot_assets.resources.pipeline import PipelineConfig
from levibot_assets.resources.storage import StorageResource

HEADLINE_SCORES = tuple(METRICS)
HEADLINE_FACTS = ("train_seconds", "trials", "pruned_trials", "epochs")
PRESENT_ALL_UP_TO = 7  # partitions of a run that all get a plot and detailed logs (a week of one symbol)
MAX_CACHED_DAYS = 256  # feature days a run keeps parsed (about 0.25 MB each)


FitFunction = Callable[[TrainTest, PipelineConfig, Callable[[str], None], str], Fitted]


def presented(partitions: list[tuple[Any, str]]) -> set[tuple[Any, str]]:
    """The (date, symbol) partitions of a run that get a plot and detailed logs: all of a short run,
    the newest date of each symbol in a longer one."""
    if len(partitions) <= PRESENT_ALL_UP_TO:
        return set(partitions)
    newest: dict[str, Any] = {}
    for date, symbol in partitions:
        newest[symbol] = max(date, newest.get(symbol, date))
    return {(date, symbol) for symbol, date in newest.items()}


def _quiet(message: str) -> None:
    """Progress of a partition whose details are not logged (see `presented`)."""


def _metadata(evaluation: Evaluation, model_type: str, facts: dict[str, Any], png: bytes | None, run_size: int) -> dict:
    scores = evaluation.scores[model_type]
    best_name, best_auc = evaluation.best_baseline("auc")
    meta: dict[str, Any] = {name: dg.MetadataValue.float(float(scores[name])) for name in HEADLINE_SCORES}
    meta["n_trades"] = dg.MetadataValue.int(int(scores["n_trades"]))
    meta["best_baseline_auc"] = dg.MetadataValue.float(float(best_auc))
    meta["best_baseline"] = dg.MetadataValue.text(best_name)
    for name in HEADLINE_FACTS:
        if name in facts:
            value = facts[name]
            meta[name] = dg.MetadataValue.int(value) if isinstance(value, int) else dg.MetadataValue.float(float(value))
    meta["test_rows"] = dg.MetadataValue.int(evaluation.facts["n_test_rows"])
    meta["train_rows"] = dg.MetadataValue.int(evaluation.facts["n_train_rows"])
    meta["comparison"] = dg.MetadataValue.md(evaluation.markdown_table())
    meta["plot"] = dg.MetadataValue.md(
        f"![evaluation](data:image/png;base64,{base64.b64encode(png).decode()})" if png is not None else
        f"not rendered: a run of {run_size} partitions plots only the newest date of each symbol; "
        "materialize this partition alone to get its plot"
    )
    return meta


def train_and_evaluate(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    pipeline: PipelineConfig,
    model_type: str,
    fit: FitFunction,
    with_drift: bool = False,
):
    """For each partition: split its window, fit on the training rows, score the test day, check, store."""
    layout = storage.layout
    partitions = [parse_partition_key(key) for key in context.partition_keys]
    shown = presented(partitions)
    symbols = {symbol for _, symbol in partitions}
    days = DayCache(min(MAX_CACHED_DAYS, pipeline.train_days * len(symbols)))

    def compute(date, symbol: str) -> PartitionResult:
        present = (date, symbol) in shown
        log = context.log.info if present else _quiet
        features = load_feature_window(layout, symbol, date, pipeline.train_days, pipeline.label_horizon, days)
        data = split_window(features, date, pipeline.label_horizon)
        log(
            f"{model_type} {symbol} {date}: {len(data.train)} training rows from {len(features) - 1} day(s), "
            f"{len(data.test)} test rows"
        )
        fitted = fit(data, pipeline, log, f"{model_type}-{date.isoformat()}-{symbol}")
        on_context = fitted.model.predict_proba(data.context)
        proba, calibration = (align_to_rows(data.context, on_context, rows) for rows in (data.test, data.train))
        with thread_limits(pipeline.threads):  # the logistic baseline's BLAS too: unbounded, it spun on busy cores
            evaluation = evaluate_models(data.test, {model_type: proba}, data.train, pipeline.scoring,
                                         calibration={model_type: calibration})
        png = evaluation_png(evaluation, f"{symbol} {date} {model_type}", fitted.importance) if present else None
        metrics = {
            "model_type": model_type,
            "symbol": symbol,
            "test_date": date.isoformat(),
            "train_days": sorted(d for d in features if d < date.isoformat()),
            **fitted.facts,
            "evaluation": evaluation.as_dict(),
        }
        log(f"{model_type} {symbol} {date}: out-of-sample\n{evaluation.markdown_table()}")
        metric = pipeline.select_metric
        checks = model_check_results(
            metric,
            evaluation.scores[model_type][metric],
            {name: evaluation.scores[name][metric] for name in evaluation.baselines},
            data.train["timestamp"].max(),
            data.test["timestamp"].min(),
            purge_gap(pipeline.label_horizon),
        )
        if with_drift:
            checks.append(drift_check_result(features, date, pipeline.psi_warn))

        def store() -> dict:
            files = save_trained_model(layout, date, symbol, TrainedModel(model=fitted.model, metrics=metrics))
            stored = {
                "path": dg.MetadataValue.path(str(layout.model_dir(date, symbol))),
                "files": dg.MetadataValue.json([f.name for f in files]),
            }
            plot_path = layout.model_plot(date, symbol, model_type)
            if png is None:
                plot_path.unlink(missing_ok=True)  # an older model's plot must not pass for this one's
                return stored
            return {**stored, "plot_path": dg.MetadataValue.path(str(atomic_write_bytes(plot_path, png)))}

        return PartitionResult(checks, store, _metadata(evaluation, model_type, fitted.facts, png, len(partitions)))

    yield from materialize_partitions(context, compute)


# On Kubernetes (LEVIBOT_EXECUTOR=k8s) the step pod of a family with `accelerator` asks for a GPU node;
# elsewhere the tag is inert.
GPU_POD = {
    "dagster-k8s/config": {
        "container_config": {"resources": {
            "requests": {"cpu": "2", "memory": "8Gi", "nvidia.com/gpu": "1"},
            "limits": {"memory": "16Gi", "nvidia.com/gpu": "1"},
        }},
        "pod_spec_config": {
            "node_selector": {"nvidia.com/gpu.present": "true"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        },
    }
}


def build_model_asset(
    model_type: str, partitions: dg.MultiPartitionsDefinition, horizon: int, drift: bool = False
) -> dg.AssetsDefinition:
    """The asset `<type>_model` of an asset-trained family, everything derived from its registry entry."""
    family = MODEL_FAMILIES[model_type]
    name = model_asset_name(model_type)

    def fit(data: TrainTest, pipeline: PipelineConfig, progress: Callable[[str], None], study_name: str) -> Fitted:
        return fit_in_asset(model_type, data.train, pipeline.training, progress, study_name)

    @partitioned_asset(
        partitions,
        deps=["features"],
        group_name="models",
        name=name,
        kinds=set(family.libraries),
        check_specs=model_checks(name, partitions, drift=drift),
        op_tags=GPU_POD if family.accelerator else None,
        code_version=contract_version(horizon),
        description=f"The {model_type} family ({family.class_path.split(':')[1]}) trained on the days before the "
        "partition's date, scored on that date.",
    )
    def model_asset(context: dg.AssetExecutionContext, storage: StorageResource, pipeline: PipelineConfig):
        yield from train_and_evaluate(context, storage, pipeline, model_type, fit, with_drift=drift)

    return model_asset


def build_model_assets(partitions: dg.MultiPartitionsDefinition, horizon: int) -> list[dg.AssetsDefinition]:
    """One asset per asset-trained family; the first one carries the drift check (one shift, one alert)."""
    return [build_model_asset(t, partitions, horizon, drift=(n == 0)) for n, t in enumerate(asset_trained_types())]

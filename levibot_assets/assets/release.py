"""best_release: promote the family with the best record over the model in service only when it has earned it.

Candidates: the lgbm_model and tft_model partitions, then the families fitted here from the same
purged training rows (core.model_api.release_fitted_types: the logistic regression, C chosen
inside the training period, and the ensemble averaging the others). The decision
(core.release.decision) reads the trailing days' stored predictions for the record. It is carried out by core.release.deploy.publish (release directory, atomic current/<SYMBOL> swap,
summary and history); then the test-day predictions of every candidate, baseline and the champion
are stored as predictions/<date>/<SYMBOL>.parquet (core.predictions) and the live score (the
champion's AUC per day, pooled over the last 30 stored days) goes into the metadata; last, the
release in service is verified by the blocking checks.

No `from __future__ import annotations` here: Dagster inspects the context type hint at runtime.
"""

from typing import Sequence

import dagster as dg
import pandas as pd

from levibot_assets.assets.partition_runs import PartitionResult, materialize_partitions, partitioned_asset
from levibot_assets.checks import release_check_results, release_checks
from levibot_assets.core.dataset import load_feature_window, split_window
from levibot_assets.core.features import contract_version
from levibot_assets.core.model_api import asset_trained_types, fit_in_release, model_asset_name, release_fitted_types
from levibot_assets.core.model_store import load_trained_model
from levibot_assets.core.tables import MissingPartition
from levibot_assets.core.predictions import (
    LIVE, POOLED, daily_auc_table, predictions_frame, recent_predictions, write_predictions,
)
from levibot_assets.core.release.decision import CHAMPION, Champion, decide, evaluate_with_champion
from levibot_assets.core.release.deploy import current_release_dir, publish, release_dir_id
from levibot_assets.core.release.store import ReleaseError, load_release, release_id
from levibot_assets.core.reports import release_views
from levibot_assets.resources.pipeline import PipelineConfig
from levibot_assets.resources.storage import StorageResource


def _champion_model(storage: StorageResource, symbol: str, log) -> tuple:
    """(model or None, Champion or None): the release in service, loaded after hash verification.

    current/<SYMBOL> is read once. The Champion carries the id of what was scored, which publish
    re-checks under its lock; for a champion that cannot be loaded it is the id of the release
    directory read before trying, so a re-run of that date meanwhile is caught too.
    """
    release_dir = current_release_dir(storage.layout, symbol)
    if release_dir is None:
        return None, None
    in_service = release_dir_id(release_dir)
    try:
        model, manifest = load_release(release_dir)
    except ReleaseError as exc:  # tampered or damaged: it cannot be scored, the challenger may replace it
        log.warning(f"the release in service for {symbol} cannot be loaded: {exc}")
        return None, Champion(release_date=release_dir.parent.name, model_type="unknown", release_id=in_service, error=str(exc))
    return model, Champion(release_date=manifest["date"], model_type=manifest["model_type"], release_id=release_id(manifest))


def _trained_candidates(layout, date, symbol: str, log) -> tuple[dict, list[str]]:
    """The partition's asset-trained models; a family whose partition is missing is left out with a
    warning (the night goes on with the others), but not all of them."""
    candidates, missing = {}, []
    for model_type in asset_trained_types():
        try:
            candidates[model_type] = load_trained_model(layout, model_type, date, symbol)
        except MissingPartition as exc:
            missing.append(model_type)
            log.warning(f"{model_type} left out of the candidates: {exc}")
    if not candidates:
        raise MissingPartition(f"no trained model for {date}|{symbol}: materialize {', '.join(missing)} models first")
    return candidates, missing


def _float(x) -> dg.MetadataValue:
    return dg.MetadataValue.float(float(x) if x is not None else float("nan"))


def _evidence_metadata(evidence: dict) -> dict:
    """The record each family was chosen on, and the challenger vs the champion with its interval."""
    meta = {"record_days": dg.MetadataValue.int(len(evidence["days"])), "record_rows": dg.MetadataValue.int(evidence["rows"])}
    lines = [f"| family | {evidence['metric']} over {len(evidence['days'])} day(s) |", "|---|---:|"]
    for name, value in {**evidence["records"], **{f"{b} (baseline)": v for b, v in evidence["baselines"].items()}}.items():
        lines.append(f"| {'**' + name + '**' if name == evidence['challenger'] else name} | {_round(value)} |")
    comparison = evidence.get("comparison")
    if comparison and comparison["advantage"] is not None:
        meta.update({
            "advantage_over_champion": _float(comparison["advantage"]),
            "advantage_ci_low": _float(comparison["ci_low"]),
            "advantage_ci_high": _float(comparison["ci_high"]),
            "compared_rows": dg.MetadataValue.int(comparison["rows"]),
        })
        lines += ["", f"{comparison['challenger']} vs champion on {comparison['rows']} rows of {len(comparison['days'])} "
                  f"day(s): advantage {comparison['advantage']:+.4f}, {comparison['confidence']:.0%} CI "
                  f"[{comparison['ci_low']:+.4f}, {comparison['ci_high']:+.4f}]"]
    meta["record"] = dg.MetadataValue.md("\n".join(lines))
    return meta


def _round(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _live_metadata(table: pd.DataFrame, date) -> dict:
    """live_auc of the day (absent when no earlier release was in service) and pooled over the 30
    stored days of `table` (core.predictions.daily_auc_table up to `date`)."""
    live = table[LIVE].drop(POOLED) if len(table) else pd.Series(dtype="float64")
    meta = {
        "live_days_30d": dg.MetadataValue.int(int(live.notna().sum())),
        "live_days_missing_30d": dg.MetadataValue.int(int(live.isna().sum())),
    }
    if pd.notna(live.get(date.isoformat())):
        meta["live_auc"] = dg.MetadataValue.float(float(live[date.isoformat()]))
    if len(table) and pd.notna(table.at[POOLED, LIVE]):
        meta["live_auc_pooled_30d"] = dg.MetadataValue.float(float(table.at[POOLED, LIVE]))
    return meta


def build_release_asset(
    partitions: dg.MultiPartitionsDefinition, horizon: int, symbols: Sequence[str]
) -> dg.AssetsDefinition:
    """best_release on `partitions`, after every asset-trained family; `symbols` for the in-service table."""

    @partitioned_asset(
        partitions,
        deps=[*(model_asset_name(t) for t in asset_trained_types()), "features"],
        group_name="release",
        kinds={"python"},
        check_specs=release_checks(partitions),
        code_version=contract_version(horizon),
    )
    def best_release(context: dg.AssetExecutionContext, storage: StorageResource, pipeline: PipelineConfig):
        """Score every candidate family, the champion and the baselines on the same test-day rows, then decide.

        Partitions run in date order, so in a range run each day's champion is the release the days
        before it put in service. After publishing, the release in service is verified and must predict.
        """
        layout = storage.layout

        def compute(date, symbol: str) -> PartitionResult:
            candidates, missing = _trained_candidates(layout, date, symbol, context.log)
            features = load_feature_window(layout, symbol, date, pipeline.train_days, pipeline.label_horizon)
            split = split_window(features, date, pipeline.label_horizon)
            for model_type in release_fitted_types():
                candidates[model_type] = fit_in_release(model_type, split, pipeline.label_horizon, candidates)
            champion_model, champion = _champion_model(storage, symbol, context.log)
            evaluation, champion_error = evaluate_with_champion(
                split, {t: tm.model for t, tm in candidates.items()}, champion_model, pipeline.scoring
            )
            if champion is not None:
                champion.metrics = evaluation.scores.get(CHAMPION)
                champion.error = champion.error or champion_error
            trained_on = [f"features/{day}/{symbol}" for day in sorted(features) if day < date.isoformat()]
            predictions = predictions_frame(evaluation, champion.scored_release if champion is not None else None)
            history = recent_predictions(layout, symbol, date, pipeline.record_days - 1)
            decision = decide(date, symbol, candidates, evaluation, champion, pipeline.policy, trained_on, history,
                              predictions)
            (context.log.info if decision.released else context.log.warning)(decision.reason)
            scores = decision.scores
            metadata = {
                "released": dg.MetadataValue.bool(decision.released),
                "reason": dg.MetadataValue.text(decision.reason),
                "select_metric": dg.MetadataValue.text(decision.select_metric),
                "challenger": dg.MetadataValue.text(decision.challenger_type or "none"),
                "challenger_score": _float(scores["challenger"]),
                "champion_release": dg.MetadataValue.text(decision.champion_release or "none"),
                "champion_score": _float(scores["champion"]),
                "best_baseline_score": _float(scores["best_baseline"]),
                "test_rows": dg.MetadataValue.int(decision.test_rows or 0),
                "scores": dg.MetadataValue.md(evaluation.markdown_table()),
                **_evidence_metadata(decision.evidence),
            }
            if missing:
                metadata["candidates_missing"] = dg.MetadataValue.text(", ".join(missing))


            def store() -> dict:
                entry = publish(layout, decision)
                path = write_predictions(layout, date, symbol, predictions)  # after the decision it records is kept
                daily = daily_auc_table(layout, symbol, until=date)  # the 30 stored days, read once for both views
                stored = {
                    "current_release": dg.MetadataValue.text(entry["current_release"] or "none"),
                    "summary": dg.MetadataValue.path(str(layout.release_summary(date))),
                    "predictions": dg.MetadataValue.path(str(path)),
                    **_live_metadata(daily, date),
                    **{name: dg.MetadataValue.md(text) for name, text in release_views(
                        layout, list(symbols), date.isoformat(), symbol, daily).items()},
                }
                if decision.released:
                    stored["path"] = dg.MetadataValue.path(str(layout.release_dir(date, symbol)))
                return stored

            def verify() -> list[dg.AssetCheckResult]:
                return release_check_results(
                    current_release_dir(layout, symbol), split.context, decision.released, decision.reason
                )

            return PartitionResult([], store, metadata, verify=verify)

        yield from materialize_partitions(context, compute)

    return best_release

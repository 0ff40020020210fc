"""best_release: promote the better of lgbm/tft over the model in service only when it has earned it.

No `from __future__ import annotations` here: Dagster inspects the context type hint at runtime.
"""

import dagster as dg
import pandas as pd

from levibot_assets.checks import RELEASE_CHECKS, release_check_results
from levibot_assets.core.dataset import split_window
from levibot_assets.core.model_api import TrainedModel
from levibot_assets.core.promotion import CHAMPION, Champion, decide, evaluate_with_champion
from levibot_assets.core.release import ReleaseError, current_release_date, current_release_dir, in_service_id, release_id
from levibot_assets.partitions import PARTITIONS, partition_date_symbol, training_window_mapping
from levibot_assets.resources.io_managers import WINDOW_INPUT
from levibot_assets.resources.storage import StorageResource
from levibot_assets.serving import NoRelease, load_current
from levibot_assets.settings import get_settings


def _champion_model(storage: StorageResource, symbol: str, log) -> tuple:
    """(model or None, Champion or None): the release in service, loaded after hash verification.

    The Champion carries the id of what was scored, which publish re-checks under its lock. For a
    champion that cannot be loaded it is the id read before trying, so a swap meanwhile is caught.
    """
    in_service = in_service_id(storage.layout, symbol)
    try:
        served = load_current(symbol, storage.data_dir)
    except NoRelease:
        return None, None
    except ReleaseError as exc:  # tampered or damaged: it cannot be scored, the challenger may replace it
        log.warning(f"the release in service for {symbol} cannot be loaded: {exc}")
        release_date = current_release_date(storage.layout, symbol) or "unknown"
        return None, Champion(release_date=release_date, model_type="unknown", release_id=in_service, error=str(exc))
    return served.model, Champion(
        release_date=served.release_date, model_type=served.model_type, release_id=release_id(served.manifest)
    )


def _float(x) -> dg.MetadataValue:
    return dg.MetadataValue.float(float(x) if x is not None else float("nan"))


@dg.asset(
    partitions_def=PARTITIONS,
    io_manager_key="release_io_manager",
    ins={
        "lgbm_model": dg.AssetIn(),
        "tft_model": dg.AssetIn(),
        "features": dg.AssetIn(partition_mapping=training_window_mapping(get_settings().train_days), metadata=WINDOW_INPUT),
    },
    group_name="release",
    kinds={"python"},
    check_specs=RELEASE_CHECKS,
)
def best_release(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    lgbm_model: TrainedModel,
    tft_model: TrainedModel,
    features: dict[str, pd.DataFrame],
):
    """Score lgbm, tft, the champion and the baselines on the same test-day rows, then decide.

    After the IO manager has published, the release in service is verified and must predict.
    """
    date, symbol = partition_date_symbol(context)
    settings = get_settings()
    split = split_window(features, date, settings.label_horizon)
    champion_model, champion = _champion_model(storage, symbol, context.log)
    candidates = {"lgbm": lgbm_model, "tft": tft_model}
    evaluation, champion_error = evaluate_with_champion(
        split, {t: tm.model for t, tm in candidates.items()}, champion_model, settings
    )
    if champion is not None:
        champion.metrics = evaluation.scores.get(CHAMPION)
        champion.error = champion.error or champion_error
    trained_on = [f"features/{day}/{symbol}" for day in sorted(features) if day < date.isoformat()]
    decision = decide(
        date, symbol, candidates, evaluation, champion, settings.select_metric, settings.promote_margin, trained_on
    )
    (context.log.info if decision.released else context.log.warning)(decision.reason)
    scores = decision.scores
    yield dg.Output(
        decision,
        metadata={
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
        },
    )
    yield from release_check_results(
        current_release_dir(storage.layout, symbol), split.context, decision.released, decision.reason
    )

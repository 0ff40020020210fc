"""Asset checks: which quality rules guard which asset, how severe a failure is, and the results.

Checks are declared with `check_specs` on the assets themselves and evaluated inside the
materialization of ONE partition (a separate @asset_check taking a partitioned asset as input
would load every partition). The results built here are computed on the new data BEFORE it is
written: a failed blocking check keeps the partition's previous files (assets/partition_runs.py);
the partition's materialization is recorded after the write, its evaluations right after it.

Severity policy: a violation that makes training meaningless (inconsistent candles, infinite
features, train/test overlap, a broken release) is a blocking ERROR, so nothing downstream runs
in that run; what a model can live with (gaps, halts, label skew, drift, losing to a baseline)
is a WARN that alerts a person and lets the night go on.
"""
from __future__ import annotations

import datetime as dt
import warnings
from pathlib import Path
from typing import Any, Mapping

import dagster as dg
import numpy as np
import pandas as pd

from levibot_assets.core import quality
from levibot_assets.core.drift import feature_drift
from levibot_assets.core.features import FEATURE_COLUMNS
from levibot_assets.core.release.store import ReleaseError, load_release, read_manifest

ERROR, WARN = dg.AssetCheckSeverity.ERROR, dg.AssetCheckSeverity.WARN

# check name -> (severity, description); severity ERROR checks are blocking
_RAW = {
    "consistent_bars": (ERROR, "unique ordered timestamps, finite positive prices, low <= open, close <= high, volume >= 0"),
    "no_price_spike": (ERROR, f"no bar whose high or low is more than {quality.SPIKE_MAX_RATIO}x away from its neighbours on both sides"),
    "complete_day": (WARN, "1440 one-minute bars; missing minutes are listed with their times"),
    "no_trading_halt": (WARN, f"no run of {quality.HALT_MIN_MINUTES}+ zero-volume bars (exchange halt)"),
}
_FEATURES = {
    "finite_values": (ERROR, "no infinite feature value; labels are 0, 1 or unknown"),
    "complete_after_warmup": (WARN, "every feature present once its lookback window is complete"),
    "label_balance": (WARN, f"share of up labels within {quality.LABEL_SHARE_BOUNDS}"),
}
_MODEL = {
    "no_train_test_overlap": (ERROR, "training rows end at least the purge gap before the test day"),
    "beats_baselines": (WARN, "out-of-sample score beats the best baseline on the same rows"),
}
_DRIFT = {"feature_drift": (WARN, "PSI of each feature, test day vs training days, at most LEVIBOT_PSI_WARN above the "
                                  "largest PSI of a training day vs the other training days")}
_RELEASE = {
    "release_files_intact": (ERROR, "every file of the manifest exists with its sha256"),
    "release_predicts": (ERROR, "the released model loads and predicts probabilities in [0, 1]"),
    "model_in_service": (WARN, "a model that beat the baselines is in service: released now or the champion kept"),
}


def _specs(
    asset: str, checks: Mapping[str, tuple[dg.AssetCheckSeverity, str]], partitions: dg.PartitionsDefinition
) -> list[dg.AssetCheckSpec]:
    """Partitioned like the asset, so every evaluation records its (date, symbol) partition."""
    with warnings.catch_warnings():  # partitioned check specs are marked preview; we rely on them
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return [
            dg.AssetCheckSpec(
                name, asset=asset, description=description, blocking=severity == ERROR, partitions_def=partitions
            )
            for name, (severity, description) in checks.items()
        ]


def raw_ohlcv_checks(partitions: dg.PartitionsDefinition) -> list[dg.AssetCheckSpec]:
    return _specs("raw_ohlcv", _RAW, partitions)


def features_checks(partitions: dg.PartitionsDefinition) -> list[dg.AssetCheckSpec]:
    return _specs("features", _FEATURES, partitions)


def release_checks(partitions: dg.PartitionsDefinition) -> list[dg.AssetCheckSpec]:
    return _specs("best_release", _RELEASE, partitions)


def model_checks(asset: str, partitions: dg.PartitionsDefinition, drift: bool = False) -> list[dg.AssetCheckSpec]:
    """Specs of a model asset; `drift` on one model only, so one shift raises one alert."""
    return _specs(asset, {**_MODEL, **(_DRIFT if drift else {})}, partitions)


_SEVERITY = {name: severity for table in (_RAW, _FEATURES, _MODEL, _DRIFT, _RELEASE) for name, (severity, _) in table.items()}


def _metadata(values: Mapping[str, Any]) -> dict[str, Any]:
    """Numbers stay numbers (plottable in the UI); lists become JSON."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, (bool, np.bool_)):
            out[key] = dg.MetadataValue.bool(bool(value))
        elif isinstance(value, (int, np.integer)):
            out[key] = dg.MetadataValue.int(int(value))
        elif isinstance(value, (float, np.floating)):
            out[key] = dg.MetadataValue.float(float(value))
        elif isinstance(value, (list, tuple, dict)):
            out[key] = dg.MetadataValue.json(value)
        else:
            out[key] = dg.MetadataValue.text(str(value))
    return out


def check_result(name: str, result: quality.QualityResult) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=name,
        passed=bool(result.passed),
        severity=_SEVERITY[name],
        description=result.description,
        metadata=_metadata(result.metadata),
    )


def raw_ohlcv_check_results(bars: pd.DataFrame, date: dt.date) -> list[dg.AssetCheckResult]:
    return [
        check_result("consistent_bars", quality.raw_consistency(bars)),
        check_result("no_price_spike", quality.raw_spikes(bars)),
        check_result("complete_day", quality.raw_completeness(bars, date)),
        check_result("no_trading_halt", quality.raw_halts(bars)),
    ]


def features_check_results(frame: pd.DataFrame) -> list[dg.AssetCheckResult]:
    return [
        check_result("finite_values", quality.features_finite(frame)),
        check_result("complete_after_warmup", quality.features_complete_after_warmup(frame)),
        check_result("label_balance", quality.label_balance(frame)),
    ]


def model_check_results(
    metric: str,
    score: float,
    baseline_scores: Mapping[str, float],
    train_end: pd.Timestamp | str,
    test_start: pd.Timestamp | str,
    min_gap: pd.Timedelta,
) -> list[dg.AssetCheckResult]:
    """`score`/`baseline_scores`: the OOS `metric` of the model and of each baseline, same rows."""
    return [
        check_result("no_train_test_overlap", quality.train_test_disjoint(train_end, test_start, min_gap)),
        check_result("beats_baselines", quality.beats_baselines(metric, score, baseline_scores)),
    ]


def drift_check_result(window: Mapping[str, pd.DataFrame], test_date: dt.date, margin: float) -> dg.AssetCheckResult:
    """PSI of the test day's features against the window's earlier (training) days, each feature
    against its own bound calibrated on those days (core.drift); floats shown to 4 decimals."""
    test_key = test_date.isoformat()
    train_days = [frame for day, frame in sorted(window.items()) if day < test_key]
    if test_key not in window or len(train_days) < 2:
        return check_result(
            "feature_drift",
            quality.QualityResult(
                False, f"cannot measure drift: needs {test_key} and 2 earlier days to calibrate on, got {sorted(window)}"
            ),
        )
    report = feature_drift(train_days, window[test_key], FEATURE_COLUMNS, margin)
    drifted = sorted(report.drifted, key=lambda f: -report.psi_by_feature[f])
    psi, bound = report.psi_by_feature, report.bound_by_feature
    if drifted:
        description = f"{len(drifted)} of {len(psi)} features above their bound: " + ", ".join(
            f"{f} {psi[f]:.4f} > {bound[f]:.4f}" for f in drifted
        )
    else:
        nearest = max((f for f in psi if np.isfinite(psi[f])), key=lambda f: psi[f] - bound[f], default=None)
        description = "every feature within its bound" + (
            f"; nearest: {nearest} {psi[nearest]:.4f} <= {bound[nearest]:.4f}" if nearest else ""
        )
    return check_result(
        "feature_drift",
        quality.QualityResult(
            not drifted,
            description,
            {
                "max_psi": round(report.max_psi, 4),
                "drifted_features": len(drifted),
                "drifted": drifted,
                "psi_margin": margin,
                "training_days": len(train_days),
                **{f"psi_{f}": round(v, 4) for f, v in psi.items()},
                **{f"bound_{f}": round(v, 4) for f, v in bound.items()},
            },
        ),
    )


def release_check_results(
    release_dir: Path | None, sample: pd.DataFrame, released: bool, reason: str
) -> list[dg.AssetCheckResult]:
    """Verify the release in service (`release_dir`, None when there is none) and score `sample`.

    `released`/`reason` are this partition's decision: nothing in service after it is a WARN.
    """
    in_service = check_result(
        "model_in_service",
        quality.QualityResult(release_dir is not None, reason if release_dir is not None or released else
                              f"nothing released and no model in service: {reason}", {"released": released}),
    )
    if release_dir is None:
        nothing = quality.QualityResult(True, "no release in service yet")
        return [check_result("release_files_intact", nothing), check_result("release_predicts", nothing), in_service]
    try:
        files = read_manifest(release_dir)["files"]
        intact = quality.release_files_intact(release_dir, {name: info.get("sha256") for name, info in files.items()})
    except ReleaseError as exc:
        intact = quality.QualityResult(False, str(exc))
    predicts = (
        quality.release_predicts(lambda: load_release(release_dir)[0], sample)
        if intact.passed
        else quality.QualityResult(False, "not loaded: the files do not match the manifest (unsafe to unpickle)")
    )
    return [check_result("release_files_intact", intact), check_result("release_predicts", predicts), in_service]

"""One driver for every asset: the run's partitions one at a time, in date order, checks before writes.

A run may carry one partition (the schedule) or a range (`dagster asset materialize
--partition-range`, a UI backfill: every asset has `BackfillPolicy.single_run()`). Dagster hands
an asset one output per step, so a range written through an IO manager would sit in memory whole;
instead each asset computes one (date, symbol), evaluates its checks on the new data, and only if
no blocking check failed writes it through the storage resource. Each partition gets its own check
evaluations and its own metadata (`add_asset_metadata(partition_key=...)`), so the UI shows them
one by one as if each had run alone.

A partition that fails (its source, a missing upstream file, a blocking check) leaves its previous
files untouched; the others go on, except after an exchange ban (every request extends it): the
run stops there. At the end the run fails naming every failed partition and its cause, and the
partitions that were written are still recorded as materialized.
"""
from __future__ import annotations

import datetime as dt
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

import dagster as dg

from levibot_assets.core.ohlcv import ExchangeBanned
from levibot_assets.partitions import PARTITIONS, parse_partition_key, partition_key

ERROR = dg.AssetCheckSeverity.ERROR
PROGRESS_LINES = 20  # progress log lines per asset and run, however long the range


@dataclass
class PartitionResult:
    """What an asset computed for one partition: its checks, how to store it, what to show."""

    checks: Sequence[dg.AssetCheckResult]  # on the new data, before it is stored
    store: Callable[[], Mapping[str, Any]]  # writes the partition; returns metadata about what it wrote
    metadata: Mapping[str, Any] = field(default_factory=dict)
    verify: Callable[[], Sequence[dg.AssetCheckResult]] = lambda: ()  # on what is in service after storing


def partitioned_asset(**kwargs):
    """@dg.asset on the date x symbol partitions; any set of them runs as one run.

    Dagster marks `backfill_policy` beta; we depend on it knowingly, so its warning is not shown.
    """

    def decorate(fn):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", dg.BetaWarning)
            return dg.asset(partitions_def=PARTITIONS, backfill_policy=dg.BackfillPolicy.single_run(), **kwargs)(fn)

    return decorate


def ordered_partitions(context: dg.AssetExecutionContext) -> list[tuple[dt.date, str]]:
    """The run's (date, symbol) partitions, oldest date first: a model's window is built before it is read."""
    return sorted(parse_partition_key(key) for key in context.partition_keys)


def _evaluation(asset_key: dg.AssetKey, key: str, result: dg.AssetCheckResult) -> dg.AssetCheckEvaluation:
    """A check result recorded against one partition (Dagster would record it against the run's range)."""
    return dg.AssetCheckEvaluation(
        asset_key=asset_key,
        check_name=result.check_name,
        passed=result.passed,
        metadata=result.metadata,
        severity=result.severity,
        description=result.description,
        blocking=result.severity == ERROR,
        partition=key,
    )


def _blocking_failures(checks: Sequence[dg.AssetCheckResult]) -> str:
    """The failed blocking checks with their reasons, '' when there is none."""
    return "; ".join(f"check {c.check_name} failed: {c.description}" for c in checks if not c.passed and c.severity == ERROR)


def _partition_tags(key: dg.MultiPartitionKey) -> dict[str, str]:
    return {f"dagster/partition/{dim.dimension_name}": dim.partition_key for dim in key.dimension_keys}


def materialize_partitions(
    context: dg.AssetExecutionContext, compute: Callable[[dt.date, str], PartitionResult]
) -> Iterator[Any]:
    """Run `compute` for each partition of the run and yield the events Dagster records."""
    asset_key = context.asset_key
    partitions = ordered_partitions(context)
    written: dict[str, Mapping[str, Any]] = {}
    failed: dict[str, str] = {}
    stopped = ""
    progress_every = max(1, len(partitions) // PROGRESS_LINES)  # every event costs a write to the instance
    started = time.monotonic()
    for n, (date, symbol) in enumerate(partitions, start=1):
        key = partition_key(date, symbol)
        try:
            result = compute(date, symbol)
        except Exception as exc:  # one bad day must not stop a year's backfill; the run still fails
            failed[str(key)] = f"not stored, {type(exc).__name__}: {exc}"
            context.log.error(f"{asset_key.to_user_string()} {key}: {failed[str(key)]}")
            if isinstance(exc, ExchangeBanned) and n < len(partitions):
                stopped = f"\nThe run stopped at {key}: {len(partitions) - n} later partition(s) were not tried."
                break
            continue
        yield from (_evaluation(asset_key, str(key), check) for check in result.checks)
        if blocked := _blocking_failures(result.checks):
            failed[str(key)] = f"not stored, {blocked}"
            context.log.error(f"{asset_key.to_user_string()} {key}: {failed[str(key)]}")
            continue
        metadata = {**result.metadata, **result.store()}
        written[str(key)] = metadata
        context.add_asset_metadata(metadata, partition_key=str(key))
        verified = list(result.verify())
        yield from (_evaluation(asset_key, str(key), check) for check in verified)
        if blocked := _blocking_failures(verified):
            failed[str(key)] = f"stored, but {blocked}"
            context.log.error(f"{asset_key.to_user_string()} {key}: {failed[str(key)]}")
        if n % progress_every == 0 or n == len(partitions):
            elapsed = time.monotonic() - started
            left = elapsed / n * (len(partitions) - n)
            context.log.info(
                f"{asset_key.to_user_string()}: {n}/{len(partitions)} partitions done ({key}), "
                f"{elapsed:.0f} s so far, about {left:.0f} s left"
            )
    if failed:
        for key, metadata in written.items():
            multi_key = partition_key(*parse_partition_key(key))
            yield dg.AssetMaterialization(asset_key, partition=key, metadata=metadata, tags=_partition_tags(multi_key))
        lines = "\n".join(f"- {key}: {cause}" for key, cause in failed.items())
        raise dg.Failure(
            description=f"{asset_key.to_user_string()}: {len(failed)} of {len(partitions)} partition(s) failed "
            f"(what was not stored kept its previous files):\n{lines}{stopped}",
            metadata={"failed_partitions": dg.MetadataValue.json(sorted(failed))},
        )
    yield from _check_outputs(context)
    yield dg.MaterializeResult()


def _check_outputs(context: dg.AssetExecutionContext) -> Iterator[dg.Output]:
    """The (empty) outputs Dagster expects of each selected check; the evaluations were yielded above."""
    selected = context.selected_asset_check_keys
    for name, spec in context.assets_def.check_specs_by_output_name.items():
        if spec.key in selected:
            yield dg.Output(None, output_name=name)

"""One driver for every asset: the run's partitions one at a time, in date order, checks before writes.

A run may carry one partition (the schedule) or a range (`dagster asset materialize
--partition-range`, a UI backfill: every asset has `BackfillPolicy.single_run()`). Dagster hands
an asset one output per step, so a range written through an IO manager would sit in memory whole;
instead each asset computes one (date, symbol), evaluates its checks on the new data, and only if
no blocking check failed writes it through the storage resource. Each partition gets its own check
evaluations and its own metadata, so the UI shows them one by one as if each had run alone.

Recording order. Dagster would record a range's materializations itself when the step ends, one
per partition of the run with the metadata given by `add_asset_metadata(partition_key=...)`, but
in the order of the run's partition subset (a Python set: shuffled), so an asset's "latest"
materialization was any date of the range. Instead each partition's AssetMaterialization is
yielded as soon as it is stored (date order: the newest date is the latest), and its check
evaluations right after it, naming it as their target (`target_materialization_data`, as Dagster
does for an AssetCheckResult): a check partition counts as evaluated only when its evaluation
targets the partition's latest materialization, so evaluations recorded before it were shown as
"Missing". The asset's output then ends the step with SELF_RECORDED, which tells Dagster that the
materializations are already recorded (see `_self_recorded`).

A partition that fails (its source, a missing upstream file, a blocking check, an OS error while
storing it) leaves its previous files untouched; the others go on, except after an exchange ban
(every request extends it): the run stops there. The partitions that were written are recorded as
materialized. Dagster skips every downstream step of a step that fails, so in a range run whose
later steps depend on this one, a step that stored some of its partitions does not fail: it names
the others in its output's metadata, and each later step fails exactly those partitions (their own
downstream partitions, the same date and symbol) and goes on with the good days. The last step of the
chain fails the run, naming every failed partition with its first cause.
"""
from __future__ import annotations

import datetime as dt
import gc
import logging
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

import dagster as dg
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData as TargetMaterialization,
)
from dagster._core.definitions.source_asset import SYSTEM_METADATA_KEY_SOURCE_ASSET_OBSERVATION
from dagster._core.events import AssetMaterializationPlannedData, DagsterEvent, DagsterEventType

from levibot_assets.core.redaction import redact_text
from levibot_assets.core.ohlcv import ExchangeBanned
from levibot_assets.partitions import parse_partition_key, partition_key

ERROR = dg.AssetCheckSeverity.ERROR
PROGRESS_LINES = 20  # progress log lines per asset and run, however long the range
NOT_STORED = "not stored, "
FAILED_PARTITIONS = "failed_partitions"  # output metadata: {partition: first cause} for the later steps
DECIMALS = 4  # floats shown in the UI's metadata


@dataclass
class PartitionResult:
    """What an asset computed for one partition: its checks, how to store it, what to show."""

    checks: Sequence[dg.AssetCheckResult]  # on the new data, before it is stored
    store: Callable[[], Mapping[str, Any]]  # writes the partition; returns metadata about what it wrote
    metadata: Mapping[str, Any] = field(default_factory=dict)
    verify: Callable[[], Sequence[dg.AssetCheckResult]] = lambda: ()  # on what is in service after storing


def partitioned_asset(partitions: dg.MultiPartitionsDefinition, **kwargs):
    """@dg.asset on the date x symbol partitions; any set of them runs as one run.

    Dagster marks `backfill_policy` beta; we depend on it knowingly, so its warning is not shown.
    """

    def decorate(fn):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", dg.BetaWarning)
            return dg.asset(partitions_def=partitions, backfill_policy=dg.BackfillPolicy.single_run(), **kwargs)(fn)

    return decorate


def ordered_partitions(context: dg.AssetExecutionContext) -> list[tuple[dt.date, str]]:
    """The run's (date, symbol) partitions, oldest date first: a model's window is built before it is read."""
    return sorted(parse_partition_key(key) for key in context.partition_keys)


def _rounded(value: Any) -> Any:
    """A float to DECIMALS decimals (a tiny non-zero one to DECIMALS significant digits, not 0)."""
    value = float(value)
    if value != 0 and abs(value) < 10**-DECIMALS:
        return float(f"{value:.{DECIMALS}g}")
    return round(value, DECIMALS)


def _round_json(value: Any) -> Any:
    if isinstance(value, float):
        return _rounded(value)
    if isinstance(value, dict):
        return {k: _round_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_round_json(v) for v in value]
    return value


def rounded_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Metadata with every float (plain, MetadataValue.float, inside JSON) rounded for reading: the
    UI shows floats with all 16 digits. Every asset's metadata and check metadata passes here."""
    out: dict[str, Any] = {}
    for key, value in metadata.items():
        if isinstance(value, float):  # numpy float64 too; a raw float is not a MetadataValue yet
            value = _rounded(value)
        elif isinstance(value, dg.FloatMetadataValue) and value.value is not None:
            value = dg.MetadataValue.float(_rounded(value.value))
        elif isinstance(value, dg.JsonMetadataValue):
            value = dg.MetadataValue.json(_round_json(value.data))
        out[key] = value
    return out


def _latest(context: dg.AssetExecutionContext, key: str) -> TargetMaterialization | None:
    """The partition's latest recorded materialization, the target of its check evaluations (as
    Dagster looks it up for an AssetCheckResult). The materialization this run just stored, the usual
    case, comes from the instance storage where it can say (instance/storage.py): a query less per partition."""
    just_stored = getattr(context.instance.event_log_storage, "materialization_just_stored", None)
    if just_stored is not None and (target := just_stored(context.run_id, context.asset_key, key)) is not None:
        return target
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=context.asset_key, asset_partitions=[key]), limit=1
    ).records
    if not records:
        return None
    return TargetMaterialization(
        storage_id=records[0].storage_id, run_id=records[0].run_id, timestamp=records[0].timestamp
    )


def _evaluations(
    context: dg.AssetExecutionContext, key: str, results: Sequence[dg.AssetCheckResult], carried: bool = False
) -> Iterator[dg.AssetCheckEvaluation]:
    """Check results recorded against one partition (Dagster would record them against the run's
    range) and against its latest materialization, so the check's Partitions tab shows them.

    `carried`: a later step of the run skips this partition, so a failed blocking check is recorded
    as not blocking the step (Dagster fails a step with one, and then skips the later steps for every
    partition); the partition is not stored either way.
    """
    target = _latest(context, key) if results else None
    for result in results:
        yield dg.AssetCheckEvaluation(
            asset_key=context.asset_key,
            check_name=result.check_name,
            passed=result.passed,
            metadata=rounded_metadata(result.metadata),
            target_materialization_data=target,
            severity=result.severity,
            description=result.description,
            blocking=result.severity == ERROR and not (carried and not result.passed),
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
    """Run `compute` for each partition of the run and yield the events Dagster records.

    The objects alive when the step starts (Dagster's, the code location's) outlive it: frozen, the
    garbage collector stops walking them on every full collection of a long range (BENCHMARKS.md).
    """
    gc.freeze()
    try:
        yield from _materialize_partitions(context, compute)
    finally:
        gc.unfreeze()


def _materialize_partitions(
    context: dg.AssetExecutionContext, compute: Callable[[dt.date, str], PartitionResult]
) -> Iterator[Any]:
    asset_key = context.asset_key
    asset_name = asset_key.to_user_string()
    partitions = ordered_partitions(context)
    if not partitions:  # `--partition-range B...A` with B after A: Dagster runs it with no partition
        tags = context.run.tags
        raise dg.Failure(
            f"the run holds no partition of {asset_name}: its range "
            f"{tags.get('dagster/asset_partition_range_start')}...{tags.get('dagster/asset_partition_range_end')} "
            "ends before it starts (give the earlier date, and symbol in LEVIBOT_SYMBOLS order, first)"
        )
    # a range's later steps go on with its good days; a one-partition run just fails where it fails
    upstream, carry = _neighbour_steps(context) if len(partitions) > 1 else (set(), False)
    upstream_failed = _upstream_failures(context, upstream)
    failed: dict[str, str] = {}
    causes: dict[str, str] = {}  # partitions not stored -> their first cause, named for the later steps
    stopped = ""

    def not_stored(key: str, cause: str, first_cause: str = "") -> None:
        failed[key] = NOT_STORED + cause
        causes[key] = first_cause or f"{asset_name}: {cause}"
        context.log.error(f"{asset_name} {key}: {failed[key]}")

    progress_every = max(1, len(partitions) // PROGRESS_LINES)  # every event costs a write to the instance
    started = time.monotonic()
    for n, (date, symbol) in enumerate(partitions, start=1):
        multi_key = partition_key(date, symbol)
        key = str(multi_key)
        if key in upstream_failed:  # its upstream partition failed earlier in this run: not built on old data
            not_stored(key, f"upstream {upstream_failed[key]}", upstream_failed[key])
            continue
        try:
            result = compute(date, symbol)
        except Exception as exc:  # one bad day must not stop a year's backfill; the run still fails
            not_stored(key, f"{type(exc).__name__}: {redact_text(str(exc))}")
            if isinstance(exc, ExchangeBanned) and n < len(partitions):
                stopped = f"\nThe run stopped at {key}: {len(partitions) - n} later partition(s) were not tried."
                untried = [str(partition_key(d, s)) for d, s in partitions[n:]]
                causes.update({k: f"{asset_name}: not tried, the run stopped at {key} (exchange ban)" for k in untried})
                break
            continue
        if blocked := _blocking_failures(result.checks):
            yield from _evaluations(context, key, result.checks, carried=carry)  # against what stays in service
            not_stored(key, blocked)
            continue
        try:
            stored = result.store()
        except Exception as exc:  # a full disk, a read-only data directory: the previous files stay
            not_stored(key, f"{type(exc).__name__}: {redact_text(str(exc))}")
            continue
        metadata = rounded_metadata({**result.metadata, **stored})
        yield dg.AssetMaterialization(asset_key, partition=key, metadata=metadata, tags=_partition_tags(multi_key))
        verified = list(result.verify())
        yield from _evaluations(context, key, [*result.checks, *verified])
        if blocked := _blocking_failures(verified):
            failed[key] = f"stored, but {blocked}"
            context.log.error(f"{asset_name} {key}: {failed[key]}")
        if n % progress_every == 0 or n == len(partitions):
            elapsed = time.monotonic() - started
            left = elapsed / n * (len(partitions) - n)
            context.log.info(
                f"{asset_name}: {n}/{len(partitions)} partitions done ({key}), "
                f"{elapsed:.0f} s so far, about {left:.0f} s left"
            )
    if failed:
        _plan_failed(context, list(causes))
        lines = "\n".join(f"- {key}: {cause}" for key, cause in failed.items())
        summary = (f"{asset_name}: {len(failed)} of {len(partitions)} partition(s) failed "
                   f"(what was not stored kept its previous files):\n{lines}{stopped}")
        skipped_later = all(cause.startswith(NOT_STORED) for cause in failed.values())
        if not (carry and skipped_later and len(causes) < len(partitions)):
            raise dg.Failure(description=summary, metadata={FAILED_PARTITIONS: dg.MetadataValue.json(sorted(failed))})
        context.log.error(f"{summary}\nThe later steps of this run skip these partitions and go on with the others.")
    yield from _check_outputs(context)
    yield _self_recorded(causes)


def _plan_failed(context: dg.AssetExecutionContext, keys: list[str]) -> None:
    """A planned materialization of each partition that was not stored, so the UI shows exactly those
    as failed when the run fails: an instance that plans a range in one event
    (instance/storage.py, one_planned_event_per_run) leaves Dagster no partition to mark failed."""
    if not context.instance.event_log_storage.supports_partition_subset_in_asset_materialization_planned_events:
        return  # Dagster planned each partition of the run itself
    step_key = context.get_step_execution_context().step.key
    for key in keys:
        planned = AssetMaterializationPlannedData(context.asset_key, partition=key)
        event = DagsterEvent.build_asset_materialization_planned_event(context.run.job_name, step_key, planned)
        context.instance.report_dagster_event(event, run_id=context.run_id, log_level=logging.DEBUG)


def _neighbour_steps(context: dg.AssetExecutionContext) -> tuple[set[str], bool]:
    """(the upstream steps this run executes, whether a step of this run depends on this one), from
    the run's whole plan: under the multiprocess, Celery or Kubernetes executor a step's own plan
    holds only that step. Dagster skips every later step of a step that fails."""
    plan = context.instance.get_execution_plan_snapshot(context.run.execution_plan_snapshot_id)
    me, executed = context.get_step_execution_context().step.key, set(plan.step_keys_to_execute)
    upstream_of = {s.key: {h.step_key for i in s.inputs for h in i.upstream_output_handles} for s in plan.steps}
    later = any(me in upstream_of[key] for key in executed if key in upstream_of)
    return upstream_of.get(me, set()) & executed, later


def _upstream_failures(context: dg.AssetExecutionContext, upstream: set[str]) -> dict[str, str]:
    """{partition: first cause} of the partitions that the `upstream` steps of this run did not store."""
    if not upstream:
        return {}
    failures: dict[str, str] = {}
    for record in context.instance.all_logs(context.run_id, of_type=DagsterEventType.STEP_OUTPUT):
        if record.step_key in upstream:
            value = record.dagster_event.step_output_data.metadata.get(FAILED_PARTITIONS)
            failures.update(value.data if value is not None else {})
    return failures


def _self_recorded(causes: Mapping[str, str]) -> dg.MaterializeResult:
    """The asset's output, so the steps downstream run, without a second materialization per partition.

    Dagster has no public way to say "this step recorded its materializations itself". The output
    of an observable source asset carries SYSTEM_METADATA_KEY_SOURCE_ASSET_OBSERVATION for the same
    purpose, and Dagster 1.13 then records no asset event for that output (execute_step.py,
    _log_materialization_or_observation_events_for_asset) whatever the asset's kind. Imported by
    name so a Dagster without it fails at import; test_range_runs checks one event per partition.
    The partitions it could not store, with their first cause, go to the later steps of the run
    (`_upstream_failures`) in the output's metadata.
    """
    failures = {FAILED_PARTITIONS: dg.MetadataValue.json(dict(causes))} if causes else {}
    return dg.MaterializeResult(metadata={SYSTEM_METADATA_KEY_SOURCE_ASSET_OBSERVATION: True, **failures})


def _check_outputs(context: dg.AssetExecutionContext) -> Iterator[dg.Output]:
    """The (empty) outputs Dagster expects of each selected check; the evaluations were yielded above."""
    selected = context.selected_asset_check_keys
    for name, spec in context.assets_def.check_specs_by_output_name.items():
        if spec.key in selected:
            yield dg.Output(None, output_name=name)

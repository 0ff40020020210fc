"""Sensors that turn failures into alerts, each failure exactly once (the sensor cursor says so).

- asset_check_alerts: failed asset checks (ERROR and WARN) of every finished run, whoever started
  it: schedule, UI, backfill or `dagster asset materialize`. It follows run-finished events (a
  cross-run query every storage supports, SQLite included) and reads each run's check evaluations,
  so a run's check alerts go out once it ends.
- run_failure_alerts: failed runs of every code location, CLI-started ones included.

Both start from "now" the first time they run, so turning them on over an old instance does not
replay its history as a flood of alerts.
"""
from __future__ import annotations

import json

import dagster as dg

from levibot_assets.core.alerts import Alert
from levibot_assets.partitions import RANGE_END_TAG, RANGE_START_TAG
from levibot_assets.resources.alerts import AlertResource

MAX_RUNS_PER_TICK = 100
_FINISHED = (dg.DagsterEventType.RUN_SUCCESS, dg.DagsterEventType.RUN_FAILURE)


def _finished_runs(instance: dg.DagsterInstance, event_type: dg.DagsterEventType, after: int | None, limit: int, ascending: bool):
    return instance.fetch_run_status_changes(
        dg.RunStatusChangeRecordsFilter(event_type=event_type, after_storage_id=after), limit=limit, ascending=ascending
    ).records


def check_alert(record: dg.EventLogRecord) -> Alert | None:
    """The alert for a failed check evaluation; None when it passed."""
    evaluation = record.event_log_entry.dagster_event.event_specific_data
    if evaluation.passed:
        return None
    return Alert(
        kind="asset_check",
        severity=evaluation.severity.value,
        title=f"check {evaluation.check_name} failed",
        details=evaluation.description or "",
        run_id=record.run_id,
        asset=evaluation.asset_key.to_user_string(),
        partition=evaluation.partition,
    )


def failed_check_alerts(instance: dg.DagsterInstance, run_id: str) -> list[Alert]:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
    return [alert for alert in map(check_alert, records) if alert is not None]


@dg.sensor(
    name="asset_check_alerts",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Alerts on every failed asset check (ERROR and WARN) once its run has finished.",
)
def asset_check_alerts(context: dg.SensorEvaluationContext, alerts: AlertResource):
    if context.cursor is None:
        latest = {t.value: _finished_runs(context.instance, t, None, 1, ascending=False) for t in _FINISHED}
        context.update_cursor(json.dumps({t: (r[0].storage_id if r else 0) for t, r in latest.items()}))
        return dg.SkipReason("first tick: watching runs that finish from now on")
    cursor = json.loads(context.cursor)
    sent = 0
    for event_type in _FINISHED:
        for record in _finished_runs(context.instance, event_type, cursor[event_type.value], MAX_RUNS_PER_TICK, ascending=True):
            for alert in failed_check_alerts(context.instance, record.run_id):
                alerts.send(alert)
                sent += 1
            cursor[event_type.value] = record.storage_id
    context.update_cursor(json.dumps(cursor))
    if not sent:
        return dg.SkipReason("no failed check in runs finished since the last tick")
    context.log.info(f"sent {sent} check alert(s)")
    return None


MAX_CAUSE_LINES = 10


def _run_partition(run: dg.DagsterRun) -> str | None:
    """The run's partition, or `start..end` for a partition-range run (a single-run backfill)."""
    start, end = run.tags.get(RANGE_START_TAG), run.tags.get(RANGE_END_TAG)
    if start and end:
        return start if start == end else f"{start}..{end}"
    return run.tags.get("dagster/partition")


def _step_assets(instance: dg.DagsterInstance, run: dg.DagsterRun) -> dict[str, list[dg.AssetKey]]:
    """Step key -> the asset keys that step materializes, from the run's execution plan."""
    if not run.execution_plan_snapshot_id:
        return {}
    plan = instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
    return {
        step.key: [o.properties.asset_key for o in step.outputs if o.properties and o.properties.asset_key]
        for step in plan.steps
    }


def _failed_blocking_checks(instance: dg.DagsterInstance, run_id: str, asset_keys: list[dg.AssetKey]) -> str:
    """What the failed blocking checks said: Dagster's own error only lists their names."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
    evaluations = [r.event_log_entry.dagster_event.event_specific_data for r in records]
    return "\n".join(
        f"check {e.check_name} failed: {e.description or 'no description'}"
        for e in evaluations
        if not e.passed and e.blocking and e.severity == dg.AssetCheckSeverity.ERROR and e.asset_key in asset_keys
    )


def _cause(instance: dg.DagsterInstance, run_id: str, event: dg.DagsterEvent, asset_keys: list[dg.AssetKey]) -> str:
    """Why a step failed, in the words of the code that failed, cut to MAX_CAUSE_LINES lines.

    A dg.Failure's description; otherwise the user's exception (class and message) inside
    Dagster's wrapper errors; for a blocking check, the check's own description.
    """
    data = event.step_failure_data
    error = data.error
    while error and error.cause and error.cls_name.startswith("Dagster"):  # step/input/output wrappers
        error = error.cause
    if data.user_failure_data and data.user_failure_data.description:
        text = data.user_failure_data.description
    elif error and error.cls_name == "DagsterAssetCheckFailedError":
        text = _failed_blocking_checks(instance, run_id, asset_keys) or error.message
    else:
        text = error.message if error else "no error recorded"
    lines = text.strip().splitlines()
    more = len(lines) - MAX_CAUSE_LINES
    return "\n".join(lines[:MAX_CAUSE_LINES] + ([f"... {more} more line(s) in the run's event log"] if more > 0 else []))


def run_failure_alert(instance: dg.DagsterInstance, run: dg.DagsterRun, failure_message: str | None) -> Alert:
    """One alert for a failed run: the failed assets, the partition, and each failed step's cause.

    A run that failed before any step did (a launch or run-worker failure) gets Dagster's run
    failure message and the run's asset selection instead.
    """
    step_assets = _step_assets(instance, run)
    assets, causes = [], []
    for record in instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records:
        event = record.event_log_entry.dagster_event
        keys = step_assets.get(event.step_key, [])
        assets.append(", ".join(k.to_user_string() for k in keys) or event.step_key)
        causes.append(_cause(instance, run.run_id, event, keys))
    if len(causes) > 1:  # the alert's head names a lone failed asset; several need their names here
        causes = [f"{name}: {cause}" for name, cause in zip(assets, causes)]
    if not assets:
        assets = [k.to_user_string() for k in sorted(run.asset_selection or [], key=str)]
        causes = [failure_message or "the run failed before any step did"]
    return Alert(
        kind="run_failure",
        severity="ERROR",
        title=f"run of {run.job_name} failed",
        details="\n".join(causes),
        run_id=run.run_id,
        asset=", ".join(assets) or None,
        partition=_run_partition(run),
    )


@dg.run_failure_sensor(
    name="run_failure_alerts",
    monitor_all_code_locations=True,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Alerts once on every failed run, including runs started from the CLI.",
)
def run_failure_alerts(context: dg.RunFailureSensorContext, alerts: AlertResource):
    alerts.send(run_failure_alert(context.instance, context.dagster_run, context.failure_event.message))

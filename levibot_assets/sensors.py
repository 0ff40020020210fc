"""Sensors that turn failures into alerts, each failure exactly once (the sensor cursor says so).

- asset_check_alerts: failed asset checks (ERROR and WARN) from the instance's event log, from any
  run: schedule, UI, backfill or `dagster asset materialize`.
- run_failure_alerts: failed runs of every code location, CLI-started ones included.

Both start from "now" the first time they run, so turning them on over an old instance does not
replay its history as a flood of alerts.
"""
from __future__ import annotations

import dagster as dg

from levibot_assets.core.alerts import Alert
from levibot_assets.resources.alerts import AlertResource

MAX_EVENTS_PER_TICK = 200


def _check_records(instance: dg.DagsterInstance, after: int | None, limit: int, ascending: bool):
    return instance.get_event_records(
        dg.EventRecordsFilter(
            event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION,
            after_cursor=after,
        ),
        limit=limit,
        ascending=ascending,
    )


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


@dg.sensor(
    name="asset_check_alerts",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Alerts on every failed asset check (ERROR and WARN), once each.",
)
def asset_check_alerts(context: dg.SensorEvaluationContext, alerts: AlertResource):
    if context.cursor is None:
        latest = _check_records(context.instance, None, 1, ascending=False)
        context.update_cursor(str(latest[0].storage_id if latest else 0))
        return dg.SkipReason("first tick: watching check evaluations from now on")
    cursor = int(context.cursor)
    sent = 0
    for record in _check_records(context.instance, cursor, MAX_EVENTS_PER_TICK, ascending=True):
        alert = check_alert(record)
        if alert is not None:
            alerts.send(alert)
            sent += 1
        cursor = record.storage_id
    context.update_cursor(str(cursor))
    if not sent:
        return dg.SkipReason("no failed check since the last tick")
    context.log.info(f"sent {sent} check alert(s)")
    return None


@dg.run_failure_sensor(
    name="run_failure_alerts",
    monitor_all_code_locations=True,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Alerts on every failed run, including runs started from the CLI.",
)
def run_failure_alerts(context: dg.RunFailureSensorContext, alerts: AlertResource):
    run = context.dagster_run
    assets = ", ".join(k.to_user_string() for k in sorted(run.asset_selection or [], key=str))
    alerts.send(
        Alert(
            kind="run_failure",
            severity="ERROR",
            title=f"run of {run.job_name} failed",
            details=(f"assets: {assets}\n" if assets else "") + (context.failure_event.message or ""),
            run_id=run.run_id,
            partition=run.tags.get("dagster/partition"),
        )
    )

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

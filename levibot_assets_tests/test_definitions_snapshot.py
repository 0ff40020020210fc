"""The shape of the Definitions, compared with a committed snapshot (as dagster-open-platform does):
asset keys with their group, kinds, upstream assets, pool and backfill policy; every asset check
and whether it blocks; the partitions; schedules, sensors, jobs, the executor and the resources.

A change to any of them fails here until the snapshot is regenerated and committed with it, so a
review sees what the change did to the graph. To regenerate (the tests' own environment applies):

    UPDATE_DEFINITIONS_SNAPSHOT=1 .venv/bin/python -m pytest levibot_assets_tests/test_definitions_snapshot.py
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import dagster as dg

SNAPSHOT = Path(__file__).with_name("definitions_snapshot.json")


def _partitions(partitions_def: dg.MultiPartitionsDefinition) -> dict:
    dims = {}
    for dim in partitions_def.partitions_defs:
        part = dim.partitions_def
        if isinstance(part, dg.TimeWindowPartitionsDefinition):
            dims[dim.name] = {"cron": part.cron_schedule, "start": part.start.isoformat(), "timezone": part.timezone}
        else:
            dims[dim.name] = {"keys": part.get_partition_keys()}
    return dims


def definitions_snapshot(defs: dg.Definitions) -> dict:
    graph = defs.resolve_asset_graph()
    assets, partitions = {}, {}
    for key in sorted(graph.get_all_asset_keys()):
        node = graph.get(key)
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "kinds": sorted(node.kinds),
            "deps": sorted(parent.to_user_string() for parent in node.parent_keys),
            "pools": sorted(node.pools or ()),
            "backfill_policy": str(node.backfill_policy),
        }
        partitions[key.to_user_string()] = _partitions(node.partitions_def)
    checks = {}
    for check_key in graph.asset_check_keys:
        checks.setdefault(check_key.asset_key.to_user_string(), {})[check_key.name] = (
            "blocking" if graph.get(check_key).blocking else "non-blocking"
        )
    distinct_partitions = {json.dumps(p, sort_keys=True) for p in partitions.values()}
    return {
        "assets": assets,
        "checks": {asset: dict(sorted(names.items())) for asset, names in sorted(checks.items())},
        # every asset has the same partitions (one entry), else each asset's
        "partitions": json.loads(next(iter(distinct_partitions))) if len(distinct_partitions) == 1 else partitions,
        "schedules": {
            s.name: {"cron": s.cron_schedule, "timezone": s.execution_timezone, "job": s.job_name,
                     "default_status": s.default_status.value}
            for s in sorted(defs.schedules, key=lambda s: s.name)
        },
        "sensors": {
            s.name: {"minimum_interval_seconds": s.minimum_interval_seconds, "default_status": s.default_status.value}
            for s in sorted(defs.sensors, key=lambda s: s.name)
        },
        "jobs": sorted(job.name for job in defs.jobs),
        "executor": defs.executor.name,
        "resources": {name: type(resource).__name__ for name, resource in sorted(defs.resources.items())},
    }


def test_definitions_match_the_committed_snapshot():
    from levibot_assets.definitions import defs as load

    with dg.instance_for_test():  # loaded as Dagster loads the code location (against an instance)
        defs = load()
        current = json.dumps(definitions_snapshot(defs), indent=2, sort_keys=True) + "\n"
    if os.environ.get("UPDATE_DEFINITIONS_SNAPSHOT"):
        SNAPSHOT.write_text(current)
    assert SNAPSHOT.exists(), f"no {SNAPSHOT.name}: regenerate it (see this module's docstring)"
    assert json.loads(current) == json.loads(SNAPSHOT.read_text()), (
        f"the definitions differ from {SNAPSHOT.name}: if the change is meant, regenerate it (see this module's docstring)"
    )

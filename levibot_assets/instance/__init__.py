"""The Dagster instance's machinery, built on Dagster internals that may change between releases:

- executors: where a run's steps execute (LEVIBOT_EXECUTOR: multiprocess, in_process, Celery with
  a watch for lost workers, Kubernetes) and the Celery app workers load.
- reaper: runs whose processes died are failed and give back their pool slots (the RunHostRecorder
  logging handler dagster.yaml installs, the dead_run_reaper sensor).
- storage: the instance storage dagster.yaml names (SQLite with kept connections, pooled
  PostgreSQL, one planned event per asset and run): range runs' events at a fraction of stock.

Kept apart from the asset graph so that a Dagster upgrade has one folder to check.
"""

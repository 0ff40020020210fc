#!/usr/bin/env python3
"""Run a throwaway PostgreSQL server in the foreground for trying docker/dagster.yaml locally.

    .venv/bin/python scripts/postgres_server.py [--db dagster]

Prints the DAGSTER_PG_* variables to export, serves until Ctrl-C (or SIGTERM), then stops the
server and deletes its data. The tests use the same code (levibot_assets_tests/postgres.py).
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from levibot_assets_tests.postgres import postgres_running  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="dagster", help="database to create (default: dagster)")
    args = parser.parse_args()

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with postgres_running() as server:
        server.create_database(args.db)
        for name, value in server.dagster_env(args.db).items():
            print(f"export {name}={value}")
        print(f"# Optuna / SQLAlchemy URL: {server.url(args.db)}", flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())

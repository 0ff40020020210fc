"""Wall time of a 3 symbols x 30 days raw_ohlcv + features backfill: through Dagster vs plain Python.

Both runs use the synthetic source and the same core functions, in this one process, each into
its own temporary data directory. The Dagster run records every run in a temporary SQLite
instance (as `make run` does in DAGSTER_HOME). Prints a Markdown table; `--out FILE` also writes it.

    .venv/bin/python benchmarks/backfill_overhead.py [--days 30] [--out benchmarks/out/backfill.md]
"""
import argparse
import datetime as dt
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LEVIBOT_START_DATE", "2025-01-01")


def plain_backfill(dates, symbols, data_dir: Path) -> None:
    import pandas as pd

    from levibot_assets.core.atomic import atomic_write_parquet
    from levibot_assets.core.features import compute_features
    from levibot_assets.core.layout import DataLayout
    from levibot_assets.core.sources.synthetic import synthetic_day

    layout = DataLayout(data_dir)
    for date in dates:
        for symbol in symbols:
            bars = synthetic_day(symbol, date)
            atomic_write_parquet(layout.table("raw_ohlcv", date, symbol), bars)
            previous = layout.table("raw_ohlcv", date - dt.timedelta(days=1), symbol)
            window = [pd.read_parquet(previous)] if previous.exists() else []
            frame = compute_features(pd.concat([*window, pd.read_parquet(layout.table("raw_ohlcv", date, symbol))]), date)
            atomic_write_parquet(layout.table("features", date, symbol), frame)


def postgres_backfill(dates, symbols, data_dir: Path, home: Path) -> int:
    """The same runs with the deployment's storage: a PostgreSQL server started on 127.0.0.1."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from levibot_assets_tests.postgres import postgres_running

    with postgres_running() as server:
        db = server.create_database("dagster")
        storage = {"storage": {"postgres": {"postgres_url": server.url(db)}}}
        return dagster_backfill(dates, symbols, data_dir, home, storage)


def dagster_backfill(dates, symbols, data_dir: Path, home: Path | None, overrides: dict | None = None) -> int:
    """One in-process run per partition; `home` None keeps runs and events in memory."""
    import dagster as dg

    from levibot_assets.definitions import ASSETS, build_resources
    from levibot_assets.materialize import materialize_partitions
    from levibot_assets.settings import Settings

    settings = Settings.from_env({**os.environ, "LEVIBOT_DATA_DIR": str(data_dir), "LEVIBOT_SOURCE": "synthetic"})
    defs = dg.Definitions(assets=ASSETS, resources=build_resources(settings))
    if home is None:
        with dg.DagsterInstance.ephemeral() as instance:
            runs = materialize_partitions(defs, dates, symbols, ["raw_ohlcv", "features"], instance)
        return sum(not r.success for r in runs)
    home.mkdir(parents=True, exist_ok=True)
    with dg.instance_for_test(temp_dir=str(home), overrides=overrides) as instance:
        runs = materialize_partitions(defs, dates, symbols, ["raw_ohlcv", "features"], instance)
    return sum(not r.success for r in runs)


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    dates = [dt.date(2025, 9, 1) + dt.timedelta(days=i) for i in range(args.days)]
    import levibot_assets.definitions  # noqa: F401  (import cost is not part of either run)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        plain_backfill(dates, symbols, tmp / "plain")
        plain = time.perf_counter() - t0
        plain_rss = peak_rss_mib()
        t0 = time.perf_counter()
        failures = dagster_backfill(dates, symbols, tmp / "dagster", tmp / "home")
        through_dagster = time.perf_counter() - t0
        dagster_rss = peak_rss_mib()
        t0 = time.perf_counter()
        failures += dagster_backfill(dates, symbols, tmp / "dagster-memory", None)
        in_memory = time.perf_counter() - t0
        memory_rss = peak_rss_mib()
        t0 = time.perf_counter()
        failures += postgres_backfill(dates, symbols, tmp / "dagster-postgres", tmp / "home-pg")
        with_postgres = time.perf_counter() - t0
        postgres_rss = peak_rss_mib()
        for asset in ("raw_ohlcv", "features"):
            for date in dates[:2]:
                a = (tmp / "plain" / asset / date.isoformat() / "BTCUSDT.parquet").read_bytes()
                b = (tmp / "dagster" / asset / date.isoformat() / "BTCUSDT.parquet").read_bytes()
                assert a == b, f"{asset} {date}: Dagster and plain runs wrote different files"
    n = len(dates) * len(symbols)
    table = "\n".join(
        [
            f"Backfill of raw_ohlcv + features, {len(symbols)} symbols x {len(dates)} days = {n} partitions "
            f"(synthetic source; {os.cpu_count()} cores, Python {platform.python_version()})",
            "",
            "| run | wall s | s / partition | ratio | process peak RSS after it, MiB |",
            "|---|---:|---:|---:|---:|",
            f"| plain Python (core functions) | {plain:.1f} | {plain / n:.3f} | 1.00 | {plain_rss:.0f} |",
            f"| Dagster (one in-process run per partition, SQLite instance) | {through_dagster:.1f} | "
            f"{through_dagster / n:.3f} | {through_dagster / plain:.2f} | {dagster_rss:.0f} |",
            f"| Dagster (same, in-memory instance: no event storage on disk) | {in_memory:.1f} | "
            f"{in_memory / n:.3f} | {in_memory / plain:.2f} | {memory_rss:.0f} |",
            f"| Dagster (same, PostgreSQL storage as deployed; includes server start) | {with_postgres:.1f} | "
            f"{with_postgres / n:.3f} | {with_postgres / plain:.2f} | {postgres_rss:.0f} |",
            "",
            f"failed runs: {failures}; outputs of both runs byte-identical (checked on samples).",
        ]
    )
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()

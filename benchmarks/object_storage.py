"""The data directory on local disk vs on S3 (moto's server on 127.0.0.1), side by side in one process.

Three measurements, each run on both stores from this process (imports paid beforehand):
(a) the plain raw_ohlcv + features backfill of backfill_overhead.py (same core functions, same
checks) for `--days` x 3 symbols, files compared byte for byte; (b) `publish` of a LightGBM
release (stage, history event, upload, pointer swap, best links, summary) and `rollback`, mean of
`--releases`; (c) one-row predictions through the serving loader, p50 per call, reading the
pointer on every call (refresh_s=0) and at most once a second (the S3 default, refresh_s=1).

moto is a Python server sharing the same 2 cores, so its latencies are not those of AWS S3 or
MinIO: the ratios say how many requests each operation makes rather than what a bucket costs.

    .venv/bin/python benchmarks/object_storage.py [--days 14] [--releases 8] [--out benchmarks/out/object_storage.md]
"""
import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the test package's S3 server and release fixtures
sys.path.insert(0, str(REPO / "benchmarks"))
os.environ["LEVIBOT_START_DATE"] = "2025-01-01"

from backfill_overhead import FIRST_DAY, SYMBOLS, plain_backfill  # noqa: E402

OUT = REPO / "benchmarks" / "out" / "object_storage.md"


def backfill(data_dir: str, days: int) -> float:
    dates = [FIRST_DAY + dt.timedelta(days=k) for k in range(days)]
    started = time.perf_counter()
    plain_backfill(dates, SYMBOLS, data_dir)
    return time.perf_counter() - started


def releases(data_dir: str, count: int) -> tuple[float, float]:
    """Mean seconds of one publish and of one rollback."""
    from levibot_assets.core.layout import DataLayout
    from levibot_assets.core.release.deploy import in_service_id, publish, rollback
    from levibot_assets_tests import release_fixtures as rf

    layout, model = DataLayout(data_dir), rf.lgbm()
    publishes, rollbacks = [], []
    for k in range(count):
        date = (dt.date(2025, 10, 1) + dt.timedelta(days=k)).isoformat()
        decision = rf.released_decision(date, rf.SYMBOL, model, 0.6, in_service_id(layout, rf.SYMBOL))
        started = time.perf_counter()
        publish(layout, decision)
        publishes.append(time.perf_counter() - started)
    for _ in range(count):
        started = time.perf_counter()
        rollback(layout, rf.SYMBOL, "previous" if len(rollbacks) % 2 == 0 else date)
        rollbacks.append(time.perf_counter() - started)
    return statistics.mean(publishes), statistics.mean(rollbacks)


def serving(data_dir: str, refresh_s: float, calls: int = 2000) -> float:
    """p50 microseconds of one-row predict_proba through the loader."""
    import numpy as np

    from levibot_assets.core.features import FEATURE_COLUMNS
    from levibot_assets.serving import load_current

    model = load_current("BTCUSDT", data_dir, refresh_s=refresh_s)
    row = np.linspace(-1.0, 1.0, len(FEATURE_COLUMNS))
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        model.predict_proba(row)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--releases", type=int, default=8)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    from levibot_assets.core.layout import DataLayout
    from levibot_assets_tests.s3_server import aws_env, create_bucket, running_s3_server
    from levibot_assets_tests.stored_files import parquet_files

    with tempfile.TemporaryDirectory() as tmp, running_s3_server(Path(tmp)) as endpoint:
        os.environ.update(aws_env(endpoint))
        bucket = f"levibot-bench-{uuid.uuid4().hex[:8]}"
        create_bucket(endpoint, bucket)
        stores = {"local disk": str(Path(tmp) / "data"), "S3 (moto on 127.0.0.1)": f"s3://{bucket}/data"}
        rows = {}
        for name, data_dir in stores.items():
            seconds = backfill(data_dir, args.days)
            publish_s, rollback_s = releases(data_dir, args.releases)
            rows[name] = (seconds, publish_s, rollback_s, serving(data_dir, 0.0), serving(data_dir, 1.0))
            print(name, rows[name], flush=True)
        local, remote = (DataLayout(d).root for d in stores.values())
        same = parquet_files(local) == parquet_files(remote)

    base = rows["local disk"]
    partitions = 2 * args.days * len(SYMBOLS)
    lines = [
        f"raw_ohlcv + features for {len(SYMBOLS)} symbols x {args.days} days ({partitions} partition files), "
        f"{args.releases} publishes and rollbacks of a LightGBM release, 2000 one-row predictions "
        f"(Python {platform.python_version()}, {os.cpu_count()} cores).",
        "",
        "| store | backfill s | ms / partition | publish s | rollback s | predict p50 us, pointer every call | "
        "predict p50 us, pointer every 1 s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, (seconds, publish_s, rollback_s, every_call, every_second) in rows.items():
        lines.append(f"| {name} | {seconds:.1f} | {seconds / partitions * 1000:.1f} | {publish_s:.3f} | "
                     f"{rollback_s:.3f} | {every_call:.1f} | {every_second:.1f} |")
    remote_row = rows["S3 (moto on 127.0.0.1)"]
    lines += ["", "Ratios S3 / local: " + ", ".join(
        f"{label} {r / b:.1f}x" for label, r, b in zip(
            ("backfill", "publish", "rollback", "predict (pointer every call)", "predict (every 1 s)"), remote_row, base))]
    lines.append(f"Parquet files on S3 byte-identical to local disk: {same}.")
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()

"""A year of raw_ohlcv + features for 3 symbols: `dagster asset materialize --partition-range` vs a plain loop.

Both write the same files from the same core functions (synthetic source), each into its own
temporary data directory. The plain loop runs in this process (imports paid beforehand). The
Dagster run is the real CLI as a user types it, one process with a fresh SQLite DAGSTER_HOME (the
instance `make run` uses), wall time including its start-up; its peak RSS is the largest of its
processes (the multiprocess executor runs each step in a child). The outputs are compared byte for
byte. Each run's CPU time (user + system, of this process for the loop, of the CLI and its step
processes for a run) is given beside its wall time: other work on the machine moves wall times by
tens of percent between two runs, CPU times much less. Prints a Markdown table; `--out FILE` also writes it.

`--dagster-yaml FILE` (repeatable) runs the CLI once per instance file, each against the same plain
loop; `--postgres` starts a throwaway PostgreSQL server as the tests do (levibot_assets_tests/
postgres.py) and gives each run a fresh database in the DAGSTER_PG_* variables that
docker/dagster.yaml reads, so SQLite and PostgreSQL instance files can be compared in one process.

    .venv/bin/python benchmarks/backfill_overhead.py [--days 365] [--out benchmarks/out/backfill.md]
    .venv/bin/python benchmarks/backfill_overhead.py --days 60 --postgres --dagster-yaml dagster.yaml \
        --dagster-yaml docker/dagster.yaml
"""
import argparse
import contextlib
import datetime as dt
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
FIRST_DAY = dt.date(2025, 1, 1)
os.environ["LEVIBOT_START_DATE"] = FIRST_DAY.isoformat()


def plain_backfill(dates, symbols, data_dir: Path) -> None:
    """What the two assets do, minus Dagster: generate, check, compute features (with warm-up), write."""
    import pandas as pd

    from levibot_assets.core import quality
    from levibot_assets.core.features import compute_features
    from levibot_assets.core.layout import DataLayout
    from levibot_assets.core.sources.synthetic import synthetic_day
    from levibot_assets.core.tables import read_table, write_table

    layout = DataLayout(data_dir)
    for symbol in symbols:
        for date in dates:
            bars = synthetic_day(symbol, date)
            assert quality.raw_consistency(bars).passed
            write_table(layout, "raw_ohlcv", date, symbol, bars)
        for date in dates:
            previous = date - dt.timedelta(days=1)
            days = [previous, date] if layout.table("raw_ohlcv", previous, symbol).exists() else [date]
            frame = compute_features(pd.concat([read_table(layout, "raw_ohlcv", d, symbol) for d in days]), date)
            assert quality.features_finite(frame).passed
            write_table(layout, "features", date, symbol, frame)


# Runs the CLI as a child subreaper: the step processes fork from the executor's fork server, which
# outlives the CLI by a moment and is nobody's waited-for child, so without this its CPU and theirs
# would be missing from RUSAGE_CHILDREN.
SUBREAPER = """
import ctypes, os, subprocess, sys
ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: orphans come back here
code = subprocess.call(sys.argv[1:])
while True:
    try:
        os.wait()
    except ChildProcessError:
        break
sys.exit(code)
"""


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cli_backfill(dates, symbols, data_dir: Path, home: Path, dagster_yaml: Path, instance_env: dict) -> tuple[float, float]:
    """Wall and CPU seconds of one `dagster asset materialize` run (CPU: the CLI and all its descendants)."""
    home.mkdir(parents=True)
    shutil.copy(dagster_yaml, home / "dagster.yaml")
    env = {**os.environ, **instance_env, "DAGSTER_HOME": str(home), "LEVIBOT_DATA_DIR": str(data_dir),
           "LEVIBOT_SOURCE": "synthetic", "DAGSTER_COMPUTE_LOGS_DIR": str(home / "compute_logs")}
    partition_range = f"{dates[0]}|{symbols[0]}...{dates[-1]}|{symbols[-1]}"
    # the dagster of the interpreter running this script (the README's .venv, or any other)
    command = [str(Path(sys.executable).parent / "dagster"), "asset", "materialize", "-m", "levibot_assets.definitions",
               "--select", "raw_ohlcv,features", "--partition-range", partition_range]
    t0, cpu0 = time.perf_counter(), _children_cpu()
    done = subprocess.run([sys.executable, "-c", SUBREAPER, *command], cwd=REPO, env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t0, _children_cpu() - cpu0
    if done.returncode != 0:
        raise SystemExit(f"dagster asset materialize failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return wall, cpu


def _storage(dagster_yaml: Path) -> str:
    import yaml

    return "PostgreSQL" if "postgres" in str(yaml.safe_load(dagster_yaml.read_text())["storage"]).lower() else "SQLite"


def _shown(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--dagster-yaml", type=Path, action="append",
                        help="instance file of a CLI run (repeatable; default: the repository's dagster.yaml)")
    parser.add_argument("--postgres", action="store_true",
                        help="run the CLI on a throwaway PostgreSQL server (the DAGSTER_PG_* variables of docker/dagster.yaml)")
    args = parser.parse_args()
    yamls = args.dagster_yaml or [REPO / "dagster.yaml"]
    dates = [FIRST_DAY + dt.timedelta(days=i) for i in range(args.days)]
    import levibot_assets.definitions  # noqa: F401  (import cost is not part of the plain loop)

    runs = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        tmp = Path(tmp)
        server = None
        if args.postgres:
            from levibot_assets_tests.postgres import postgres_running

            server = stack.enter_context(postgres_running())
        t0, cpu0 = time.perf_counter(), time.process_time()
        plain_backfill(dates, SYMBOLS, tmp / "plain")
        plain, plain_cpu = time.perf_counter() - t0, time.process_time() - cpu0
        files = sorted(p.relative_to(tmp / "plain") for p in (tmp / "plain").rglob("*.parquet"))
        assert len(files) == 2 * len(dates) * len(SYMBOLS)
        for i, dagster_yaml in enumerate(yamls):
            instance_env = server.dagster_env(server.create_database(f"bench{i}")) if server else {}
            through_cli = cli_backfill(dates, SYMBOLS, tmp / f"dagster{i}", tmp / f"home{i}", dagster_yaml, instance_env)
            differing = [f for f in files if (tmp / "plain" / f).read_bytes() != (tmp / f"dagster{i}" / f).read_bytes()]
            assert not differing, f"outputs differ: {differing[:5]}"
            shutil.rmtree(tmp / f"dagster{i}")
            runs.append((dagster_yaml, through_cli))
        cli_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    n = len(dates) * len(SYMBOLS)
    table = "\n".join(
        [
            f"raw_ohlcv + features, {len(SYMBOLS)} symbols x {len(dates)} days = {n} partitions, synthetic source "
            f"({os.cpu_count()} cores, Python {platform.python_version()}; load average {load_before:.1f} before, "
            f"{os.getloadavg()[0]:.1f} after)",
            "",
            "| run | wall s | ms / partition | ratio | CPU s | CPU ratio |",
            "|---|---:|---:|---:|---:|---:|",
            f"| plain Python loop (same core functions and checks) | {plain:.1f} | {1000 * plain / n:.1f} | 1.00 "
            f"| {plain_cpu:.1f} | 1.00 |",
            *(
                f"| `dagster asset materialize --partition-range` (one run, {_storage(dagster_yaml)}, "
                f"{_shown(dagster_yaml)}, process start included) | "
                f"{wall:.1f} | {1000 * wall / n:.1f} | {wall / plain:.2f} | {cpu:.1f} | {cpu / plain_cpu:.2f} |"
                for dagster_yaml, (wall, cpu) in runs
            ),
            "",
            f"Peak RSS of the Dagster runs (largest of their processes): {cli_rss:.0f} MiB. "
            f"All {len(files)} files byte-identical between the plain loop and each run.",
        ]
    )
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()

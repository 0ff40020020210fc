"""Concurrent nightly LightGBM trainings: 3 symbols at once vs one after another, per thread setting.

The work of one lgbm_model run: core.lgbm.train_lgbm (Optuna, --trials trials on 3 purged
walk-forward folds, then the refit) on the training rows of a 14-day synthetic feature window
(core.dataset.split_window, label horizon 15). Feature windows are built once up front and stored
as parquet, so every worker only reads its training rows and trains, like a run that finds its
features materialized. Each training runs in its own process, as each Dagster run does.

For every variant the three processes are started (a) one after another and (b) all at once, and
the wall time from the first start to the last exit is compared: ratio = (b) / (a). Variants:
  default          LEVIBOT_THREADS unset: the derived budget (settings.default_threads, with
                   $DAGSTER_HOME/dagster.yaml = the repository's: max_concurrent_runs 4), and
                   OMP_WAIT_POLICY unset, so core.lgbm sets PASSIVE
  old              LEVIBOT_THREADS=2 (the previous default) and libgomp's own wait policy (spin,
                   then sleep), as this project did before: OMP_WAIT_POLICY set to "" so core.lgbm keeps
                   it (libgomp prints one "Invalid value" warning per process and uses its default)
  2threads+passive LEVIBOT_THREADS=2 with the new PASSIVE default
  old+active       LEVIBOT_THREADS=2, OMP_WAIT_POLICY=ACTIVE (threads never sleep)
OMP_WAIT_POLICY is removed from the environment for variants that do not set it. Writes
benchmarks/out/concurrent_nightly.md (or --out).

    .venv/bin/python benchmarks/concurrent_nightly.py [--trials 32] [--variants default,old,...]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
TEST_DATE = dt.date(2025, 10, 20)
TRAIN_DAYS = 14
HORIZON = 15
REPO = Path(__file__).resolve().parents[1]
OUT = Path(__file__).parent / "out" / "concurrent_nightly.md"
VARIANTS = {
    "default": {},
    "old": {"LEVIBOT_THREADS": "2", "OMP_WAIT_POLICY": ""},
    "2threads+passive": {"LEVIBOT_THREADS": "2"},
    "old+active": {"LEVIBOT_THREADS": "2", "OMP_WAIT_POLICY": "ACTIVE"},
}


def _build_training_rows(directory: Path) -> dict[str, Path]:
    import pandas as pd

    from levibot_assets.core.dataset import split_window
    from levibot_assets.core.features import compute_features
    from levibot_assets.core.sources.synthetic import synthetic_day

    paths = {}
    for symbol in SYMBOLS:
        days = [TEST_DATE - dt.timedelta(days=i) for i in reversed(range(TRAIN_DAYS))]
        window = {}
        for day in days:
            bars = pd.concat([synthetic_day(symbol, day - dt.timedelta(days=1)), synthetic_day(symbol, day)], ignore_index=True)
            window[day.isoformat()] = compute_features(bars, day, HORIZON)
        data = split_window(window, TEST_DATE, HORIZON)
        paths[symbol] = directory / f"{symbol}.parquet"
        data.train.to_parquet(paths[symbol])
    return paths


def worker(path: str, trials: int) -> None:
    """One run's training: read the rows, train_lgbm with the settings from the environment."""
    started = time.perf_counter()
    import pandas as pd

    from levibot_assets.core.lgbm import train_lgbm  # sets OMP_WAIT_POLICY=PASSIVE unless it is set
    from levibot_assets.settings import Settings

    train = pd.read_parquet(path)
    settings = Settings.from_env({**os.environ, "LEVIBOT_OPTUNA_TRIALS": str(trials)})
    ready = time.perf_counter()
    training = train_lgbm(
        train, horizon=settings.label_horizon, n_trials=settings.optuna_trials, threads=settings.threads,
        storage=settings.optuna_storage,
    )
    print(json.dumps({
        "threads": settings.threads,
        "rows": len(train),
        "setup_s": round(ready - started, 3),
        "train_s": round(training.train_seconds, 3),
        "trials": training.tuning.n_trials,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY") or "(libgomp default)",
    }))


def _env(variant: dict[str, str], dagster_home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LEVIBOT_THREADS", "OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    env["DAGSTER_HOME"] = str(dagster_home)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(variant)
    return env


def _launch(paths: dict[str, Path], env: dict[str, str], trials: int) -> list[subprocess.Popen]:
    return [
        subprocess.Popen([sys.executable, __file__, "--worker", str(p), "--trials", str(trials)],
                         env=env, stdout=subprocess.PIPE, text=True)
        for p in paths.values()
    ]


def _collect(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"worker failed with status {proc.returncode}")
    return json.loads(out.strip().splitlines()[-1])


def run_variant(paths: dict[str, Path], env: dict[str, str], trials: int) -> dict:
    started = time.perf_counter()
    sequential = []
    for path in paths.values():
        (proc,) = _launch({"one": path}, env, trials)
        sequential.append(_collect(proc))
    seq_wall = time.perf_counter() - started
    started = time.perf_counter()
    procs = _launch(paths, env, trials)
    concurrent = [_collect(p) for p in procs]
    conc_wall = time.perf_counter() - started
    return {"sequential": sequential, "concurrent": concurrent, "seq_wall": seq_wall, "conc_wall": conc_wall}


def _load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=32)
    parser.add_argument("--variants", default="default,old,2threads+passive")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.trials)
        return
    names = [v.strip() for v in args.variants.split(",")]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")

    from levibot_assets.settings import available_cores, default_threads, instance_concurrent_runs

    load_before = _load()
    results = {}
    with tempfile.TemporaryDirectory(prefix="levibot-bench-") as tmp:
        tmp = Path(tmp)
        shutil.copy(REPO / "dagster.yaml", tmp / "dagster.yaml")
        paths = _build_training_rows(tmp)
        home_env = {"DAGSTER_HOME": str(tmp)}
        budget = (available_cores(), instance_concurrent_runs(home_env), default_threads(home_env))
        for name in names:
            print(f"{name} ...", flush=True)
            results[name] = run_variant(paths, _env(VARIANTS[name], tmp), args.trials)
            r = results[name]
            print(f"  sequential {r['seq_wall']:.1f} s, concurrent {r['conc_wall']:.1f} s, ratio {r['conc_wall'] / r['seq_wall']:.2f}", flush=True)
    load_after = _load()

    rows = next(iter(results.values()))["sequential"][0]["rows"]
    lines = [
        "# Concurrent nightly LightGBM trainings (3 symbols)",
        "",
        f"train_lgbm, {args.trials} Optuna trials + refit, {rows} training rows per symbol (14-day synthetic window), "
        f"one process per symbol. Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}. "
        f"Derived budget: {budget[0]} cores // max_concurrent_runs {budget[1]} = {budget[2]} thread(s) per run. "
        f"Load average (1/5/15 min) before: {load_before}; after: {load_after}.",
        "",
        "| variant | threads | OMP_WAIT_POLICY | one after another, wall s | 3 at once, wall s | ratio (at once / one after another) | train s each, alone | train s each, at once |",
        "|---|---:|---|---:|---:|---:|---|---|",
    ]
    for name, r in results.items():
        alone = ", ".join(f"{w['train_s']:.1f}" for w in r["sequential"])
        together = ", ".join(f"{w['train_s']:.1f}" for w in r["concurrent"])
        first = r["sequential"][0]
        lines.append(
            f"| {name} | {first['threads']} | {first['omp_wait_policy']} | {r['seq_wall']:.1f} | {r['conc_wall']:.1f} | "
            f"{r['conc_wall'] / r['seq_wall']:.2f} | {alone} | {together} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

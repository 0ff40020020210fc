"""FreqAI's job through the project's commands vs a plain core loop in this process, and vs FreqAI.

The job: 23 test days (2023-04-08 .. 2023-04-30) x 3 pairs of the shared Binance data, a 14-day
window, one LightGBM per pair-day with 1 Optuna trial. (a) a plain Python loop over the core
functions the assets call (same checks, evaluation, drift PSI and files, the plots the asset
draws), in this process with imports paid beforehand; (b) the project's CLI as a user types it,
`levibot materialize` for raw_ohlcv + features of every day the windows need, then for lgbm_model
over the test days (one range run per pair each), with a fresh SQLite DAGSTER_HOME (the project's
dagster.yaml), process starts included. Every file is compared
byte for byte; a model's metrics JSON is compared without its measured train_seconds.

    LEVIBOT_THREADS=1 .venv/bin/python benchmarks/freqai_job.py [--out benchmarks/out/freqai_job.md]
"""
import argparse
import datetime as dt
import json
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
DEFAULT_FILES = Path(os.environ.get("LEVIBOT_SHARED_DATA") or REPO.parent / "shared" / "data") / "binance-spot-2023-03"
FREQAI_SECONDS = 18.6  # FreqAI's LightGBMClassifier on the same job (measured by the author, not re-run here)
SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", type=dt.date.fromisoformat, default=dt.date(2023, 4, 8))
    parser.add_argument("--end", type=dt.date.fromisoformat, default=dt.date(2023, 4, 30))
    parser.add_argument("--symbols", default=",".join(SYMBOLS))
    parser.add_argument("--files-dir", type=Path, default=DEFAULT_FILES)
    parser.add_argument("--out", type=Path)
    return parser.parse_args()


def plain_data(files_dir: Path, symbols, dates, layout) -> None:
    """What raw_ohlcv and features do, minus Dagster: read the dump, check, compute features (warm-up), write."""
    import pandas as pd

    from levibot_assets.core import quality
    from levibot_assets.core.features import compute_features
    from levibot_assets.core.sources.files import files_day
    from levibot_assets.core.tables import read_table, write_table
    from levibot_assets.settings import get_settings

    horizon = get_settings().label_horizon
    for symbol in symbols:
        for date in dates:
            bars = files_day(files_dir, symbol, date)
            assert quality.raw_consistency(bars).passed
            quality.raw_completeness(bars, date), quality.raw_halts(bars)
            write_table(layout, "raw_ohlcv", date, symbol, bars)
        for date in dates:
            previous = date - dt.timedelta(days=1)
            days = [previous, date] if layout.table("raw_ohlcv", previous, symbol).exists() else [date]
            frame = compute_features(pd.concat([read_table(layout, "raw_ohlcv", d, symbol) for d in days], ignore_index=True),
                                     date, horizon)
            assert quality.features_finite(frame).passed
            quality.features_complete_after_warmup(frame), quality.label_balance(frame)
            write_table(layout, "features", date, symbol, frame)


def plain_models(symbols, test_days, layout) -> None:
    """What lgbm_model does for each (test day, pair), minus Dagster."""
    from levibot_assets.assets.models import presented
    from levibot_assets.core.atomic import atomic_write_bytes
    from levibot_assets.core.dataset import DayCache, align_to_rows, load_feature_window, split_window
    from levibot_assets.core.drift import feature_drift
    from levibot_assets.core.evaluation import evaluate_models
    from levibot_assets.core.features import FEATURE_COLUMNS
    from levibot_assets.core.lgbm import train_lgbm
    from levibot_assets.core.model_api import TrainedModel, thread_limits
    from levibot_assets.core.model_store import save_trained_model
    from levibot_assets.core.plots import evaluation_png
    from levibot_assets.core import quality
    from levibot_assets.core.splits import purge_gap
    from levibot_assets.resources.pipeline import PipelineConfig
    from levibot_assets.settings import get_settings

    pipeline = PipelineConfig.from_settings(get_settings())
    plotted = set().union(*(presented([(day, symbol) for day in test_days]) for symbol in symbols))  # one run per pair
    cache = DayCache(pipeline.train_days * len(symbols))
    for date in test_days:
        for symbol in symbols:
            window = load_feature_window(layout, symbol, date, pipeline.train_days, pipeline.label_horizon, cache)
            data = split_window(window, date, pipeline.label_horizon)
            training = train_lgbm(data.train, horizon=pipeline.label_horizon, n_trials=pipeline.optuna_trials,
                                  threads=pipeline.threads, study_name=f"lgbm-{date}-{symbol}")
            on_context = training.model.predict_proba(data.context)
            proba, calibration = (align_to_rows(data.context, on_context, rows) for rows in (data.test, data.train))
            with thread_limits(pipeline.threads):  # per partition, as the asset: a pool loaded meanwhile is capped too
                evaluation = evaluate_models(data.test, {"lgbm": proba}, data.train, pipeline.scoring,
                                             calibration={"lgbm": calibration})
            metric = pipeline.select_metric
            quality.train_test_disjoint(data.train["timestamp"].max(), data.test["timestamp"].min(),
                                        purge_gap(pipeline.label_horizon))
            quality.beats_baselines(metric, evaluation.scores["lgbm"][metric],
                                    {n: evaluation.scores[n][metric] for n in evaluation.baselines})
            key = date.isoformat()
            feature_drift([f for d, f in sorted(window.items()) if d < key], window[key], FEATURE_COLUMNS,
                          pipeline.psi_warn)
            metrics = {"model_type": "lgbm", "symbol": symbol, "test_date": key,
                       "train_days": sorted(d for d in window if d < key), **training.facts(),
                       "evaluation": evaluation.as_dict()}
            save_trained_model(layout, date, symbol, TrainedModel(model=training.model, metrics=metrics))
            if (date, symbol) in plotted:
                png = evaluation_png(evaluation, f"{symbol} {date} lgbm", training.model.feature_importance())
                atomic_write_bytes(layout.model_plot(date, symbol, "lgbm"), png)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cli(env: dict, start: dt.date, end: dt.date, symbols, select: str) -> tuple[float, float]:
    """Wall and CPU seconds of one `levibot materialize` process."""
    command = [str(Path(sys.executable).parent / "levibot"), "materialize", "--start", start.isoformat(),
               "--end", end.isoformat(), "--symbols", ",".join(symbols), "--select", select]
    t0, cpu0 = time.perf_counter(), children_cpu()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t0, children_cpu() - cpu0
    if done.returncode != 0:
        raise SystemExit(f"levibot materialize --select {select} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return wall, cpu


def comparable(path: Path) -> bytes:
    """A file's bytes; a metrics JSON without train_seconds, the one measured (not computed) figure."""
    if path.name.endswith("_metrics.json"):
        record = json.loads(path.read_text())
        record.pop("train_seconds", None)
        return json.dumps(record, sort_keys=True).encode()
    return path.read_bytes()


def main() -> None:
    args = parse_args()
    if not (args.files_dir / "BTC_USDT-1m.json").exists():
        sys.exit(f"real data not found in {args.files_dir} (pass --files-dir or set LEVIBOT_SHARED_DATA)")
    symbols = args.symbols.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="levibot-freqai-job-"))
    os.environ.update({"LEVIBOT_SOURCE": "files", "LEVIBOT_FILES_DIR": str(args.files_dir), "LEVIBOT_START_DATE": "2023-03-17",
                       "LEVIBOT_SYMBOLS": ",".join(symbols), "LEVIBOT_OPTUNA_TRIALS": "1", "LEVIBOT_DATA_DIR": str(tmp / "plain")})
    import levibot_assets.core.lgbm  # noqa: F401  (import costs are not part of the plain loop)
    import matplotlib

    matplotlib.use("Agg")  # as core.plots does
    import matplotlib.pyplot  # noqa: F401
    import levibot_assets.definitions  # noqa: F401
    from levibot_assets.core.layout import DataLayout
    from levibot_assets.settings import get_settings

    settings = get_settings()
    test_days = [args.start + dt.timedelta(days=i) for i in range((args.end - args.start).days + 1)]
    data_start = args.start - dt.timedelta(days=settings.train_days)  # the first window's days + one warm-up day
    data_days = [data_start + dt.timedelta(days=i) for i in range((args.end - data_start).days + 1)]
    try:
        layout = DataLayout(tmp / "plain")
        t0, cpu0 = time.perf_counter(), time.process_time()
        plain_data(args.files_dir, symbols, data_days, layout)
        plain_data_s, plain_data_cpu = time.perf_counter() - t0, time.process_time() - cpu0
        plain_models(symbols, test_days, layout)
        plain_models_s = time.perf_counter() - t0 - plain_data_s
        plain_models_cpu = time.process_time() - cpu0 - plain_data_cpu

        home = tmp / "home"
        home.mkdir()
        shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
        env = {**os.environ, "DAGSTER_HOME": str(home), "LEVIBOT_DATA_DIR": str(tmp / "cli"),
               "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        (cli_data_s, cli_data_cpu), (cli_models_s, cli_models_cpu) = (
            cli(env, data_start, args.end, symbols, "raw_ohlcv,features"), cli(env, args.start, args.end, symbols, "lgbm_model"))

        files = sorted(p.relative_to(tmp / "plain") for p in (tmp / "plain").rglob("*") if p.is_file())
        cli_files = sorted(p.relative_to(tmp / "cli") for p in (tmp / "cli").rglob("*") if p.is_file())
        differing = [f for f in files if not (tmp / "cli" / f).is_file() or comparable(tmp / "plain" / f) != comparable(tmp / "cli" / f)]
        assert files == cli_files and not differing, f"outputs differ: {differing[:5]} / only one side: {sorted(set(files) ^ set(cli_files))[:5]}"
    finally:
        shutil.rmtree(tmp)
    plain, through_cli = plain_data_s + plain_models_s, cli_data_s + cli_models_s
    n_models = len(test_days) * len(symbols)
    table = "\n".join([
        f"FreqAI's job: {len(test_days)} test days {args.start}..{args.end} x {len(symbols)} pairs = {n_models} LightGBM models "
        f"(1 Optuna trial, {settings.train_days}-day window), data for {len(data_days)} days; files source, threads "
        f"{settings.threads} ({os.cpu_count()} cores, Python {platform.python_version()})",
        "",
        "| run | data s | models s | total s | ms / model | vs plain loop | vs FreqAI 18.6 s | CPU s (data + models) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        f"| plain Python loop (same core functions, checks and files) | {plain_data_s:.1f} | {plain_models_s:.1f} | {plain:.1f} "
        f"| {1000 * plain_models_s / n_models:.0f} | 1.00 | {plain / FREQAI_SECONDS:.2f} | {plain_data_cpu:.1f} + {plain_models_cpu:.1f} |",
        f"| `levibot materialize` (data, then lgbm_model; SQLite, process starts included) | {cli_data_s:.1f} | {cli_models_s:.1f} "
        f"| {through_cli:.1f} | {1000 * cli_models_s / n_models:.0f} | {through_cli / plain:.2f} | {through_cli / FREQAI_SECONDS:.2f} "
        f"| {cli_data_cpu:.1f} + {cli_models_cpu:.1f} |",
        "",
        f"All {len(files)} files identical between the two runs (metrics JSON without train_seconds). "
        f"Load average at the end: {os.getloadavg()[0]:.1f} (wall times stretch on a shared machine; CPU s less so).",
    ])
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()

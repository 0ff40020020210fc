"""Out-of-sample scores of lgbm_model (and tft_model with --tft) on real Binance candles, vs baselines and a peer.

Materializes raw_ohlcv + features for every day the training windows need, then the model assets
for each (test day, symbol), all through Dagster (files source: the freqtrade JSON dumps in
../shared/data/binance-spot-2023-03), into a temporary data directory and Dagster instance. Reads
back each partition's `<model>_metrics.json` and writes a Markdown report: per symbol-day scores of
every model and baseline, training times, and pooled AUC over all test rows (recomputed from the
saved models on exactly the rows each asset scored).

With --release (needs --tft), best_release is materialized too, per symbol over the test days in
date order (each day's champion is what the earlier days released), and the report adds, from the
stored predictions/<date>/<SYMBOL>.parquet alone: every candidate (lgbm, tft, logistic) and rule
baseline on the same rows, the decision, and the live score (each day, the model in service at its
start scored on it; days with nothing in service are missing, not 0.5).

    .venv/bin/python benchmarks/models_real_data.py                       # the full run (21 models)
    .venv/bin/python benchmarks/models_real_data.py --symbols BTCUSDT --start 2023-04-30 --end 2023-04-30 --trials 4
    LEVIBOT_THREADS=1 LEVIBOT_TFT_MAX_MINUTES=0.3 .venv/bin/python benchmarks/models_real_data.py \
        --start 2023-03-31 --end 2023-04-04 --trials 8 --tft --release      # BENCHMARKS.md section 2
"""
import argparse
import datetime as dt
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple


class PartitionOutcome(NamedTuple):
    date: dt.date
    symbol: str
    success: bool

REPO = Path(__file__).resolve().parents[1]
DEFAULT_FILES = Path(os.environ.get("LEVIBOT_SHARED_DATA") or REPO.parent / "shared" / "data") / "binance-spot-2023-03"
PEER = {  # FreqAI LightGBMClassifier on the same data (measured by the author)
    "name": "FreqAI LightGBMClassifier",
    "pooled_auc": 0.528,
    "auc_by_symbol": {"BTCUSDT": 0.529, "ETHUSDT": 0.540, "SOLUSDT": 0.508},
    "days_above_half": "18/21",
    "seconds_per_model": 0.14,
    "trading": "threshold rule lost 66% after 0.1% fees",
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", default="BTCUSDT,ETHUSDT,SOLUSDT")
    parser.add_argument("--start", type=dt.date.fromisoformat, default=dt.date(2023, 4, 24))
    parser.add_argument("--end", type=dt.date.fromisoformat, default=dt.date(2023, 4, 30))
    parser.add_argument("--trials", type=int, help="Optuna trials per model (default: LEVIBOT_OPTUNA_TRIALS or 32)")
    parser.add_argument("--tft", action="store_true", help="also train tft_model (needs core/tft.py)")
    parser.add_argument("--release", action="store_true",
                        help="also materialize best_release and report candidates, decisions and the live score (needs --tft)")
    parser.add_argument("--files-dir", type=Path, default=DEFAULT_FILES)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "models_real_data.md")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data directory (models, plots)")
    return parser.parse_args()


def configure_env(args: argparse.Namespace, data_dir: Path) -> None:
    """Settings are read from the environment at import and at run time: set them before importing."""
    if not (args.files_dir / "BTC_USDT-1m.json").exists():
        sys.exit(f"real data not found in {args.files_dir} (pass --files-dir or set LEVIBOT_SHARED_DATA)")
    os.environ.update(
        {
            "LEVIBOT_SOURCE": "files",
            "LEVIBOT_FILES_DIR": str(args.files_dir),
            "LEVIBOT_DATA_DIR": str(data_dir),
            "LEVIBOT_START_DATE": "2023-03-17",
            "LEVIBOT_SYMBOLS": args.symbols,
        }
    )
    if args.trials:
        os.environ["LEVIBOT_OPTUNA_TRIALS"] = str(args.trials)


def window_frames(layout, test_date: dt.date, symbol: str, train_days: int):
    """The stored features of the model's window, verified as the assets read them."""
    from levibot_assets.core.tables import read_window, trailing_dates

    return read_window(layout, "features", symbol, trailing_dates(test_date, train_days))


def rescore(layout, settings, model_types, test_date, symbol):
    """Labels and P(up) of each model and baseline on the rows the asset scored (for pooled AUC)."""
    import numpy as np

    from levibot_assets.core.baselines import baseline_probabilities
    from levibot_assets.core.dataset import align_to_rows, split_window
    from levibot_assets.core.model_api import model_class

    data = split_window(window_frames(layout, test_date, symbol, settings.train_days), test_date, settings.label_horizon)
    probas = {}
    for model_type in model_types:
        model = model_class(model_type).load(layout.model_dir(test_date, symbol))
        probas[model_type] = align_to_rows(data.context, model.predict_proba(data.context), data.test)
    common = np.logical_and.reduce([np.isfinite(p) for p in probas.values()])
    rows = data.test.loc[common].reset_index(drop=True)
    probas = {name: p[common] for name, p in probas.items()}
    probas.update(baseline_probabilities(data.train, rows, horizon=settings.label_horizon))
    return rows["label"].to_numpy(), probas


def release_report(layout, symbols, test_days) -> list[str]:
    """Candidates, rule baselines, decision and live score of each symbol-day, from the stored predictions."""
    import numpy as np
    import pandas as pd

    from levibot_assets.core.baselines import BASELINES
    from levibot_assets.core.metrics import roc_auc
    from levibot_assets.core.model_api import MODEL_FAMILIES
    from levibot_assets.core.predictions import live_rows, live_score, read_predictions
    from levibot_assets.core.release.store import ReleaseError
    sys.path.insert(0, str(REPO))  # the recorded-decision readers live beside the tests
    from levibot_assets_tests.recorded import load_decision, scores_from_predictions

    candidates = list(MODEL_FAMILIES)  # lgbm, tft, logistic: what best_release may release
    names = candidates + [n for n in BASELINES if n not in candidates]
    lines = [
        "", "## best_release: candidates on the same rows, decisions, live score", "",
        "Every figure below is recomputed from predictions/<date>/<SYMBOL>.parquet alone (scored rows).",
        "", "| day | symbol | " + " | ".join(names) + " | champion (release) | decision | live AUC |",
        "|---|---|" + "---:|" * len(names) + "---:|---|---:|",
    ]
    frames, per_day = [], {n: [] for n in names}
    for day in test_days:
        for symbol in symbols:
            try:
                frame = read_predictions(layout, day, symbol)
                decision = load_decision(layout, day, symbol)
            except (FileNotFoundError, ReleaseError):
                lines.append(f"| {day} | {symbol} | no best_release |" + " |" * (len(names) + 2))
                continue
            scores = scores_from_predictions(frame)
            for n in names:
                if n in scores:
                    per_day[n].append(scores[n])
            frames.append(frame.loc[frame["scored"]].assign(day=str(day), symbol=symbol))
            live = live_rows(frame, day)
            live_auc = roc_auc(live["label"].to_numpy(), live["p_up"].to_numpy()) if len(live) else None
            champion = (f"{scores['champion']:.4f} ({decision.champion_release})" if "champion" in scores else "none")
            verdict = f"released {decision.challenger_type}" if decision.released else f"kept ({decision.challenger_type} best)"
            lines.append(f"| {day} | {symbol} | " + " | ".join(f"{scores.get(n, float('nan')):.4f}" for n in names)
                         + f" | {champion} | {verdict} | {'' if live_auc is None else f'{live_auc:.4f}'} |")
    if frames:
        everything = pd.concat(frames, ignore_index=True)
        lines += ["", "| model | pooled AUC (all scored rows) | mean daily AUC | days | days best candidate |",
                  "|---|---:|---:|---:|---:|"]
        best = {}
        for (day, symbol), rows in everything.groupby(["day", "symbol"]):
            s = scores_from_predictions(rows)
            top = max((n for n in candidates if n in s), key=s.__getitem__)
            best[top] = best.get(top, 0) + 1
        for n in names:
            rows = everything.loc[everything["model"] == n]
            pooled = roc_auc(rows["label"].to_numpy(), rows["p_up"].to_numpy()) if len(rows) else float("nan")
            lines.append(f"| {n} | {pooled:.4f} | {np.mean(per_day[n]):.4f} | {len(per_day[n])} | {best.get(n, '')} |")
    lines += ["", "| symbol | live pooled AUC | days counted | days missing (nothing released earlier) | rows |",
              "|---|---:|---:|---:|---:|"]
    for symbol in symbols:
        live = live_score(layout, symbol, until=test_days[-1])
        auc = "n/a" if live.pooled_auc is None else f"{live.pooled_auc:.4f}"
        lines.append(f"| {symbol} | {auc} | {live.days_counted} | {live.days_missing} | {live.rows} |")
    return lines


def main() -> None:
    args = parse_args()
    symbols = args.symbols.split(",")
    workdir = Path(tempfile.mkdtemp(prefix="levibot-models-bench-"))
    configure_env(args, workdir / "data")

    import dagster as dg
    import numpy as np

    from levibot_assets.core.layout import DataLayout
    from levibot_assets.core.metrics import roc_auc
    from levibot_assets.definitions import build_definitions
    from levibot_assets.materialize import materialize_ranges
    from levibot_assets.settings import get_settings

    settings = get_settings()
    defs = build_definitions(settings)
    layout = DataLayout(settings.data_dir)
    model_assets = ["lgbm_model"] + (["tft_model"] if args.tft else [])
    if args.release and not args.tft:
        sys.exit("--release needs --tft: best_release compares lgbm, tft and logistic")
    known = {key.path[-1] for key in defs.resolve_asset_graph().get_all_asset_keys()}
    missing = [a for a in model_assets if a not in known]
    if missing:
        sys.exit(f"{', '.join(missing)} not defined in levibot_assets.definitions")
    model_types = [a.removesuffix("_model") for a in model_assets]
    test_days = [args.start + dt.timedelta(days=i) for i in range((args.end - args.start).days + 1)]
    data_start = args.start - dt.timedelta(days=settings.train_days)  # the window of the first test day + warm-up
    data_days = (args.end - data_start).days + 1

    def log(run):
        print(f"{run.symbol} {run.start}..{run.end}: {'ok' if run.success else 'FAILED'} "
              f"({time.perf_counter() - started:.0f} s)", flush=True)

    started = time.perf_counter()
    (workdir / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(workdir / "dagster")) as instance:
        market = materialize_ranges(defs, data_start, args.end, symbols, ["raw_ohlcv", "features"], instance, log)
        market_seconds = time.perf_counter() - started
        model_runs = materialize_ranges(defs, args.start, args.end, symbols, model_assets, instance, log)
        model_seconds = time.perf_counter() - started - market_seconds
        if args.release:
            model_runs += materialize_ranges(defs, args.start, args.end, symbols, ["best_release"], instance, log)
    release_seconds = time.perf_counter() - started - market_seconds - model_seconds
    failed = [r for r in market + model_runs if not r.success]
    runs = [  # one entry per symbol-day: trained when every model's metrics file is there
        PartitionOutcome(day, symbol, all((layout.model_dir(day, symbol) / f"{m}_metrics.json").exists()
                                          for m in model_types))
        for day in test_days for symbol in symbols
    ]

    lines = [
        "# Out-of-sample model scores on real Binance 1-minute candles",
        "",
        f"Data: {args.files_dir.name} (files source). Test days {args.start} .. {args.end}, symbols {', '.join(symbols)}; "
        f"each model trains on the {settings.train_days - 1} days before its test day (purged), label horizon "
        f"{settings.label_horizon} bars, Optuna trials {settings.optuna_trials}, fees {settings.fee_bps:g} bps per side, "
        f"threads {settings.threads}. Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}.",
        f"raw_ohlcv + features for {data_days} days x {len(symbols)} symbols took {market_seconds:.0f} s.",
        "",
        "| day | symbol | model | AUC | accuracy | log loss | Sharpe after fees | trades | train s |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    pooled_y, pooled_p = [], {}
    per_model = {m: {"aucs": [], "seconds": [], "trades": 0} for m in model_types}
    per_symbol = {(m, s): ([], []) for m in model_types for s in symbols}
    for run in runs:
        if not run.success:
            lines.append(f"| {run.date} | {run.symbol} | FAILED (see the run's log) | | | | | | |")
            continue
        model_dir = layout.model_dir(run.date, run.symbol)
        for m in model_types:
            metrics = json.loads((model_dir / f"{m}_metrics.json").read_text())
            evaluation = metrics["evaluation"]
            per_model[m]["aucs"].append(evaluation["scores"][m]["auc"])
            per_model[m]["seconds"].append(metrics.get("train_seconds", float("nan")))
            per_model[m]["trades"] += evaluation["scores"][m]["n_trades"]
            for name in [m] + (evaluation["baselines"] if m == model_types[0] else []):
                s = evaluation["scores"][name]
                seconds = f"{metrics['train_seconds']:.1f}" if name == m and "train_seconds" in metrics else ""
                label = f"**{name}**" if name == m else name
                lines.append(
                    f"| {run.date} | {run.symbol} | {label} | {s['auc']:.4f} | {s['accuracy']:.4f} | {s['log_loss']:.4f} "
                    f"| {s['sharpe']:.2f} | {s['n_trades']} | {seconds} |"
                )
        y, probas = rescore(layout, settings, model_types, run.date, run.symbol)
        pooled_y.append(y)
        for name, p in probas.items():
            pooled_p.setdefault(name, []).append(p)
        for m in model_types:
            per_symbol[(m, run.symbol)][0].append(y)
            per_symbol[(m, run.symbol)][1].append(probas[m])

    lines += ["", "## Pooled over all test rows", "", "| model | pooled AUC | " + " | ".join(f"{s} AUC" for s in symbols)
              + " | days AUC > 0.5 | mean train s | trades |", "|---|---:|" + "---:|" * len(symbols) + "---:|---:|---:|"]
    if pooled_y:
        y_all = np.concatenate(pooled_y)
        for name, parts in pooled_p.items():
            if name in per_model:
                stats = per_model[name]
                by_symbol = [roc_auc(np.concatenate(per_symbol[(name, s)][0]), np.concatenate(per_symbol[(name, s)][1]))
                             if per_symbol[(name, s)][0] else float("nan") for s in symbols]
                lines.append(
                    f"| **{name}** | {roc_auc(y_all, np.concatenate(parts)):.4f} | " + " | ".join(f"{a:.4f}" for a in by_symbol)
                    + f" | {sum(a > 0.5 for a in stats['aucs'])}/{len(stats['aucs'])} | {np.mean(stats['seconds']):.1f} | {stats['trades']} |"
                )
            else:
                lines.append(f"| {name} (baseline) | {roc_auc(y_all, np.concatenate(parts)):.4f} |" + " |" * len(symbols) + " | | |")
    peer_symbols = " | ".join(f"{PEER['auc_by_symbol'].get(s, float('nan')):.3f}" for s in symbols)
    lines.append(f"| {PEER['name']} (peer) | {PEER['pooled_auc']:.3f} | {peer_symbols} | {PEER['days_above_half']} "
                 f"| {PEER['seconds_per_model']} | ({PEER['trading']}) |")
    if args.release:
        lines += release_report(layout, symbols, test_days)
        lines.append(f"\nbest_release for {len(test_days)} days x {len(symbols)} symbols took {release_seconds:.0f} s "
                     f"(model assets {model_seconds:.0f} s).")
    lines += ["", f"Failed runs: {len(failed)}" + (": " + ", ".join(f"{r.symbol} {r.start}..{r.end}" for r in failed) if failed else ""),
              f"Total wall time: {time.perf_counter() - started:.0f} s."]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"\nwritten to {args.out}")
    if args.keep:
        print(f"models, plots and the Dagster instance are kept in {workdir}")
    else:
        shutil.rmtree(workdir)


if __name__ == "__main__":
    main()

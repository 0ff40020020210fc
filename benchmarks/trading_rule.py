"""The trading rule on real Binance candles: how LEVIBOT_TRADE_SHARE was chosen, and what it trades held out.

Cheap on purpose (no Dagster): features of BTCUSDT, ETHUSDT, SOLUSDT are built with
core.features.compute_features from the shared freqtrade dumps (the previous day's candles as
warm-up, as the features asset does); for every test day and symbol the trailing 14-day window is
split by core.dataset.split_window, a logistic regression (core.baselines.fit_logistic) and a
LightGBM with --lgbm-trials Optuna trials (core.lgbm.train_lgbm; 0: none) are fitted on the
training rows and evaluated by core.evaluation.evaluate_models as best_release does: probabilities
on split.context, aligned to the test rows and to the training rows (the calibration rows of the
entry threshold), with the rule baselines (majority, last_return_sign).

For each share s of the grid the trades of every symbol-day are pooled per period:
  DEV      2023-03-31 .. 04-15: s is chosen here: the s with the largest logistic gross edge per
           trade among those with at least --min-trades trades per 45 symbol-days (3 symbols x 15 days)
  HELD-OUT 2023-04-16 .. 04-30: reported apart, for the chosen s (and the rest of the grid, not used)
Writes benchmarks/out/trading_rule.md (or --out).

    LEVIBOT_THREADS=1 .venv/bin/python benchmarks/trading_rule.py
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from levibot_assets.core.baselines import fit_logistic  # noqa: E402
from levibot_assets.core.dataset import align_to_rows, split_window  # noqa: E402
from levibot_assets.core.evaluation import Scoring, evaluate_models  # noqa: E402
from levibot_assets.core.features import compute_features  # noqa: E402
from levibot_assets.core.lgbm import train_lgbm  # noqa: E402
from levibot_assets.core.sources.files import files_day  # noqa: E402
from levibot_assets.settings import get_settings  # noqa: E402

FILES = Path(os.environ.get("LEVIBOT_SHARED_DATA") or REPO.parent / "shared" / "data") / "binance-spot-2023-03"
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
FIRST_DAY = dt.date(2023, 3, 17)
DEV = (dt.date(2023, 3, 31), dt.date(2023, 4, 15))
HELD_OUT = (dt.date(2023, 4, 16), dt.date(2023, 4, 30))
SHARES = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)
TRAIN_DAYS, HORIZON, FEE_BPS = 14, 15, 10.0
NAMES = ("logistic", "lgbm", "last_return_sign", "majority")


def days(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=k) for k in range((last - first).days + 1)]


def feature_days(symbol: str, last: dt.date) -> dict[str, pd.DataFrame]:
    bars = {d: files_day(FILES, symbol, d) for d in days(FIRST_DAY, last)}
    out = {}
    for d in days(FIRST_DAY, last):
        warm = [bars[d - dt.timedelta(days=1)]] if d > FIRST_DAY else []
        out[d.isoformat()] = compute_features(pd.concat([*warm, bars[d]], ignore_index=True), d, HORIZON)
    return out


def evaluate_day(features: dict[str, pd.DataFrame], test_date: dt.date, lgbm_trials: int) -> dict[float, dict]:
    """{share: {name: TradingResult}} of one symbol-day, the models fitted once for every share."""
    window = {d: f for d, f in features.items() if test_date - dt.timedelta(days=TRAIN_DAYS - 1) <= dt.date.fromisoformat(d) <= test_date}
    split = split_window(window, test_date, HORIZON)
    models = {"logistic": fit_logistic(split.train, HORIZON)}
    if lgbm_trials:
        models["lgbm"] = train_lgbm(split.train, horizon=HORIZON, n_trials=lgbm_trials, threads=get_settings().threads).model
    probas, calibration = {}, {}
    for name, model in models.items():
        on_context = model.predict_proba(split.context)
        probas[name], calibration[name] = (align_to_rows(split.context, on_context, rows) for rows in (split.test, split.train))
    out = {}
    for share in SHARES:
        evaluation = evaluate_models(split.test, probas, split.train, Scoring(HORIZON, FEE_BPS, share),
                                     ["majority", "last_return_sign"], calibration=calibration)
        out[share] = {"trading": evaluation.trading, "calibration_rows": evaluation.facts["n_calibration_rows"]}
    return out


def pooled(results: list, name: str) -> dict:
    """Trades, realised share of slots, hit rate, gross edge and after-fee figures over symbol-days."""
    positions = np.concatenate([r[name].positions for r in results])
    net = np.concatenate([r[name].net_returns for r in results])
    fee = results[0][name].round_trip_bps / 1e4
    traded = positions != 0
    gross = np.round(net[traded] + fee, 12)  # the gross return of each trade (exact zeros stay zero)
    n = int(traded.sum())
    return {
        "trades": n,
        "slots": len(positions),
        "share": n / len(positions),
        "hit_rate": float(np.mean(gross > 0)) if n else float("nan"),
        "gross_bps": float(gross.mean() * 1e4) if n else float("nan"),
        "gross_se_bps": float(gross.std(ddof=1) / np.sqrt(n) * 1e4) if n > 1 else float("nan"),
        "fee_bps": fee * 1e4,
        "net_total": float(net.sum()),
        "net_bps": float(net[traded].mean() * 1e4) if n else float("nan"),
        "days_with_trades": sum(int(np.count_nonzero(r[name].positions) > 0) for r in results),
    }


def fmt(x: float, spec: str) -> str:
    return format(x, spec) if np.isfinite(x) else "n/a"


def table(rows: dict[float, dict], chosen: float | None) -> list[str]:
    lines = ["| s | model | trades / slots | realised share | symbol-days with trades | hit rate | gross bps/trade (± SE) | "
             "fee bps/trade | net bps/trade | after-fee total (log) |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for share, by_name in rows.items():
        for name, p in by_name.items():
            mark = " **(chosen)**" if share == chosen and name == "logistic" else ""
            gross = f"{fmt(p['gross_bps'], '+.2f')} (± {fmt(p['gross_se_bps'], '.2f')})" if p["trades"] else "n/a"
            lines.append(
                f"| {share:g} | {name}{mark} | {p['trades']} / {p['slots']} | {p['share']:.1%} | {p['days_with_trades']} | "
                f"{fmt(p['hit_rate'], '.1%')} | {gross} | {p['fee_bps']:g} | "
                f"{fmt(p['net_bps'], '+.2f')} | {p['net_total']:+.4f} |"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min-trades", type=int, default=100, help="trades needed per 45 symbol-days on DEV")
    parser.add_argument("--lgbm-trials", type=int, default=2, help="Optuna trials per LightGBM (0: no LightGBM)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "trading_rule.md")
    args = parser.parse_args()
    started = time.process_time()
    per_period: dict[str, dict[float, list]] = {"dev": {s: [] for s in SHARES}, "held_out": {s: [] for s in SHARES}}
    calibration_rows = []
    for symbol in SYMBOLS:
        features = feature_days(symbol, HELD_OUT[1])
        for period, (first, last) in (("dev", DEV), ("held_out", HELD_OUT)):
            for day in days(first, last):
                for share, result in evaluate_day(features, day, args.lgbm_trials).items():
                    per_period[period][share].append(result["trading"])
                calibration_rows.append(result["calibration_rows"])
        print(f"{symbol} done ({time.process_time() - started:.0f} s CPU)", flush=True)
    names = [n for n in NAMES if args.lgbm_trials or n != "lgbm"]
    summary = {period: {s: {n: pooled(r, n) for n in names} for s, r in by_share.items()}
               for period, by_share in per_period.items()}
    dev_days = len(days(*DEV)) * len(SYMBOLS)
    needed = args.min_trades * dev_days / 45
    eligible = [s for s in SHARES if summary["dev"][s]["logistic"]["trades"] >= needed]
    chosen = max(eligible, key=lambda s: summary["dev"][s]["logistic"]["gross_bps"]) if eligible else None
    lines = [
        "# The trading rule on real Binance candles (benchmarks/trading_rule.py)", "",
        f"Logistic regression (core.baselines.fit_logistic) and LightGBM ({args.lgbm_trials} Optuna trials; 0: none) "
        f"per symbol-day, {TRAIN_DAYS}-day window, H = {HORIZON}, "
        f"fees {FEE_BPS:g} bps per side; {len(SYMBOLS)} symbols; calibration rows per symbol-day: "
        f"{min(calibration_rows)} .. {max(calibration_rows)} (the training rows of the day before the test day). "
        f"CPU {time.process_time() - started:.0f} s.", "",
        f"Choice of s on DEV {DEV[0]} .. {DEV[1]} ({dev_days} symbol-days): largest logistic gross edge per trade among "
        f"the shares with at least {needed:.0f} trades ({args.min_trades} per 45 symbol-days): s = {chosen}.", "",
        f"## DEV {DEV[0]} .. {DEV[1]}", "", *table(summary["dev"], chosen), "",
        f"## HELD-OUT {HELD_OUT[0]} .. {HELD_OUT[1]} (not used for any choice)", "", *table(summary["held_out"], chosen), "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

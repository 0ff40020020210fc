"""The release decision on real candles: live score vs every family, promotions, per decision policy.

Takes a data directory where raw_ohlcv, features and the model assets (lgbm_model, and tft_model
where it was trained) are already materialized for the test days (e.g. by `levibot materialize`
with LEVIBOT_SOURCE=files on ../shared/data/binance-spot-2023-03), then for each policy
(LEVIBOT_RECORD_DAYS:LEVIBOT_PROMOTE_CONFIDENCE) materializes best_release over the days through
`levibot materialize` (date order, one run per symbol) into its own data directory, whose
raw_ohlcv/features/models are links to the base's. From the stored predictions alone it reports,
separately for the development days (policies were chosen on these) and the held-out days:

- live: each day, the model in service at its start (released on an earlier day) scored on it;
- every candidate family (lgbm, tft, logistic, ensemble) on the same rows (its model trained for
  that day), and the best single family among lgbm/tft/logistic;
- pooled AUC (one AUC over all rows) and mean daily AUC; promotions per symbol per 10 days.

    .venv/bin/python benchmarks/decisions_real_data.py --base /path/to/data --start 2023-03-31 --end 2023-04-30 \
        --dev-end 2023-04-15 --policies 1:0,10:0.9,5:0.8,20:0.9
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from levibot_assets.core.layout import DataLayout  # noqa: E402
from levibot_assets.core.metrics import roc_auc  # noqa: E402
from levibot_assets.core.predictions import CHAMPION, read_predictions  # noqa: E402

SINGLE_FAMILIES = ("lgbm", "tft", "logistic")
SHARED = ("raw_ohlcv", "features", "models")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True, help="data directory with raw_ohlcv, features and models")
    parser.add_argument("--start", type=dt.date.fromisoformat, required=True)
    parser.add_argument("--end", type=dt.date.fromisoformat, required=True)
    parser.add_argument("--dev-end", type=dt.date.fromisoformat, required=True, help="last development day")
    parser.add_argument("--symbols", default="BTCUSDT,ETHUSDT,SOLUSDT")
    parser.add_argument("--policies", default="1:0,10:0.9", help="record_days:confidence, comma-separated")
    parser.add_argument("--work", type=Path, help="where the policies' data directories go (default: a temp dir)")
    parser.add_argument("--reuse", action="store_true", help="analyse existing policy directories, do not run")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "decisions_real_data.md")
    return parser.parse_args()


def run_policy(args, policy: str, root: Path) -> float:
    record_days, confidence = policy.split(":")
    data = root / f"record{record_days}_conf{confidence}"
    if args.reuse:
        return float("nan")
    data.mkdir(parents=True, exist_ok=False)
    for name in SHARED:
        (data / name).symlink_to(args.base.resolve() / name)
    home = root / f"dagster_home_{record_days}_{confidence}"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    env = {**os.environ, "LEVIBOT_DATA_DIR": str(data), "DAGSTER_HOME": str(home),
           "LEVIBOT_RECORD_DAYS": record_days, "LEVIBOT_PROMOTE_CONFIDENCE": confidence}
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "levibot_assets.cli", "materialize", "--start", args.start.isoformat(),
                    "--end", args.end.isoformat(), "--symbols", args.symbols, "--select", "best_release"],
                   env=env, check=False, stdout=subprocess.DEVNULL)
    return time.monotonic() - started


def rows_of(layout: DataLayout, symbol: str, day: str) -> pd.DataFrame | None:
    """The day's live rows with every family's P(up) on them (wide), or None when nothing was in service."""
    try:
        frame = read_predictions(layout, day, symbol)
    except FileNotFoundError:
        return None
    frame = frame.loc[frame["scored"].astype(bool)]
    wide = frame.pivot_table(index="timestamp", columns="model", values="p_up", aggfunc="first")
    champion = frame.loc[frame["model"] == CHAMPION]
    if champion.empty or not (champion["release"].astype(str) < day).all():
        return None
    wide["label"] = frame.groupby("timestamp")["label"].first()
    wide = wide.rename(columns={CHAMPION: "live"})
    wide = wide.loc[np.isfinite(wide["live"])]
    return wide.assign(day=day, symbol=symbol)


def summarize(rows: pd.DataFrame, families: list[str]) -> dict:
    out = {}
    for name in ["live", *families]:
        if name not in rows or rows[name].isna().any():
            continue
        daily = [roc_auc(g["label"].to_numpy(), g[name].to_numpy()) for _, g in rows.groupby(["symbol", "day"])]
        out[name] = (roc_auc(rows["label"].to_numpy(), rows[name].to_numpy()), float(np.mean(daily)))
    return out


def promotions(layout: DataLayout, symbol: str, days: list[str]) -> int:
    path = layout.root / "releases" / "history.jsonl"
    events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    return sum(1 for e in events if e.get("symbol") == symbol and e.get("event") == "promote"
               and str(e.get("release_id", "")).split("@")[0] in days)


def main() -> None:
    args = parse_args()
    symbols = args.symbols.split(",")
    root = args.work or Path(tempfile.mkdtemp(prefix="levibot-decisions-"))
    days = [d.strftime("%Y-%m-%d") for d in pd.date_range(args.start, args.end)]
    periods = {"development": [d for d in days if d <= args.dev_end.isoformat()],
               "held-out": [d for d in days if d > args.dev_end.isoformat()]}
    lines = [f"# Release decisions on real candles ({args.start} .. {args.end}, dev until {args.dev_end})", ""]
    for policy in args.policies.split(","):
        seconds = run_policy(args, policy, root)
        record_days, confidence = policy.split(":")
        layout = DataLayout(root / f"record{record_days}_conf{confidence}")
        lines += [f"## LEVIBOT_RECORD_DAYS={record_days}, LEVIBOT_PROMOTE_CONFIDENCE={confidence} "
                  f"(best_release over {len(days)} days x {len(symbols)} symbols: {seconds:.0f} s)", ""]
        for period, period_days in periods.items():
            frames = [r for s in symbols for d in period_days if (r := rows_of(layout, s, d)) is not None]
            if not frames:
                continue
            rows = pd.concat(frames)
            families = [c for c in ("lgbm", "tft", "logistic", "ensemble") if c in rows.columns]
            scores = summarize(rows, families)
            singles = {f: scores[f][0] for f in SINGLE_FAMILIES if f in scores}
            best_single = max(singles, key=singles.get)
            promos = {s: promotions(layout, s, period_days) for s in symbols}
            per10 = sum(promos.values()) / len(symbols) / len(period_days) * 10
            lines += [f"### {period}: {len(period_days)} days, {len(frames)} symbol-days with a model in service, "
                      f"{len(rows)} rows", "", "| served | pooled AUC | mean daily AUC |", "|---|---:|---:|"]
            for name, (pooled, daily) in scores.items():
                lines.append(f"| {'**live**' if name == 'live' else 'always ' + name} | {pooled:.4f} | {daily:.4f} |")
            lines += ["", f"live - best single family ({best_single}): {scores['live'][0] - singles[best_single]:+.4f} pooled; "
                      f"promotions per symbol per 10 days: {per10:.1f} ({', '.join(f'{s} {n}' for s, n in promos.items())})", ""]
    text = "\n".join(lines)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

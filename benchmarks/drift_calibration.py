"""How often the feature_drift check fires on ordinary real days, and on days with an injected shift.

Real Binance spot 1-minute candles (`../shared/data/binance-spot-2023-03`, read with the files
source's reader), features computed with core.features exactly as the `features` asset does (the
previous day's candles as warm-up). For every symbol and test day 2023-03-31 .. 2023-04-30 the
training window is the 13 days before it (LEVIBOT_TRAIN_DAYS=14 includes the test day). For each
window this computes once, with core.drift: the test day's PSI per feature and every training
day's PSI against the other training days (the ordinary PSIs the bound is calibrated on); then
every rule is applied to those numbers: the check's (PSI above the largest ordinary PSI plus a
margin, LEVIBOT_PSI_WARN), a multiplicative alternative, and the fixed threshold it replaced.

The margin (and the alternative's factor) is chosen on DEV test days (03-31 .. 04-15) only: the
most sensitive grid value whose DEV fire rate is at most half the target of 1 partition in 10
(half: room for the sampling error of 48 symbol-days). HELD-OUT test days (04-16 .. 04-30) are reported apart. Sensitivity: the same
windows with the test day's candles altered, log returns scaled (prices p -> p0 * (p/p0)^k, p0 the
previous day's last close, so no jump at midnight) or volumes scaled.

    .venv/bin/python benchmarks/drift_calibration.py [--out benchmarks/out/drift_calibration.md]
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

from levibot_assets.core.atomic import atomic_write_text  # noqa: E402
from levibot_assets.core.drift import drift_bound, ordinary_psi, psi  # noqa: E402
from levibot_assets.core.features import FEATURE_COLUMNS, compute_features  # noqa: E402
from levibot_assets.core.sources.files import files_day  # noqa: E402

DEFAULT_FILES = Path(os.environ.get("LEVIBOT_SHARED_DATA") or REPO.parent / "shared" / "data") / "binance-spot-2023-03"
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
FIRST_TEST, LAST_DEV, LAST_TEST = dt.date(2023, 3, 31), dt.date(2023, 4, 15), dt.date(2023, 4, 30)
TRAINING_DAYS = 13
HORIZON = 15
TARGET = 0.10  # at most 1 ordinary partition in 10 fires
MARGINS = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0)  # LEVIBOT_PSI_WARN candidates
FACTORS = (1.5, 2.0, 2.5, 2.75, 3.0, 3.5, 4.0)
OLD_THRESHOLD = 0.25  # the fixed rule this replaces: any feature's PSI above 0.25
SHIFTS = {  # name -> (return scale, volume scale) applied to the test day's candles
    "returns x1.5": (1.5, 1.0),
    "returns x2": (2.0, 1.0),
    "returns x3": (3.0, 1.0),
    "volume x0.5": (1.0, 0.5),
    "volume x3": (1.0, 3.0),
    "volume x10": (1.0, 10.0),
}


def shifted(bars: pd.DataFrame, previous_close: float, returns: float, volume: float) -> pd.DataFrame:
    """The day's candles with log returns times `returns` (relative to `previous_close`) and volume times `volume`."""
    out = bars.copy()
    ref = np.log(previous_close)
    for column in ("open", "high", "low", "close"):
        out[column] = np.exp(ref + returns * (np.log(out[column]) - ref))
    out["volume"] = out["volume"] * volume
    return out


def day_features(raw: dict[dt.date, pd.DataFrame], day: dt.date, bars: pd.DataFrame | None = None) -> pd.DataFrame:
    """Features of `day` as the features asset computes them (previous day's candles as warm-up)."""
    today = raw[day] if bars is None else bars
    return compute_features(pd.concat([raw[day - dt.timedelta(days=1)], today], ignore_index=True), day, HORIZON)


def measure(files_dir: Path) -> list[dict]:
    """One record per (symbol, test day): test PSI per feature (plain and shifted) and the ordinary PSIs."""
    test_days = [FIRST_TEST + dt.timedelta(days=k) for k in range((LAST_TEST - FIRST_TEST).days + 1)]
    first = FIRST_TEST - dt.timedelta(days=TRAINING_DAYS + 1)  # one more day: the first day's warm-up
    records = []
    for symbol in SYMBOLS:
        raw = {first + dt.timedelta(days=k): files_day(files_dir, symbol, first + dt.timedelta(days=k))
               for k in range((LAST_TEST - first).days + 1)}
        feats = {day: day_features(raw, day) for day in raw if day > first}
        for test_day in test_days:
            window = [test_day - dt.timedelta(days=k) for k in range(TRAINING_DAYS, 0, -1)]
            train_days = [feats[d] for d in window]
            train = {c: np.concatenate([f[c].to_numpy(dtype="float64") for f in train_days]) for c in FEATURE_COLUMNS}
            previous_close = float(raw[test_day - dt.timedelta(days=1)]["close"].iloc[-1])
            tests = {"ordinary": feats[test_day]}
            for name, (returns, volume) in SHIFTS.items():
                bars = shifted(raw[test_day], previous_close, returns, volume)
                tests[name] = day_features(raw, test_day, bars)
            records.append({
                "symbol": symbol,
                "date": test_day,
                "dev": test_day <= LAST_DEV,
                "window": window,
                "ordinary": ordinary_psi(train_days, FEATURE_COLUMNS),
                "psi": {name: {c: psi(train[c], frame[c].to_numpy()) for c in FEATURE_COLUMNS}
                        for name, frame in tests.items()},
            })
    return records


def multiplicative(ordinary: list[float], factor: float) -> float:
    """The alternative measured against it: `factor` x the largest ordinary PSI, at least the old 0.25."""
    return max(OLD_THRESHOLD, factor * float(np.nanmax(ordinary)))


def fired(record: dict, test: str, rule, p: float) -> list[str]:
    values = record["psi"][test]
    return [c for c in FEATURE_COLUMNS if values[c] > rule(record["ordinary"][c], p)]


def rate(records: list[dict], test: str, rule, p: float) -> float:
    return float(np.mean([bool(fired(r, test, rule, p)) for r in records]))


def choose(dev: list[dict], rule, grid: tuple[float, ...]) -> float:
    """The most sensitive setting whose DEV fire rate is at most half the target."""
    return next((p for p in grid if rate(dev, "ordinary", rule, p) <= TARGET / 2), grid[-1])


def report(records: list[dict], seconds: float) -> str:
    dev = [r for r in records if r["dev"]]
    held = [r for r in records if not r["dev"]]
    margin, factor = choose(dev, drift_bound, MARGINS), choose(dev, multiplicative, FACTORS)
    fixed = lambda rs: float(np.mean([max(r["psi"]["ordinary"].values()) > OLD_THRESHOLD for r in rs]))  # noqa: E731
    pct = lambda x: f"{100 * x:.1f}%"  # noqa: E731
    lines = [
        f"Symbol-days: DEV {len(dev)} (test days {FIRST_TEST}..{LAST_DEV}), HELD-OUT {len(held)} "
        f"({LAST_DEV + dt.timedelta(days=1)}..{LAST_TEST}); {TRAINING_DAYS} training days each; {seconds:.0f} s.",
        "",
        "Fire rate on ordinary days (share of symbol-days with at least one feature above its bound); "
        "m = the largest PSI of a training day vs the other training days, per feature:",
        "",
        "| rule | DEV | HELD-OUT |",
        "|---|---:|---:|",
        f"| fixed (before): PSI > {OLD_THRESHOLD} | {pct(fixed(dev))} | {pct(fixed(held))} |",
    ]
    for p in MARGINS:
        mark = " **(chosen)**" if p == margin else ""
        lines.append(f"| PSI > m + {p:g}{mark} | {pct(rate(dev, 'ordinary', drift_bound, p))} | "
                     f"{pct(rate(held, 'ordinary', drift_bound, p))} |")
    for p in FACTORS:
        mark = " (best multiplicative)" if p == factor else ""
        lines.append(f"| PSI > max({OLD_THRESHOLD}, {p:g} x m){mark} | {pct(rate(dev, 'ordinary', multiplicative, p))} | "
                     f"{pct(rate(held, 'ordinary', multiplicative, p))} |")
    rules = ((drift_bound, margin), (multiplicative, factor))
    lines += [
        "",
        "Injected shifts on the same windows, share of symbol-days that fire (DEV / HELD-OUT):",
        "",
        f"| test day | PSI > m + {margin:g} (chosen) | PSI > max({OLD_THRESHOLD}, {factor:g} x m) |",
        "|---|---:|---:|",
    ]
    for name in ("ordinary", *SHIFTS):
        cells = [f"{pct(rate(dev, name, rule, p))} / {pct(rate(held, name, rule, p))}" for rule, p in rules]
        lines.append(f"| {name} | {cells[0]} | {cells[1]} |")
    vol = [float(np.mean(["volatility_30" in fired(r, "returns x3", rule, p) for r in records])) for rule, p in rules]
    lines.append(f"| volatility_30 among the fired features, returns x3 | {pct(vol[0])} | {pct(vol[1])} |")
    lines += ["", f"Ordinary symbol-days that fire with the chosen rule (PSI > m + {margin:g}):", ""]
    for r in records:
        for c in fired(r, "ordinary", drift_bound, margin):
            lines.append(f"- {r['date']} {r['symbol']} ({'DEV' if r['dev'] else 'HELD-OUT'}): {c} PSI "
                         f"{r['psi']['ordinary'][c]:.4f} > bound {drift_bound(r['ordinary'][c], margin):.4f}")
    lines += ["", "Per feature, all 93 windows: test-day PSI and its calibrated bound (chosen rule), median and largest:", "",
              "| feature | median PSI | max PSI | median bound | max bound | days fired |", "|---|---:|---:|---:|---:|---:|"]
    for c in FEATURE_COLUMNS:
        values = [r["psi"]["ordinary"][c] for r in records]
        bounds = [drift_bound(r["ordinary"][c], margin) for r in records]
        count = sum(c in fired(r, "ordinary", drift_bound, margin) for r in records)
        lines.append(f"| {c} | {np.median(values):.4f} | {max(values):.4f} | {np.median(bounds):.4f} | "
                     f"{max(bounds):.4f} | {count} |")
    halt = dt.date(2023, 3, 24)
    with_halt = [r for r in records if halt in r["window"]]
    top = sorted({c for r in with_halt for c in FEATURE_COLUMNS
                  if int(np.nanargmax(r["ordinary"][c])) == r["window"].index(halt)})
    halt_psi = max(r["ordinary"][c][r["window"].index(halt)] for r in with_halt for c in top) if top else float("nan")
    lines += ["", f"Exchange halt {halt} (in {len(with_halt)} windows): the training day with the largest ordinary PSI "
              f"of its window on {', '.join(top) or 'no feature'} (that PSI at most {halt_psi:.4f})."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files-dir", type=Path, default=DEFAULT_FILES)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "drift_calibration.md")
    args = parser.parse_args()
    start = time.perf_counter()
    records = measure(args.files_dir)
    text = report(records, time.perf_counter() - start)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, text + "\n")


if __name__ == "__main__":
    main()

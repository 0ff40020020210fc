"""The `levibot` command. Each subcommand is a small function registered with @command below.

    levibot releases [--symbol S]                       list releases, '*' marks the one in service
    levibot rollback --symbol S --to previous|DATE      put another release in service (hash-checked)
    levibot predict --symbol S                          P(up) of the model in service for the latest bar
    levibot materialize [--days N | --start D --end D]  one range run per symbol into DAGSTER_HOME

Every subcommand takes --data-dir (default LEVIBOT_DATA_DIR). Errors print one line and exit 2.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import textwrap
from dataclasses import dataclass
from typing import Callable, Sequence

import pandas as pd
import pyarrow

from levibot_assets.core import object_store
from levibot_assets.core.atomic import read_text
from levibot_assets.core.layout import DataLayout
from levibot_assets.core.ohlcv import MarketDataError
from levibot_assets.core.redaction import redact_text
from levibot_assets.core.release.deploy import list_releases, rollback
from levibot_assets.core.release.store import ReleaseError
from levibot_assets.core.tables import read_parquet_file
from levibot_assets.settings import Settings, SettingsError, get_settings, validate_symbol

class InstanceError(RuntimeError):
    """The Dagster instance in DAGSTER_HOME cannot be used (its disk is full or read-only, its database down)."""


# Bad input of any kind (variables, options, files, the disks): one line naming it, exit status 2, no traceback.
INPUT_ERRORS = (SettingsError, ReleaseError, object_store.ObjectStoreError, MarketDataError, ValueError, OSError,
                pyarrow.ArrowException, InstanceError)


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, arguments: Callable[[argparse.ArgumentParser], None] = lambda parser: None):
    """Register `levibot <name>`: `arguments` adds its options, the decorated function runs it."""

    def register(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        COMMANDS[name] = Command(name, help, arguments, run)
        return run

    return register


def _layout(args: argparse.Namespace) -> DataLayout:
    return DataLayout(args.data_dir or get_settings().data_dir)


def _symbol(text: str) -> str:
    try:
        return validate_symbol(text)
    except SettingsError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _symbols(text: str) -> list[str]:
    return [_symbol(part.strip()) for part in text.split(",")]


def _symbol_option(required: bool) -> Callable[[argparse.ArgumentParser], None]:
    def add(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--symbol", required=required, type=_symbol, help="exchange id, e.g. BTCUSDT")

    return add


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


@command("releases", "list releases with their scores; '*' marks the one in service", _symbol_option(False))
def releases(args: argparse.Namespace) -> int:
    rows = list_releases(_layout(args), args.symbol)
    if not rows:
        print(f"no releases{' for ' + args.symbol if args.symbol else ''} under {_layout(args).releases_dir}")
        return 0
    print(f"{'':1} {'symbol':10} {'date':10} {'model':5} {'metric':8} {'score':>7} {'champion':>8} {'baseline':>8}")
    for r in rows:
        marker = ("*" if r.in_service else "!") if r.current else " "
        if r.error:
            print(f"{marker} {r.symbol:10} {r.date:10} DAMAGED: {r.error}")
            continue
        print(
            f"{marker} {r.symbol:10} {r.date:10} {r.model_type:5} {r.select_metric or '-':8} "
            f"{_fmt(r.score):>7} {_fmt(r.champion_score):>8} {_fmt(r.baseline_score):>8}"
        )
    if any(r.current and not r.in_service for r in rows):
        print("! current/<SYMBOL> points at a damaged release the trading engine cannot load: roll back to a good one")
    from levibot_assets.core.predictions import LIVE_WINDOW_DAYS, live_score

    # the live score: each day, the model in service at its start (an earlier release) scored on it
    for symbol in sorted({r.symbol for r in rows}):
        live = live_score(_layout(args), symbol, window=LIVE_WINDOW_DAYS)
        if not live.days:  # no best_release predictions stored for it (e.g. releases made by hand)
            continue
        pooled = f"pooled AUC {live.pooled_auc:.4f}" if live.pooled_auc is not None else "pooled AUC n/a"
        print(f"  {symbol} live score: {pooled} over {live.days_counted} day(s), {live.rows} rows "
              f"({live.days[0]} .. {live.days[-1]}: last {len(live.days)} stored day(s), "
              f"{live.days_missing} without an earlier release in service)")
    from levibot_assets.core.reports import in_service, in_service_markdown

    print("\nin service now:\n" + in_service_markdown([in_service(_layout(args), s) for s in sorted({r.symbol for r in rows})]))
    return 0


def _rollback_arguments(parser: argparse.ArgumentParser) -> None:
    _symbol_option(True)(parser)
    parser.add_argument("--to", required=True, help="'previous' or the YYYY-MM-DD of a release")


@command("rollback", "put an earlier (or later) release of a symbol in service", _rollback_arguments)
def rollback_command(args: argparse.Namespace) -> int:
    event = rollback(_layout(args), args.symbol, args.to)
    print(f"{event['symbol']}: now serving {event['release']} (was {event['previous'] or 'none'})")
    return 0


@command("predict", "P(up) of the model in service for the latest stored bar", _symbol_option(True))
def predict(args: argparse.Namespace) -> int:
    from levibot_assets.serving import ServedModel  # imports the model code only when predicting

    layout = _layout(args)
    dates = layout.table_dates("features", args.symbol)
    if not dates:
        raise ReleaseError(f"no features stored for {args.symbol} under {layout.root}: materialize features first")
    frame = pd.concat([read_parquet_file(layout.table("features", d, args.symbol)) for d in dates[-2:]], ignore_index=True)
    served = ServedModel(layout, args.symbol)
    frame = frame.tail(getattr(served.model, "context_rows", 0) + 1)  # the last bar and the history it needs
    p_up = float(served.predict_proba(frame)[-1])
    bar = frame["timestamp"].iloc[-1]
    horizon = get_settings().label_horizon
    print(
        f"{args.symbol} bar {bar}: P(up over the next {horizon} bars) = {p_up:.4f} "
        f"(release {served.release_date}, {served.model_type})"
    )
    return 0


def _materialize_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--days", type=int, help="the last complete UTC day and the N-1 days before it")
    parser.add_argument("--start", type=dt.date.fromisoformat, help="first date (YYYY-MM-DD)")
    parser.add_argument("--end", type=dt.date.fromisoformat, help="last date (default: the last complete day)")
    parser.add_argument("--symbols", type=_symbols, help="comma-separated symbols (default: LEVIBOT_SYMBOLS)")
    parser.add_argument("--select", default="*", help="comma-separated assets, or * for the whole graph")


@command("materialize", "materialize a date range of partitions: one run per symbol, dates in order; "
         "runs are kept in DAGSTER_HOME", _materialize_arguments)
def materialize_command(args: argparse.Namespace) -> int:
    import dagster as dg
    import sqlalchemy.exc

    from levibot_assets.definitions import build_assets, build_resources
    from levibot_assets.materialize import check_range, last_complete_day, materialize_ranges

    settings = Settings.from_env({**os.environ, "LEVIBOT_DATA_DIR": args.data_dir}) if args.data_dir else get_settings()
    assets = build_assets(settings)  # in dependency order
    defs = dg.Definitions(assets=assets, resources=build_resources(settings))
    if args.days is not None and args.start is not None:
        raise SettingsError("give either --days or --start, not both")
    if args.days is not None and args.days < 1:
        raise SettingsError(f"--days {args.days}: give at least 1 day")
    last = last_complete_day()
    end = args.end or last
    # --days counts back from the end but never before the first partition; --start is taken as given
    start = args.start or max(end - dt.timedelta(days=(args.days or 1) - 1), settings.start_date)
    check_range(start, end, settings.start_date, last)
    symbols = args.symbols or list(settings.symbols)
    unknown = sorted(set(symbols) - set(settings.symbols))
    if unknown:
        raise SettingsError(f"symbols {unknown} are not partitions (LEVIBOT_SYMBOLS={','.join(settings.symbols)})")
    graph = [asset.key.to_user_string() for asset in assets]
    requested = set(graph) if args.select == "*" else {a.strip() for a in args.select.split(",")}
    missing = sorted(requested - set(graph))
    if missing:
        raise SettingsError(f"unknown assets {missing}; the graph has {graph}")
    selection = [a for a in graph if a in requested]  # in dependency order
    days = (end - start).days + 1
    print(f"materializing {', '.join(selection)} for {days} day(s) {start}..{end} x {', '.join(symbols)}")

    def report(run) -> None:
        status = "ok" if run.success else "FAILED\n" + textwrap.indent(run.failure, "    ")
        print(f"  {run.symbol} {run.start}..{run.end}: {status} (run {run.run_id[:8]})", flush=True)

    try:
        with dg.DagsterInstance.get() as instance:
            runs = materialize_ranges(defs, start, end, symbols, selection, instance, on_run=report)
    except sqlalchemy.exc.SQLAlchemyError as exc:  # the instance's storage, e.g. SQLite on a full disk
        cause = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise InstanceError(f"the Dagster instance in DAGSTER_HOME={os.environ.get('DAGSTER_HOME')} failed: {cause}") from None
    summary = DataLayout(settings.data_dir).release_summary(end)
    if summary.exists():
        print(f"release summary of {end} ({summary}):")
        for symbol, decision in sorted(json.loads(read_text(summary))["symbols"].items()):
            print(f"  {symbol}: {'RELEASED' if decision['released'] else 'not released'} - {decision['reason']}")
    failed = [r for r in runs if not r.success]
    print(f"{len(runs) - len(failed)} of {len(runs)} runs succeeded")
    return 1 if failed else 0


class _Parser(argparse.ArgumentParser):
    """argparse's usage errors as one line too; the usage itself is a --help away."""

    def error(self, message: str):
        self.exit(2, f"levibot: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="levibot", description="LeviBot releases, rollback and serving")
    sub = parser.add_subparsers(dest="command", required=True)
    for cmd in COMMANDS.values():
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        p.add_argument("--data-dir", help="data directory (default: LEVIBOT_DATA_DIR or ./data)")
        cmd.arguments(p)
        p.set_defaults(run=cmd.run)
    return parser


def _check_inputs(args: argparse.Namespace) -> None:
    """Settings first, so a bad LEVIBOT_* variable stops every subcommand; then the data directory,
    which as a file would fail deep inside a command, or list nothing as if it were empty."""
    settings = get_settings()
    root = DataLayout(args.data_dir or settings.data_dir).root
    if not object_store.is_remote(root) and root.exists() and not root.is_dir():
        raise NotADirectoryError(f"{'--data-dir' if args.data_dir else 'LEVIBOT_DATA_DIR'} {root} is not a directory")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _check_inputs(args)
        return args.run(args)
    except INPUT_ERRORS as exc:
        message = " ".join(redact_text(str(exc)).split()) or type(exc).__name__
        print(f"levibot: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

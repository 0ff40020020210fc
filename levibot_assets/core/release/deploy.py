"""What is in service and how it changes: current/<SYMBOL> links, best_* links, history, publish and rollback.

On disk (paths from DataLayout only; one release directory is release.store's concern):

    releases/<date>/summary.json                            one entry per symbol of that date
    releases/history.jsonl                                  every promotion and rollback
    current/<SYMBOL> -> ../releases/<date>/<SYMBOL>         what the trading engine serves
    best_lgbm.txt, best_tft.ckpt -> releases/...            best served release per model type

Crash safety: a release is complete in place (store.install_dir) before current/<SYMBOL> is swapped
with an atomic symlink replace, so a crash at any instant leaves current/ pointing at a complete
release. Processes writing the same summary/symbol serialise on fcntl.flock lock files;
history.jsonl, shared by all symbols, is appended under a flock of its own. On an object store the
links are pointer objects, the locks lease objects and the appends conditional PUTs (core.object_store).

What is in service changes only in one critical section per symbol (`_change_service`, under the
symbol lock): re-read what is served, append the history event (fsynced), then make the change.
The event is written ahead, so every state current/<SYMBOL> is ever in is in history, in order.
A writer that dies between its event and its change leaves an event that did not happen; the next
writer of the symbol sees, under the lock, that history's last event is not what is served and
appends a `repair` event saying what is (`_repair_history`). Before a promotion swaps, it checks
that the release in service is still the one its decision was scored against (`_check_champion`).
"""
from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from levibot_assets.core import object_store
from levibot_assets.core.atomic import (
    append_line, atomic_write_text, fsync_dir, is_link, read_link, read_text, resolve_link, set_link,
)
from levibot_assets.core.layout import DataLayout, date_str
from levibot_assets.core.metrics import higher_is_better
from levibot_assets.core.model_api import MODEL_FAMILIES
from levibot_assets.core.release.decision import NOTHING_IN_SERVICE, ReleaseDecision, is_score
from levibot_assets.core.records import json_text, jsonable, utc_now
from levibot_assets.core.release.store import (
    ReleaseError,
    install_dir,
    read_manifest,
    release_file,
    release_id,
    stage_release,
    verify_release,
)

log = logging.getLogger(__name__)



# ----------------------------------------------------------------------------- locks


@contextlib.contextmanager
def file_lock(layout: DataLayout, name: str) -> Iterator[None]:
    """Exclusive fcntl.flock on layout.lock_file(name): serialises writers across processes.

    On an object store, a lease object (object_store.lease): serialises writers across hosts.
    """
    path = layout.lock_file(name)
    if layout.remote:
        with object_store.lease(path):
            yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


# ----------------------------------------------------------------------------- current links


def current_release_dir(layout: DataLayout, symbol: str) -> Path | None:
    """The release directory current/<SYMBOL> points at, or None when nothing is in service."""
    link = layout.current_link(symbol)
    try:
        target = read_link(link)
    except OSError as exc:
        raise ReleaseError(f"{link} is not a symlink ({exc}): fix it by hand or roll back") from None
    return None if target is None else resolve_link(link, target)


def current_release_date(layout: DataLayout, symbol: str) -> str | None:
    target = current_release_dir(layout, symbol)
    return None if target is None else target.parent.name


def in_service_id(layout: DataLayout, symbol: str) -> str:
    """release_id of what current/<SYMBOL> points at, NOTHING_IN_SERVICE, or `<date>@unreadable`."""
    target = current_release_dir(layout, symbol)
    return NOTHING_IN_SERVICE if target is None else release_dir_id(target)


def release_dir_id(release_dir: Path) -> str:
    """release_id of the release in `release_dir`, or `<date>@unreadable` when its manifest is not readable."""
    try:
        return release_id(read_manifest(release_dir))
    except ReleaseError:
        return f"{release_dir.parent.name}@unreadable"


def _point_current(layout: DataLayout, date: str, symbol: str) -> None:
    set_link(layout.current_link(symbol), layout.release_dir(date, symbol))


def _linked_symbols(layout: DataLayout) -> list[str]:
    """Symbols with a current/<SYMBOL> link (not the hidden temp links of a swap in progress)."""
    current = layout.current_dir
    if not current.is_dir():
        return []
    return sorted(p.name for p in current.iterdir() if is_link(p) and not p.name.startswith("."))


def _best_links(layout: DataLayout) -> list[Path]:
    """The best_* links there are now (not the hidden temp links of a swap in progress)."""
    return [p for p in layout.root.glob(layout.best_link("*", "").name) if is_link(p)]


def _drop_best_links_into(layout: DataLayout, release_dir: Path) -> None:
    """Remove best_* links into a release directory about to be replaced (the caller holds best-links).

    The new release may lack the file a link names (another model type): removed first, a link can
    be absent after a crash, never dangling; the refresh after the swap sets it again.
    """
    dropped = False
    for link in _best_links(layout):
        target = read_link(link)
        if target is not None and release_dir in resolve_link(link, target).parents:
            link.unlink(missing_ok=True)
            dropped = True
    if dropped:
        fsync_dir(layout.root)


def _refresh_best_links(layout: DataLayout) -> None:
    """Point best_<type><suffix> at the best-scoring release in service per model type; remove the rest.

    The caller holds the best-links lock. A type with no release in service (after a rollback or a
    re-release as another type) loses its link rather than keep one to a release not served.
    """
    best: dict[str, tuple[float, Path]] = {}
    for symbol in _linked_symbols(layout):
        try:
            release_dir = current_release_dir(layout, symbol)
            manifest = read_manifest(release_dir)
        except ReleaseError:
            continue
        model_type = manifest["model_type"]
        metric = manifest.get("select_metric", "auc")
        score = (manifest.get("decision", {}).get("scores") or {}).get("challenger")
        family = MODEL_FAMILIES.get(model_type)  # the file a best_<type> link points at
        name = family.main_file if family else next(iter(manifest["files"]))
        path = release_file(release_dir, name, manifest["files"].get(name, {}).get("sha256"))
        if not is_score(score) or not path.is_file():
            continue
        key = float(score) if higher_is_better(metric) else -float(score)
        if model_type not in best or key > best[model_type][0]:
            best[model_type] = (key, path)
    kept = set()
    for model_type, (_, path) in best.items():
        link = layout.best_link(model_type, path.suffix)
        set_link(link, path)
        kept.add(link)
    stale = [link for link in _best_links(layout) if link not in kept]
    for link in stale:
        link.unlink(missing_ok=True)
    if stale:
        fsync_dir(layout.root)


# ----------------------------------------------------------------------------- history and summary


def append_history(layout: DataLayout, event: dict) -> dict:
    """Append one event as a JSON line (locked write + fsync; a torn last line is cut off first)."""
    event = jsonable({"at": utc_now(), **event})
    append_line(layout.release_history, json.dumps(event, sort_keys=True, allow_nan=False) + "\n")
    return event


def read_history(layout: DataLayout, symbol: str | None = None) -> list[dict]:
    """History events, oldest first. A line that does not parse is skipped with a warning.

    The only such line a crash can leave is a torn last line (a writer killed mid-append; its change
    never happened, the change comes after the event), which the next append cuts off.
    """
    path = layout.release_history
    if not path.exists():
        return []
    text = read_text(path, errors="replace")
    lines = text.splitlines()
    events = []
    for number, line in enumerate(lines, 1):
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            event = None
        if not isinstance(event, dict):
            torn = number == len(lines) and not text.endswith("\n")
            what = "is torn (a writer died mid-append)" if torn else "is not a JSON event"
            log.warning(f"{path} line {number} {what}: skipped")
            continue
        if symbol is None or event.get("symbol") == symbol:
            events.append(event)
    return events


def read_summary(layout: DataLayout, date: dt.date | str) -> dict:
    path = layout.release_summary(date)
    if not path.exists():
        return {"date": date_str(date), "symbols": {}}
    return json.loads(read_text(path))


def update_summary(layout: DataLayout, date: dt.date | str, symbol: str, entry: dict) -> dict:
    """Set this symbol's entry of releases/<date>/summary.json; other symbols' entries are kept.

    Read-modify-write under a per-date lock, written atomically: concurrent runs for other symbols
    in other processes cannot lose each other's entries.
    """
    date = date_str(date)
    with file_lock(layout, f"summary-{date}"):
        summary = read_summary(layout, date)
        summary.setdefault("symbols", {})[symbol] = entry
        summary["updated_at"] = utc_now()
        atomic_write_text(layout.release_summary(date), json_text(summary))
    return summary


# ----------------------------------------------------------------------------- changing what is in service


def _repair_history(layout: DataLayout, symbol: str) -> None:
    """Under the symbol lock: if history's last event for the symbol is not what is in service, say so.

    Events are written ahead of their change, so they disagree only after a writer died (or failed)
    between its event and its change; the `repair` event records what is really served. It also
    records a release put in service before history existed.
    """
    events = read_history(layout, symbol)
    recorded = events[-1].get("release_id") if events else NOTHING_IN_SERVICE
    actual = in_service_id(layout, symbol)
    if recorded != actual:
        reason = (f"the last event ({recorded}) was not carried out: its writer stopped before the change" if events
                  else "in service before history recorded it")
        append_history(layout, {
            "event": "repair",
            "symbol": symbol,
            "release": current_release_date(layout, symbol),
            "release_id": actual,
            "previous": events[-1].get("release") if events else None,
            "previous_id": recorded,
            "reason": reason,
        })


def _check_champion(layout: DataLayout, decision: ReleaseDecision) -> None:
    """Refuse to promote on a stale comparison: the decision beat a release no longer in service.

    Runs under the symbol lock. Another process (a rollback, a release of another date, a re-run of
    the champion's date) may have changed current/<SYMBOL> while this partition was scored; failing
    leaves everything as it is, and a re-run scores against what is now in service. A decision not
    to release changes nothing in service, so it is recorded without this check.
    """
    if decision.champion_id is None:
        return
    now = in_service_id(layout, decision.symbol)
    if now != decision.champion_id:
        raise ReleaseError(
            f"{decision.date}|{decision.symbol}: the release in service changed from {decision.champion_id} to {now} "
            "while this partition was scored; nothing was released: re-run it"
        )


def _change_service(layout: DataLayout, symbol: str, event: dict, date: str, staging: Path | None = None) -> dict:
    """The one place what is served changes: history event first, then the change (symbol lock held).

    Appends `event` (+ `previous`, `previous_id`) fsynced, then installs `staging` at
    releases/<date>/<SYMBOL> if given (for a re-run of the date in service, this install is already
    the change: hence the event before it), points current/<SYMBOL> there and refreshes the best_*
    links, all under the best-links lock so that no other writer links into the directory while it
    is replaced.
    """
    event = append_history(layout, {
        **event,
        "symbol": symbol,
        "release": date,
        "previous": current_release_date(layout, symbol),
        "previous_id": in_service_id(layout, symbol),
    })
    with file_lock(layout, "best-links"):
        if staging is not None:
            final = layout.release_dir(date, symbol)
            _drop_best_links_into(layout, final)
            install_dir(staging, final)
        _point_current(layout, date, symbol)
        _refresh_best_links(layout)
    return event


def _manifest_record(decision: ReleaseDecision) -> dict:
    """What the manifest of a promoted release records of the decision that made it."""
    return {
        "select_metric": decision.select_metric,
        "params": decision.params,
        "metrics": decision.metrics,
        "trained_on": decision.trained_on,
        "decision": decision.to_json(),
    }


def _summary_entry(decision: ReleaseDecision, current: str | None) -> dict:
    """The whole decision (without the model) plus which release is in service after it."""
    return {**decision.to_json(), "current_release": current}


def publish(layout: DataLayout, decision: ReleaseDecision) -> dict:
    """Carry out a decision: write + deploy the release when promoted, record it in history/summary.

    Under the symbol lock: repair history, re-check the champion, stage the release, then
    `_change_service` (history event -> release dir -> current/<SYMBOL> -> best links). The summary
    (per-date lock) comes last; a crash that skips it leaves the decision in the released manifest.
    """
    symbol, date = decision.symbol, decision.date
    with file_lock(layout, f"release-{symbol}"):
        _repair_history(layout, symbol)
        if decision.released:
            _check_champion(layout, decision)
            staging, new_id = stage_release(layout, date, symbol, decision.model, _manifest_record(decision))
            try:
                _change_service(layout, symbol, {
                    "event": "promote",
                    "release_id": new_id,
                    "model_type": decision.challenger_type,
                    "select_metric": decision.select_metric,
                    "score": decision.scores.get("challenger"),
                    "reason": decision.reason,
                }, date, staging)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        current = current_release_date(layout, symbol)
    entry = _summary_entry(decision, current)
    update_summary(layout, date, symbol, entry)
    return entry


# ----------------------------------------------------------------------------- listing and rollback


@dataclass(frozen=True)
class ReleaseInfo:
    """One release as listed; `current`: current/<SYMBOL> points at it.

    `error` is set when the release fails verification (manifest or any file's sha256): the engine
    cannot load it, so a current release with an error is linked but not served.
    """

    date: str
    symbol: str
    model_type: str | None
    select_metric: str | None
    score: float | None
    champion_score: float | None
    baseline_score: float | None
    current: bool
    error: str | None = None

    @property
    def in_service(self) -> bool:
        return self.current and self.error is None


def release_dates(layout: DataLayout, symbol: str) -> list[str]:
    """Dates that have a release directory for the symbol, oldest first (damaged ones included)."""
    root = layout.releases_dir
    if not root.is_dir():
        return []
    return sorted(d.name for d in root.iterdir() if d.is_dir() and layout.release_dir(d.name, symbol).is_dir())


def released_symbols(layout: DataLayout) -> list[str]:
    root = layout.releases_dir
    if not root.is_dir():
        return []
    names = {s.name for d in root.iterdir() if d.is_dir() for s in d.iterdir() if s.is_dir() and not s.name.startswith(".")}
    return sorted(names | set(_linked_symbols(layout)))


def _release_info(layout: DataLayout, date: str, symbol: str, current: bool) -> ReleaseInfo:
    try:
        manifest, _ = verify_release(layout.release_dir(date, symbol))
    except ReleaseError as exc:
        return ReleaseInfo(date, symbol, None, None, None, None, None, current, str(exc))
    scores = manifest.get("decision", {}).get("scores") or {}
    return ReleaseInfo(
        date=date,
        symbol=symbol,
        model_type=manifest["model_type"],
        select_metric=manifest.get("select_metric"),
        score=scores.get("challenger"),
        champion_score=scores.get("champion"),
        baseline_score=scores.get("best_baseline"),
        current=current,
    )


def list_releases(layout: DataLayout, symbol: str | None = None) -> list[ReleaseInfo]:
    """Every release (oldest first per symbol), verified against its manifest like the loader does.

    Whatever current/<SYMBOL> points at is listed even when it is not a release of the symbol (a
    missing directory, a hand-made link): it is marked current, with the error saying why.
    """
    rows = []
    for sym in [symbol] if symbol else released_symbols(layout):
        try:
            target = current_release_dir(layout, sym)
        except ReleaseError as exc:
            target = None
            rows.append(ReleaseInfo("?", sym, None, None, None, None, None, True, str(exc)))
        linked = target.parent.name if target is not None else None
        if target is not None and target != layout.release_dir(linked, sym):
            error = f"{layout.current_link(sym)} points at {target}, which is not a release directory of {sym}"
            rows.append(ReleaseInfo(linked, sym, None, None, None, None, None, True, error))
            linked = None
        dates = sorted(set(release_dates(layout, sym)) | ({linked} if linked else set()))
        rows.extend(_release_info(layout, date, sym, date == linked) for date in dates)
    return rows


def resolve_target(layout: DataLayout, symbol: str, to: str) -> str:
    """`previous` (the newest release older than the one in service) or a YYYY-MM-DD with a release."""
    dates = release_dates(layout, symbol)
    if not dates:
        known = ", ".join(released_symbols(layout)) or "none"
        raise ReleaseError(f"no releases for symbol {symbol!r} (symbols with releases: {known})")
    if to == "previous":
        current = current_release_date(layout, symbol)
        if current is None:
            raise ReleaseError(f"{symbol} has no release in service, so there is no 'previous': name a release date (YYYY-MM-DD)")
        older = [d for d in dates if d < current]
        if not older:
            raise ReleaseError(f"{symbol}: the release in service ({current}) is the oldest; nothing to roll back to")
        return older[-1]
    try:
        date = dt.date.fromisoformat(to).isoformat()
    except ValueError:
        raise ReleaseError(f"rollback target {to!r} is neither 'previous' nor a YYYY-MM-DD date") from None
    if date not in dates:
        raise ReleaseError(f"{symbol} has no release dated {date} (releases: {', '.join(dates)})")
    return date


def rollback(layout: DataLayout, symbol: str, to: str) -> dict:
    """Point current/<SYMBOL> at an earlier (or later) release after verifying its hashes; log it first."""
    with file_lock(layout, f"release-{symbol}"):
        _repair_history(layout, symbol)
        target = resolve_target(layout, symbol, to)
        manifest, _ = verify_release(layout.release_dir(target, symbol))
        event = {"event": "rollback", "release_id": release_id(manifest), "model_type": manifest["model_type"], "requested": to}
        return _change_service(layout, symbol, event, target)

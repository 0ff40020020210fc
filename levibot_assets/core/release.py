"""Releases: the decision record, dated release directories, hot deploy, rollback and listing.

(The rule that makes the decision lives in core.promotion; this module only needs what was decided.)

On disk (paths from DataLayout only):

    releases/<date>/<SYMBOL>/<model files> + manifest.json   (sha256 of every file, metrics, decision)
    releases/<date>/summary.json                            one entry per symbol of that date
    releases/history.jsonl                                  every promotion and rollback
    current/<SYMBOL> -> ../releases/<date>/<SYMBOL>         what the trading engine serves
    best_lgbm.txt, best_tft.ckpt -> releases/...            best served release per model type

Crash safety: a release is assembled in a staging directory (model files, then manifest.json last,
each fsynced), moved into place with one rename, and only then is current/<SYMBOL> swapped with an
atomic symlink replace. A crash at any instant leaves current/ pointing at a complete release.
Processes writing the same summary/symbol serialise on fcntl.flock lock files; history appends lock the file itself.
Checkpoints are pickles: models are only ever loaded from bytes whose sha256 matched the manifest.
"""
from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import errno
import fcntl
import hashlib
import json
import math
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from levibot_assets.core.atomic import append_line, atomic_symlink, atomic_write_text, fsync_dir
from levibot_assets.core.metrics import higher_is_better
from levibot_assets.core.layout import DataLayout
from levibot_assets.core.model_api import Classifier, model_class

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
# The file each global best_<type><suffix> link points at.
MAIN_FILE = {"lgbm": "lgbm.txt", "tft": "tft.ckpt"}
LIBRARIES = (
    "levibot_assets", "numpy", "pandas", "pyarrow", "lightgbm", "scikit-learn", "optuna",
    "torch", "lightning", "pytorch-forecasting", "dagster",
)


class ReleaseError(RuntimeError):
    """A release cannot be written, found, verified or rolled back to; the message says why."""


# ----------------------------------------------------------------------------- scores and the decision record


def is_score(x: Any) -> bool:
    return isinstance(x, (int, float, np.floating, np.integer)) and math.isfinite(float(x))


def beats(a: Any, b: Any, metric: str, margin: float = 0.0) -> bool:
    """Whether score `a` is better than `b` by more than `margin` (a non-finite `a` never beats)."""
    if not is_score(a):
        return False
    if not is_score(b):
        return True
    return float(a) > float(b) + margin if higher_is_better(metric) else float(a) < float(b) - margin


@dataclass
class ReleaseDecision:
    """What best_release decided for one (date, symbol); `model` is what gets written when released."""

    date: str
    symbol: str
    released: bool
    reason: str
    select_metric: str
    challenger_type: str | None
    scores: dict = field(default_factory=dict)  # challenger, champion, best_baseline (+ its name)
    metrics: dict = field(default_factory=dict)  # candidates, champion, baselines: full score dicts
    champion_release: str | None = None
    trained_on: list[str] = field(default_factory=list)
    params: dict = field(default_factory=dict)
    test_rows: int | None = None
    model: Classifier | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict:
        data = {name: getattr(self, name) for name in self.__dataclass_fields__ if name != "model"}
        data["higher_is_better"] = higher_is_better(self.select_metric)
        return _jsonable(data)

    @classmethod
    def from_json(cls, data: dict) -> "ReleaseDecision":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "model"}
        return cls(**known)


# ----------------------------------------------------------------------------- files, hashes, locks


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def file_lock(layout: DataLayout, name: str) -> Iterator[None]:
    """Exclusive fcntl.flock on layout.lock_file(name): serialises writers across processes."""
    path = layout.lock_file(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _jsonable(value: Any) -> Any:
    """Plain JSON: numpy scalars become Python numbers, NaN/inf become null."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    return str(value)


def _dumps(data: Any) -> str:
    return json.dumps(_jsonable(data), indent=2, sort_keys=True, allow_nan=False) + "\n"


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def library_versions() -> dict[str, str | None]:
    """Installed versions (read from package metadata: nothing heavy is imported)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


# ----------------------------------------------------------------------------- verify and load


def read_manifest(release_dir: Path) -> dict:
    path = Path(release_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise ReleaseError(f"{release_dir} is not a release: {MANIFEST} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ReleaseError(f"{path} is not valid JSON ({exc}): the release is damaged") from None
    files = manifest.get("files")
    if not isinstance(files, dict) or not files or "model_type" not in manifest:
        raise ReleaseError(f"{path} lacks 'files' or 'model_type': the release is damaged")
    for name in files:
        if name != Path(name).name or name in ("", ".", "..", MANIFEST):
            raise ReleaseError(f"{path} lists a file name {name!r} outside the release directory")
    return manifest


def verified_files(release_dir: Path) -> tuple[dict, dict[str, bytes]]:
    """The manifest and the bytes of every listed file, each checked against its sha256."""
    release_dir = Path(release_dir)
    manifest = read_manifest(release_dir)
    contents: dict[str, bytes] = {}
    for name, info in manifest["files"].items():
        try:
            data = (release_dir / name).read_bytes()
        except FileNotFoundError:
            raise ReleaseError(f"{release_dir}: {name} listed in the manifest is missing") from None
        if sha256_bytes(data) != info.get("sha256"):
            raise ReleaseError(
                f"{release_dir / name} does not match the sha256 in its manifest: the file was modified or "
                "damaged; refusing to load it"
            )
        contents[name] = data
    return manifest, contents


def verify_release(release_dir: Path) -> dict:
    """Raise ReleaseError unless every file of the release matches its manifest; return the manifest."""
    manifest, _ = verified_files(release_dir)
    return manifest


def load_release(release_dir: Path) -> tuple[Classifier, dict]:
    """Load a release's model from the bytes that passed verification (a private copy, not the paths).

    Loading from a private copy closes the gap between checking a file and unpickling it.
    """
    manifest, contents = verified_files(release_dir)
    cls = model_class(manifest["model_type"])
    with tempfile.TemporaryDirectory(prefix="levibot-release-") as tmp:
        for name, data in contents.items():
            (Path(tmp) / name).write_bytes(data)
        model = cls.load(Path(tmp))
    return model, manifest


# ----------------------------------------------------------------------------- current links


def current_release_dir(layout: DataLayout, symbol: str) -> Path | None:
    """The release directory current/<SYMBOL> points at, or None when nothing is in service."""
    link = layout.current_link(symbol)
    try:
        target = os.readlink(link)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ReleaseError(f"{link} is not a symlink ({exc}): fix it by hand or roll back") from None
    return Path(os.path.normpath(link.parent / target))


def current_release_date(layout: DataLayout, symbol: str) -> str | None:
    target = current_release_dir(layout, symbol)
    return None if target is None else target.parent.name


def _point_current(layout: DataLayout, date: str, symbol: str) -> None:
    link = layout.current_link(symbol)
    target = os.path.relpath(layout.release_dir(date, symbol), link.parent)
    atomic_symlink(target, link)


def _linked_symbols(layout: DataLayout) -> list[str]:
    """Symbols with a current/<SYMBOL> link (not the hidden temp links of a swap in progress)."""
    current = layout.current_dir
    if not current.is_dir():
        return []
    return sorted(p.name for p in current.iterdir() if p.is_symlink() and not p.name.startswith("."))


def refresh_best_links(layout: DataLayout) -> dict[str, str]:
    """Point best_<type><suffix> at the best-scoring release in service, per model type."""
    with file_lock(layout, "best-links"):
        best: dict[str, tuple[float, Path]] = {}
        symbols = _linked_symbols(layout)
        for symbol in symbols:
            release_dir = current_release_dir(layout, symbol)
            try:
                manifest = read_manifest(release_dir)
            except ReleaseError:
                continue
            model_type = manifest["model_type"]
            metric = manifest.get("select_metric", "auc")
            score = (manifest.get("decision", {}).get("scores") or {}).get("challenger")
            if not is_score(score):
                continue
            key = float(score) if higher_is_better(metric) else -float(score)
            if model_type not in best or key > best[model_type][0]:
                best[model_type] = (key, release_dir / MAIN_FILE.get(model_type, next(iter(manifest["files"]))))
        for model_type, (_, path) in best.items():
            link = layout.best_link(model_type, path.suffix)
            atomic_symlink(os.path.relpath(path, link.parent), link)
        return {t: str(p) for t, (_, p) in best.items()}


# ----------------------------------------------------------------------------- history and summary


def append_history(layout: DataLayout, event: dict) -> None:
    """One JSON line per promotion or rollback, appended with a single locked write + fsync."""
    line = json.dumps(_jsonable({"at": _now(), **event}), sort_keys=True, allow_nan=False)
    append_line(layout.release_history, line + "\n")


def read_history(layout: DataLayout, symbol: str | None = None) -> list[dict]:
    """History events, oldest first; a line torn by a crash mid-append is skipped."""
    path = layout.release_history
    if not path.exists():
        return []
    events = []
    for line in path.read_text().splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if symbol is None or event.get("symbol") == symbol:
            events.append(event)
    return events


def read_summary(layout: DataLayout, date: dt.date | str) -> dict:
    path = layout.release_summary(date)
    if not path.exists():
        return {"date": date if isinstance(date, str) else date.isoformat(), "symbols": {}}
    return json.loads(path.read_text())


def update_summary(layout: DataLayout, date: dt.date | str, symbol: str, entry: dict) -> dict:
    """Set this symbol's entry of releases/<date>/summary.json; other symbols' entries are kept.

    Read-modify-write under a per-date lock, written atomically: concurrent runs for other symbols
    in other processes cannot lose each other's entries.
    """
    date = date if isinstance(date, str) else date.isoformat()
    with file_lock(layout, f"summary-{date}"):
        summary = read_summary(layout, date)
        summary.setdefault("symbols", {})[symbol] = entry
        summary["updated_at"] = _now()
        atomic_write_text(layout.release_summary(date), _dumps(summary))
    return summary


# ----------------------------------------------------------------------------- writing a release


def _exchange_paths(a: Path, b: Path) -> bool:
    """Atomically swap two directories (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(a))


def _install_dir(staging: Path, final: Path) -> None:
    """Put a complete staging directory at `final` in one rename (replacing an older copy atomically)."""
    if not final.exists():
        os.rename(staging, final)
    elif _exchange_paths(staging, final):
        shutil.rmtree(staging)  # now holds the old copy
    else:  # no atomic exchange on this filesystem: a brief window where `final` is absent
        old = staging.with_name(staging.name + ".old")
        os.rename(final, old)
        os.rename(staging, final)
        shutil.rmtree(old)
    fsync_dir(final.parent)


def _remove_stale_staging(layout: DataLayout, symbol: str) -> None:
    """Staging dirs left by a crashed writer (callers hold the symbol lock, so none is live)."""
    pattern = layout.release_staging_dir("*", symbol, "*").relative_to(layout.root)
    for stale in layout.root.glob(str(pattern)):
        shutil.rmtree(stale, ignore_errors=True)


def build_manifest(decision: ReleaseDecision, files: dict[str, str], model_type: str) -> dict:
    return {
        "format": MANIFEST_FORMAT,
        "date": decision.date,
        "symbol": decision.symbol,
        "model_type": model_type,
        "select_metric": decision.select_metric,
        "files": {name: {"sha256": digest} for name, digest in sorted(files.items())},
        "params": decision.params,
        "metrics": decision.metrics,
        "trained_on": decision.trained_on,
        "decision": decision.to_json(),
        "libraries": library_versions(),
        "created_at": _now(),
    }


def write_release_dir(layout: DataLayout, decision: ReleaseDecision) -> Path:
    """Write model files then manifest.json into staging, fsync, and rename it into releases/<date>/<SYMBOL>.

    The caller holds the symbol lock.
    """
    if decision.model is None:
        raise ReleaseError(f"{decision.date}|{decision.symbol}: a released decision carries no model to write")
    _remove_stale_staging(layout, decision.symbol)
    staging = layout.release_staging_dir(decision.date, decision.symbol, f"{os.getpid()}-{os.urandom(4).hex()}")
    staging.mkdir(parents=True)
    try:
        written = [Path(p) for p in decision.model.save(staging)]
        if not written:
            raise ReleaseError(f"{decision.model.model_type}.save wrote no files")
        files = {p.name: sha256_file(p) for p in written}
        atomic_write_text(staging / MANIFEST, _dumps(build_manifest(decision, files, decision.model.model_type)))
        fsync_dir(staging)
        final = layout.release_dir(decision.date, decision.symbol)
        _install_dir(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final


def _summary_entry(decision: ReleaseDecision, current: str | None) -> dict:
    """The whole decision (without the model) plus which release is in service after it."""
    return {**decision.to_json(), "current_release": current}


def publish(layout: DataLayout, decision: ReleaseDecision) -> dict:
    """Carry out a decision: write + deploy the release when promoted, record it in summary/history.

    Order: release dir (complete, fsynced) -> current/<SYMBOL> swap -> best links -> history -> summary.
    """
    symbol, date = decision.symbol, decision.date
    with file_lock(layout, f"release-{symbol}"):
        previous = current_release_date(layout, symbol)
        if decision.released:
            write_release_dir(layout, decision)
            _point_current(layout, date, symbol)
        current = current_release_date(layout, symbol)
    if decision.released:
        refresh_best_links(layout)
        append_history(
            layout,
            {
                "event": "promote",
                "symbol": symbol,
                "release": date,
                "previous": previous,
                "model_type": decision.challenger_type,
                "select_metric": decision.select_metric,
                "score": decision.scores.get("challenger"),
                "reason": decision.reason,
            },
        )
    entry = _summary_entry(decision, current)
    update_summary(layout, date, symbol, entry)
    return entry


def load_decision(layout: DataLayout, date: dt.date | str, symbol: str) -> ReleaseDecision:
    """The latest decision recorded for a (date, symbol) in summary.json.

    If a crash came between the link swap and the summary update, the released manifest has it.
    """
    date = date if isinstance(date, str) else date.isoformat()
    entry = read_summary(layout, date).get("symbols", {}).get(symbol)
    if entry is not None:
        return ReleaseDecision.from_json(entry)
    release_dir = layout.release_dir(date, symbol)
    if (release_dir / MANIFEST).exists():
        return ReleaseDecision.from_json(read_manifest(release_dir)["decision"])
    raise ReleaseError(f"no release decision recorded for {date}|{symbol}: materialize best_release for it first")


# ----------------------------------------------------------------------------- listing and rollback


@dataclass(frozen=True)
class ReleaseInfo:
    date: str
    symbol: str
    model_type: str | None
    select_metric: str | None
    score: float | None
    champion_score: float | None
    baseline_score: float | None
    current: bool
    error: str | None = None  # set when the manifest cannot be read


def release_dates(layout: DataLayout, symbol: str) -> list[str]:
    """Dates that have a release directory for the symbol, oldest first."""
    root = layout.releases_dir
    if not root.is_dir():
        return []
    return sorted(
        d.name for d in root.iterdir() if d.is_dir() and (layout.release_dir(d.name, symbol) / MANIFEST).exists()
    )


def released_symbols(layout: DataLayout) -> list[str]:
    root = layout.releases_dir
    if not root.is_dir():
        return []
    names = {s.name for d in root.iterdir() if d.is_dir() for s in d.iterdir() if s.is_dir() and not s.name.startswith(".")}
    return sorted(names | set(_linked_symbols(layout)))


def list_releases(layout: DataLayout, symbol: str | None = None) -> list[ReleaseInfo]:
    """Every release (oldest first per symbol) with its scores; `current` marks the one in service."""
    rows = []
    for sym in [symbol] if symbol else released_symbols(layout):
        current = current_release_date(layout, sym)
        for date in release_dates(layout, sym):
            try:
                manifest = read_manifest(layout.release_dir(date, sym))
            except ReleaseError as exc:
                rows.append(ReleaseInfo(date, sym, None, None, None, None, None, date == current, str(exc)))
                continue
            scores = manifest.get("decision", {}).get("scores") or {}
            rows.append(
                ReleaseInfo(
                    date=date,
                    symbol=sym,
                    model_type=manifest["model_type"],
                    select_metric=manifest.get("select_metric"),
                    score=scores.get("challenger"),
                    champion_score=scores.get("champion"),
                    baseline_score=scores.get("best_baseline"),
                    current=date == current,
                )
            )
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
            raise ReleaseError(f"{symbol} has no release in service, so there is no 'previous': give --to YYYY-MM-DD")
        older = [d for d in dates if d < current]
        if not older:
            raise ReleaseError(f"{symbol}: the release in service ({current}) is the oldest; nothing to roll back to")
        return older[-1]
    try:
        date = dt.date.fromisoformat(to).isoformat()
    except ValueError:
        raise ReleaseError(f"--to {to!r} is neither 'previous' nor a YYYY-MM-DD date") from None
    if date not in dates:
        raise ReleaseError(f"{symbol} has no release dated {date} (releases: {', '.join(dates)})")
    return date


def rollback(layout: DataLayout, symbol: str, to: str) -> dict:
    """Point current/<SYMBOL> at an earlier (or later) release after verifying its hashes; log it."""
    with file_lock(layout, f"release-{symbol}"):
        target = resolve_target(layout, symbol, to)
        manifest = verify_release(layout.release_dir(target, symbol))
        previous = current_release_date(layout, symbol)
        _point_current(layout, target, symbol)
    refresh_best_links(layout)
    event = {
        "event": "rollback",
        "symbol": symbol,
        "release": target,
        "previous": previous,
        "model_type": manifest["model_type"],
        "requested": to,
    }
    append_history(layout, event)
    return event

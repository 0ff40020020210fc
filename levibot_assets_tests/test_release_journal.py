"""The release journal and what is in service: history written ahead of every change under the symbol
lock, repaired after a crash, torn tails, the champion re-check, best_* links that never dangle, file
modes per umask, damaged releases as listed, and SIGKILL at random instants with two writers."""
from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from levibot_assets.cli import main
from levibot_assets.core import object_store
from levibot_assets.core.atomic import append_line, atomic_write_bytes, read_link, resolve_link
from levibot_assets.core.layout import DataLayout
from levibot_assets.core.release.decision import NOTHING_IN_SERVICE
from levibot_assets.core.release.deploy import (
    current_release_date,
    in_service_id,
    list_releases,
    publish,
    read_history,
    read_summary,
    rollback,
)
from levibot_assets.core.release.store import ReleaseError
from levibot_assets_tests import release_fixtures as rf
from levibot_assets_tests.conftest import REPO_ROOT

SYMBOL = rf.SYMBOL
D0, D1, D2 = "2025-10-01", "2025-10-02", "2025-10-03"


@pytest.fixture
def layout(data_root) -> DataLayout:
    return DataLayout(data_root)


BOTH_STORES = pytest.mark.parametrize("data_root", ["local", "s3"], indirect=True)


def _publish(layout: DataLayout, date: str, model_type: str = "lgbm", text: str = "model", symbol: str = SYMBOL,
             score: float = 0.6, champion_id: str | None = None) -> dict:
    return publish(layout, rf.released_decision(date, symbol, rf.FileModel(model_type, text), score, champion_id))


def assert_history_matches_service(layout: DataLayout, symbols=(SYMBOL,), settled: bool = True) -> None:
    """Every line parses, each symbol's events chain (previous_id = the event before's release_id) and the
    last one is what is in service; unless `settled`, it may be an event whose writer died before the change."""
    text = layout.release_history.read_text() if layout.release_history.exists() else ""
    lines = text.split("\n")
    complete, tail = lines[:-1], lines[-1]
    assert not settled or tail == "", f"torn tail {tail!r}"
    assert len(read_history(layout)) == len(complete)  # every complete line parses
    for symbol in symbols:
        events = read_history(layout, symbol)
        ids = [NOTHING_IN_SERVICE] + [e["release_id"] for e in events]
        assert [e["previous_id"] for e in events] == ids[:-1], f"{symbol}: events out of order"
        in_service = in_service_id(layout, symbol)
        assert in_service == ids[-1] or (not settled and in_service == ids[-2]), (symbol, in_service, ids[-2:])


def assert_best_links_resolve(layout: DataLayout) -> None:
    for link in layout.root.glob("best_*"):
        target = read_link(link)
        assert resolve_link(link, target).is_file(), f"{link} -> {target} dangles"


# ------------------------------------------------------------------------- history written ahead, repaired


@BOTH_STORES
def test_events_record_every_change_in_order(layout):
    _publish(layout, D0)
    _publish(layout, D1)
    first_d1 = in_service_id(layout, SYMBOL)
    rollback(layout, SYMBOL, "previous")
    _publish(layout, D1, text="re-run")  # the same date again: another release
    events = read_history(layout, SYMBOL)
    assert [(e["event"], e["release"], e["previous"]) for e in events] == [
        ("promote", D0, None), ("promote", D1, D0), ("rollback", D0, D1), ("promote", D1, D0)
    ]
    assert events[-1]["release_id"] != first_d1 and events[-1]["release_id"].startswith(f"{D1}@")
    assert_history_matches_service(layout)


@pytest.mark.parametrize("step", ["install_dir", "_point_current"])
def test_a_writer_stopped_after_its_event_is_repaired_by_the_next(layout, monkeypatch, step):
    from levibot_assets.core.release import deploy

    _publish(layout, D0)
    served = in_service_id(layout, SYMBOL)

    def die(*args):
        raise KeyboardInterrupt("killed")

    with monkeypatch.context() as patch:
        patch.setattr(deploy, step, die)
        with pytest.raises(KeyboardInterrupt):
            _publish(layout, D1)
    assert read_history(layout, SYMBOL)[-1]["release"] == D1  # recorded ahead, not carried out
    assert in_service_id(layout, SYMBOL) == served
    assert_history_matches_service(layout, settled=False)

    rollback(layout, SYMBOL, D0)  # the next writer, whatever it does, first records what is served
    repair, event = read_history(layout, SYMBOL)[-2:]
    assert (repair["event"], repair["release_id"], repair["previous"]) == ("repair", served, D1)
    assert event["event"] == "rollback" and event["previous_id"] == served
    assert_history_matches_service(layout)
    assert not list(layout.releases_dir.glob("*/.*staging*"))


def test_a_release_in_service_without_history_is_recorded(layout):
    _publish(layout, D0)
    layout.release_history.unlink()
    _publish(layout, D1)
    assert [e["event"] for e in read_history(layout)] == ["repair", "promote"]
    assert_history_matches_service(layout)


# ------------------------------------------------------------------------- torn tails


def test_a_torn_last_line_is_skipped_by_readers_and_cut_by_the_next_append(layout, caplog):
    _publish(layout, D0)
    with open(layout.release_history, "ab") as handle:
        handle.write(b'{"event": "promote", "symbol": "BTCUSDT", "rel')  # a writer killed mid-append
    with caplog.at_level(logging.WARNING, logger="levibot_assets.core.release.deploy"):
        assert len(read_history(layout)) == 1
    assert "line 2 is torn" in caplog.text
    _publish(layout, D1)
    assert [e["release"] for e in read_history(layout)] == [D0, D1]  # the new event was not glued on
    assert_history_matches_service(layout)


def test_append_line_cuts_only_the_unterminated_tail(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_bytes(b"one\n" + b"x" * 70_000)  # a fragment longer than one read block
    append_line(path, "two\n")
    assert path.read_text() == "one\ntwo\n"
    path.write_bytes(b"torn without any newline")
    append_line(path, "first\n")
    assert path.read_text() == "first\n"


# ------------------------------------------------------------------------- champion re-checked under the lock


def test_a_promotion_scored_against_a_replaced_champion_is_refused(layout):
    _publish(layout, D0)
    _publish(layout, D1)
    scored_against = in_service_id(layout, SYMBOL)
    rollback(layout, SYMBOL, "previous")  # another process, while the partition was being scored
    history = layout.release_history.read_bytes()
    with pytest.raises(ReleaseError, match=f"changed from {D1}@.* to {D0}@.* while this partition was scored.*re-run"):
        _publish(layout, D2, champion_id=scored_against)
    assert current_release_date(layout, SYMBOL) == D0
    assert not layout.release_dir(D2, SYMBOL).exists() and read_summary(layout, D2)["symbols"] == {}
    assert layout.release_history.read_bytes() == history
    _publish(layout, D2, champion_id=in_service_id(layout, SYMBOL))  # the re-run, scored against D0
    assert current_release_date(layout, SYMBOL) == D2
    assert_history_matches_service(layout)


def test_a_re_run_of_the_champions_date_counts_as_a_change(layout):
    _publish(layout, D0)
    scored_against = in_service_id(layout, SYMBOL)
    _publish(layout, D0, text="re-run of D0")  # same link target, another release
    with pytest.raises(ReleaseError, match="re-run it"):
        _publish(layout, D1, champion_id=scored_against)
    with pytest.raises(ReleaseError, match=f"changed from {NOTHING_IN_SERVICE} to"):
        _publish(layout, D1, champion_id=NOTHING_IN_SERVICE)


def test_the_asset_scores_the_champion_with_the_id_publish_checks(layout):
    from levibot_assets.assets.release import _champion_model
    from levibot_assets.resources.storage import StorageResource

    storage, logger = StorageResource(data_dir=str(layout.root)), logging.getLogger("test")
    assert _champion_model(storage, SYMBOL, logger) == (None, None)
    publish(layout, rf.released_decision(D0, SYMBOL, rf.lgbm()))
    model, champion = _champion_model(storage, SYMBOL, logger)
    assert model is not None and champion.release_id == in_service_id(layout, SYMBOL)
    (layout.release_dir(D0, SYMBOL) / "lgbm.txt").write_text("tampered")
    _, damaged = _champion_model(storage, SYMBOL, logger)
    assert "sha256" in damaged.error and damaged.release_id == in_service_id(layout, SYMBOL)


# ------------------------------------------------------------------------- best_* links


def _best(layout: DataLayout, model_type: str, suffix: str) -> tuple[str, str, str] | None:
    """(date, symbol, file name) of the release file best_<type><suffix> points at, None without a link."""
    link = layout.best_link(model_type, suffix)
    target = read_link(link)
    if target is None:
        return None
    parts = str(resolve_link(link, target)).removeprefix(f"{layout.root}/").split("/")
    assert parts[0] == "releases", parts
    return parts[1], parts[2], parts[-1]


@BOTH_STORES
def test_best_links_follow_re_releases_and_rollbacks_and_never_dangle(layout):
    _publish(layout, D0, "lgbm", score=0.6)
    _publish(layout, D0, "lgbm", symbol="ETHUSDT", score=0.7)
    assert _best(layout, "lgbm", ".txt") == (D0, "ETHUSDT", "lgbm.txt")
    if not layout.remote:  # a relative symlink, as a trading engine on the same disk follows it
        assert os.readlink(layout.best_link("lgbm", ".txt")) == f"releases/{D0}/ETHUSDT/lgbm.txt"
    _publish(layout, D0, "tft", symbol="ETHUSDT", score=0.9)  # re-release as another model type
    assert _best(layout, "lgbm", ".txt") == (D0, SYMBOL, "lgbm.txt")
    assert _best(layout, "tft", ".ckpt") == (D0, "ETHUSDT", "tft.ckpt")
    _publish(layout, D0, "tft", score=0.5)  # the last lgbm in service is replaced: no best lgbm
    assert _best(layout, "lgbm", ".txt") is None
    _publish(layout, D1, "lgbm", symbol="ETHUSDT")
    rollback(layout, "ETHUSDT", D0)
    assert _best(layout, "tft", ".ckpt") == (D0, "ETHUSDT", "tft.ckpt")
    assert _best(layout, "lgbm", ".txt") is None
    assert_best_links_resolve(layout)


def test_a_crash_while_a_linked_release_is_replaced_leaves_no_dangling_link(layout, monkeypatch):
    from levibot_assets.core.release import deploy

    _publish(layout, D0, "lgbm")

    def die(*args):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(deploy, "_point_current", die)  # after the directory was replaced
    with pytest.raises(KeyboardInterrupt):
        _publish(layout, D0, "tft")
    assert not (layout.release_dir(D0, SYMBOL) / "lgbm.txt").exists()
    assert not os.path.lexists(layout.best_link("lgbm", ".txt"))
    assert_best_links_resolve(layout)


# ------------------------------------------------------------------------- modes per umask


@contextlib.contextmanager
def _umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.parametrize("mask,file_mode,dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_written_files_get_the_mode_of_normal_files(layout, mask, file_mode, dir_mode):
    with _umask(mask):
        atomic_write_bytes(layout.root / "plain.bin", b"x")
        _publish(layout, D0)
    release_dir = layout.release_dir(D0, SYMBOL)
    files = [layout.root / "plain.bin", release_dir / "lgbm.txt", release_dir / "manifest.json",
             layout.release_summary(D0), layout.release_history]
    assert {f.name: oct(stat.S_IMODE(f.stat().st_mode)) for f in files} == {f.name: oct(file_mode) for f in files}
    assert oct(stat.S_IMODE(release_dir.stat().st_mode)) == oct(dir_mode)


# ------------------------------------------------------------------------- damaged releases as listed


def test_a_damaged_release_in_service_is_listed_damaged_and_not_in_service(layout, capsys):
    for date in (D0, D1, D2):
        _publish(layout, date)
    (layout.release_dir(D1, SYMBOL) / "lgbm.txt").write_text("tampered")
    (layout.release_dir(D2, SYMBOL) / "lgbm.txt").write_text("tampered")  # the one in service
    rows = {r.date: r for r in list_releases(layout, SYMBOL)}
    assert rows[D0].error is None and not rows[D0].current
    assert "does not match the sha256" in rows[D1].error and not rows[D1].current
    assert "does not match the sha256" in rows[D2].error and rows[D2].current and not rows[D2].in_service

    assert main(["releases", "--data-dir", str(layout.root)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith(f"  {SYMBOL}") and "DAMAGED" not in lines[1]
    assert lines[2].startswith(f"  {SYMBOL}") and "DAMAGED" in lines[2]
    assert lines[3].startswith(f"! {SYMBOL}") and "DAMAGED" in lines[3]
    assert "cannot load" in lines[4] and not any(line.startswith("*") for line in lines)


def test_a_link_to_a_missing_or_foreign_release_is_listed_as_current(layout):
    _publish(layout, D0)
    _publish(layout, D0, symbol="ETHUSDT")
    link = layout.current_link(SYMBOL)
    link.unlink()
    link.symlink_to(f"../releases/{D1}/{SYMBOL}")  # a directory that does not exist
    (row,) = [r for r in list_releases(layout, SYMBOL) if r.current]
    assert row.date == D1 and "manifest.json is missing" in row.error
    link.unlink()
    link.symlink_to(f"../releases/{D0}/ETHUSDT")
    rows = list_releases(layout, SYMBOL)
    assert [(r.date, r.current, r.error is None) for r in rows] == [(D0, True, False), (D0, False, True)]
    assert "not a release directory of BTCUSDT" in rows[0].error


# ------------------------------------------------------------------------- SIGKILL at random instants

# Imports once, then forks two writers per round that publish and roll back at random until killed.
WRITERS = """
    import itertools, os, random, sys, traceback
    from pathlib import Path
    from levibot_assets.core import object_store
    from levibot_assets.core.atomic import atomic_write_text
    from levibot_assets.core.layout import DataLayout
    from levibot_assets.core.release.decision import ReleaseDecision
    from levibot_assets.core.model_api import MODEL_FAMILIES
    from levibot_assets.core.release.deploy import in_service_id, publish, rollback
    from levibot_assets.core.release.store import ReleaseError

    class FileModel:
        def __init__(self, model_type, text):
            self.model_type, self.text = model_type, text

        def save(self, directory):
            return [atomic_write_text(Path(directory) / MODEL_FAMILIES[self.model_type].main_file, self.text)]

    def write(layout, seed):
        rng = random.Random(seed)
        for i in itertools.count():
            symbol, date = rng.choice(["BTCUSDT", "ETHUSDT"]), rng.choice(["2025-10-01", "2025-10-02", "2025-10-03"])
            try:
                if rng.random() < 0.35:
                    rollback(layout, symbol, rng.choice(["previous", date]))
                    continue
                model_type, champion = rng.choice(["lgbm", "tft"]), in_service_id(layout, symbol)
                model = FileModel(model_type, f"{seed} {i}")
                publish(layout, ReleaseDecision(date, symbol, True, "kill test", "auc", model_type,
                                                {"challenger": rng.random()}, champion_id=champion, model=model))
            except ReleaseError:
                pass  # nothing to roll back to, or the champion changed meanwhile

    layout = DataLayout(sys.argv[1])
    object_store.LEASE_S = float(sys.argv[2])  # a killed writer's lock lapses after this
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() == "reap":
            print(" ".join(str(os.waitpid(pid, 0)[1]) for pid in pids), flush=True)
            continue
        pids = []
        for seed in line.split():
            pid = os.fork()
            if pid == 0:
                try:
                    write(layout, int(seed))
                except BaseException:
                    traceback.print_exc()
                finally:
                    os._exit(3)
            pids.append(pid)
        print(" ".join(map(str, pids)), flush=True)
"""


def _observe(layout: DataLayout, seen: dict[str, list[str]], stop: threading.Event) -> None:
    """Record every distinct state of current/<SYMBOL> this thread catches, in order (on S3 at a pace
    that leaves the single local server to the writers), with one last look once told to stop."""
    while True:
        stopping = stop.wait(0.05 if layout.remote else 0)
        for symbol, states in seen.items():
            state = in_service_id(layout, symbol)
            if state != NOTHING_IN_SERVICE and (not states or states[-1] != state):
                states.append(state)
        if stopping:
            return


def _is_subsequence(observed: list[str], recorded: list[str]) -> bool:
    remaining = iter(recorded)
    return all(state in remaining for state in observed)


# rounds, and the window each writer lives in before its SIGKILL (s). A publish is ~1 s of requests
# to the local S3 server, and a writer killed inside a lock holds it until its lease (3 s) lapses.
KILL_ROUNDS = {"local": (18, 0.02, 0.25), "s3": (7, 0.3, 4.0)}
TEST_LEASE_S = 3.0


@pytest.mark.parametrize("data_root", ["local", pytest.param("s3", marks=pytest.mark.slow)], indirect=True)
def test_sigkill_at_random_instants_never_loses_or_reorders_history(layout, monkeypatch):
    rounds, earliest_s, latest_s = KILL_ROUNDS["s3" if layout.remote else "local"]
    monkeypatch.setattr(object_store, "LEASE_S", TEST_LEASE_S)  # for the writer that takes over at the end
    rng = random.Random(11)
    symbols = ("BTCUSDT", "ETHUSDT")
    seen: dict[str, list[str]] = {s: [] for s in symbols}
    stop = threading.Event()
    observer = threading.Thread(target=_observe, args=(layout, seen, stop), daemon=True)
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(WRITERS), str(layout.root), str(TEST_LEASE_S)], env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True,
    )
    observer.start()
    try:
        assert proc.stdout.readline().strip() == "ready"
        for _ in range(rounds):
            proc.stdin.write(f"{rng.randrange(10**6)} {rng.randrange(10**6)}\n")
            proc.stdin.flush()
            pids = [int(p) for p in proc.stdout.readline().split()]
            for pid in pids:  # two writers at once, each killed at its own instant
                time.sleep(rng.uniform(earliest_s, latest_s))
                os.kill(pid, signal.SIGKILL)
            proc.stdin.write("reap\n")
            proc.stdin.flush()
            statuses = [int(s) for s in proc.stdout.readline().split()]
            assert all(os.WIFSIGNALED(s) and os.WTERMSIG(s) == signal.SIGKILL for s in statuses), statuses
            assert_history_matches_service(layout, symbols, settled=False)
            assert_best_links_resolve(layout)
        proc.kill()
        proc.wait(timeout=30)
        assert sum(e["event"] == "promote" for e in read_history(layout)) >= 3  # the writers got somewhere
        for symbol in symbols:  # a fresh writer takes over each symbol: repaired, then its own event
            _publish(layout, D0, symbol=symbol)
    finally:  # the observer's last look sees the final state, so no symbol's observations are empty
        stop.set()
        proc.kill()
        proc.wait(timeout=30)
        observer.join(timeout=30)
    assert_history_matches_service(layout, symbols)
    assert_best_links_resolve(layout)
    assert not list(layout.releases_dir.glob("*/.*staging*"))
    for symbol in symbols:
        recorded = [e["release_id"] for e in read_history(layout, symbol)]
        observed = [s for s in seen[symbol] if not s.endswith("@unreadable")]
        assert observed and _is_subsequence(observed, recorded), symbol

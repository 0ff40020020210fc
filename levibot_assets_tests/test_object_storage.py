"""The data directory on an object store (s3:// on a local moto server): the nightly graph writes
the same files as on local disk, current/<SYMBOL> is a pointer object that rollback swaps and the
serving loader follows, the CLI lists and rolls back there, and unusable URLs are refused by name.

The SIGKILL test of the release journal runs on S3 too (test_release_journal.py, `[s3]`)."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg
import pytest

from levibot_assets_tests.graph import features, raw_ohlcv
from levibot_assets_tests.graph import lgbm_model, tft_model
from levibot_assets_tests.graph import best_release
from levibot_assets.cli import main
from levibot_assets.core import object_store
from levibot_assets.core.atomic import append_line, atomic_write_bytes, read_link
from levibot_assets.core.layout import DataLayout
from levibot_assets.core.release.deploy import current_release_date, file_lock, list_releases, read_history
from levibot_assets.core.release.store import release_file, verify_release
from levibot_assets.core.tables import read_table
from levibot_assets.definitions import build_resources
from levibot_assets.partitions import partition_key
from levibot_assets.serving import load_current
from levibot_assets.settings import SettingsError, Settings
from levibot_assets_tests import release_fixtures as rf
from levibot_assets_tests.stored_files import parquet_files

NIGHT = dt.date(2023, 4, 5)
DATA_DAYS = [NIGHT - dt.timedelta(days=k) for k in range(3, -1, -1)]  # the 3-day window and its warm-up day


def _materialize(settings, dates, selection, instance) -> None:
    assets = [raw_ohlcv, features, lgbm_model, tft_model, best_release]
    for date in dates:
        result = dg.materialize(assets, resources=build_resources(settings), partition_key=partition_key(date, rf.SYMBOL),
                                instance=instance, selection=selection)
        assert result.success


@pytest.mark.slow
def test_the_nightly_graph_runs_on_s3_and_is_served_from_the_pointer(levibot_env, s3_data_dir, tmp_path, capsys):
    local = levibot_env(DATA_DIR=tmp_path / "local", TRAIN_DAYS=3, OPTUNA_TRIALS=2, THREADS=1, TFT_MAX_MINUTES=0.05)
    with dg.instance_for_test() as instance:
        _materialize(local, DATA_DAYS, [raw_ohlcv, features], instance)
    settings = levibot_env(DATA_DIR=s3_data_dir, TRAIN_DAYS=3, OPTUNA_TRIALS=2, THREADS=1, TFT_MAX_MINUTES=0.05)
    layout = DataLayout(settings.data_dir)
    assert layout.remote and not Path("s3:").exists()  # nothing written to a local directory named like the URL
    with dg.instance_for_test() as instance:
        _materialize(settings, DATA_DAYS, [raw_ohlcv, features], instance)
        raw_and_features = parquet_files(layout.root)
        _materialize(settings, [NIGHT], [lgbm_model, tft_model, best_release], instance)

    # the same bytes as on local disk, at the same keys
    local_files = parquet_files(DataLayout(local.data_dir).root)
    assert raw_and_features == local_files and len(local_files) == 2 * len(DATA_DAYS)
    assert len(read_table(layout, "features", NIGHT, rf.SYMBOL)) > 1000
    assert (layout.model_dir(NIGHT, rf.SYMBOL) / "lgbm_metrics.json").exists()
    assert layout.predictions(NIGHT, rf.SYMBOL).exists()

    # a release is in service through a pointer object holding the relative target
    served_date = current_release_date(layout, rf.SYMBOL)
    assert served_date is not None, "no release promoted on S3 (first release only needs to beat the baselines)"
    assert read_link(layout.current_link(rf.SYMBOL)) == f"../releases/{served_date}/{rf.SYMBOL}"
    manifest, _ = verify_release(layout.release_dir(served_date, rf.SYMBOL))
    model = load_current(rf.SYMBOL, settings.data_dir, refresh_s=0)
    assert model.release_date == served_date and model.manifest == manifest
    frame = read_table(layout, "features", NIGHT, rf.SYMBOL).tail(50)
    assert model.predict_proba(frame).shape == (50,)

    # a second release makes rollback possible; the loader follows the swapped pointer
    rf_model = rf.lgbm(rounds=12)
    from levibot_assets.core.release.deploy import in_service_id, publish

    publish(layout, rf.released_decision("2023-04-06", rf.SYMBOL, rf_model, 0.99, in_service_id(layout, rf.SYMBOL)))
    assert model.predict_proba(frame).shape == (50,) and model.release_date == "2023-04-06"
    assert main(["rollback", "--symbol", rf.SYMBOL, "--to", served_date, "--data-dir", settings.data_dir]) == 0
    assert read_link(layout.current_link(rf.SYMBOL)) == f"../releases/{served_date}/{rf.SYMBOL}"
    model.predict_proba(frame)
    assert model.release_date == served_date and model.reloads == 3
    assert [e["event"] for e in read_history(layout, rf.SYMBOL)][-2:] == ["promote", "rollback"]
    assert main(["releases", "--symbol", rf.SYMBOL, "--data-dir", settings.data_dir]) == 0
    listed = capsys.readouterr().out
    assert any(line.split()[:3] == ["*", rf.SYMBOL, served_date] for line in listed.splitlines()), listed
    assert all(row.error is None for row in list_releases(layout, rf.SYMBOL))


def test_a_re_release_of_the_date_in_service_never_overwrites_a_file_its_manifest_lists(s3_data_dir):
    layout = DataLayout(s3_data_dir)
    from levibot_assets.core.release.deploy import in_service_id, publish

    publish(layout, rf.released_decision("2025-10-01", rf.SYMBOL, rf.FileModel("lgbm", "first"), 0.6))
    release = layout.release_dir("2025-10-01", rf.SYMBOL)
    first = {str(p): p.read_bytes() for p in release.rglob("*") if p.is_file()}
    publish(layout, rf.released_decision("2025-10-01", rf.SYMBOL, rf.FileModel("lgbm", "second"), 0.7,
                                         in_service_id(layout, rf.SYMBOL)))
    after = {str(p): p.read_bytes() for p in release.rglob("*") if p.is_file()}
    assert all(after[key] == data for key, data in first.items() if not key.endswith("manifest.json"))
    manifest, _ = verify_release(release)  # the manifest PUT switched it to the second model's file
    assert release_file(release, "lgbm.txt", manifest["files"]["lgbm.txt"]["sha256"]).read_text() == "second"


def test_appends_from_concurrent_writers_are_never_lost(s3_data_dir):
    from concurrent.futures import ThreadPoolExecutor

    path = DataLayout(s3_data_dir).alerts_file
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: append_line(path, f"{i}\n"), range(24)))
    assert sorted(int(line) for line in path.read_text().splitlines()) == list(range(24))


def test_a_read_racing_a_rewrite_gets_one_whole_version_not_an_error(s3_data_dir):
    """s3fs's file objects check the ETag between ranged reads and fail if it changed; reads here are one GET."""
    import threading

    from levibot_assets.core.atomic import read_bytes

    path = DataLayout(s3_data_dir).release_history
    versions = [bytes([65 + k]) * (1000 + 997 * k) for k in range(8)]
    atomic_write_bytes(path, versions[0])
    stop = threading.Event()

    def rewrite():
        k = 0
        while not stop.is_set():
            k += 1
            atomic_write_bytes(path, versions[k % len(versions)])

    writer = threading.Thread(target=rewrite)
    writer.start()
    try:
        seen = [read_bytes(path) for _ in range(150)]
    finally:
        stop.set()
        writer.join()
    assert all(data in versions for data in seen)
    assert len(set(seen)) > 1  # the writer did rewrite it meanwhile


def test_a_lock_left_by_a_dead_holder_lapses_and_a_live_one_waits(s3_data_dir, monkeypatch):
    import threading
    import time

    layout = DataLayout(s3_data_dir)
    atomic_write_bytes(layout.lock_file("release-BTCUSDT"), b'{"holder": "killed"}')  # as a SIGKILLed holder leaves it
    monkeypatch.setattr(object_store, "LEASE_S", 1.0)
    started = time.monotonic()
    with file_lock(layout, "release-BTCUSDT"):
        assert time.monotonic() - started >= 1.0
        inside = []
        waiter = threading.Thread(target=lambda: file_lock(layout, "release-BTCUSDT").__enter__() or inside.append(1))
        waiter.start()
        waiter.join(0.5)
        assert not inside, "a second writer entered while the lock was held"
    waiter.join(10)
    assert inside == [1]


def test_a_missing_bucket_fails_at_once_naming_the_object_not_as_a_lost_race(s3_data_dir):
    """NoSuchBucket is a 404 like an object deleted by another writer, but it must not be retried."""
    import time

    layout = DataLayout("s3://levibot-no-such-bucket/data")
    started = time.monotonic()
    for write in (lambda: append_line(layout.alerts_file, "alert\n"),
                  lambda: atomic_write_bytes(layout.table("raw_ohlcv", "2025-10-01", rf.SYMBOL), b"x"),
                  lambda: file_lock(layout, "release-BTCUSDT").__enter__()):
        with pytest.raises(object_store.ObjectStoreError, match="levibot-no-such-bucket/data/.*bucket does not exist"):
            write()
    assert time.monotonic() - started < 10  # no retries, no waiting for a lease


@pytest.mark.parametrize("url", ["gs://bucket/data", "ftp://host/data"])
def test_an_unsupported_data_directory_url_is_refused_by_name(url, monkeypatch, capsys):
    with pytest.raises(object_store.ObjectStoreError, match="not supported"):
        DataLayout(url)
    monkeypatch.setenv("LEVIBOT_DATA_DIR", url)
    with pytest.raises(SettingsError, match="LEVIBOT_DATA_DIR"):
        Settings.from_env()
    assert main(["releases", "--data-dir", url]) == 2
    assert "levibot: error:" in capsys.readouterr().err


def test_an_s3_data_directory_without_the_s3_extra_is_refused_at_load(monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "s3fs" else real_find_spec(name, *a))
    monkeypatch.setenv("LEVIBOT_DATA_DIR", "s3://bucket/data")
    with pytest.raises(SettingsError, match=r"LEVIBOT_DATA_DIR='s3://bucket/data' needs s3fs: pip install 'levibot_assets\[s3\]'"):
        Settings.from_env()


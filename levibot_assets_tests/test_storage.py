"""Atomic writes and symlink swaps, checksums of stored tables, and the model store's check that model
files and metrics go together."""
import datetime as dt
import os
import random
import signal
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from levibot_assets.core import atomic, integrity
from levibot_assets.core.atomic import atomic_symlink, atomic_write_bytes, read_bytes
from levibot_assets.core.dataset import load_feature_window
from levibot_assets.core.features import compute_features
from levibot_assets.core.integrity import DamagedFile
from levibot_assets.core.layout import DataLayout, checksum_file
from levibot_assets.core.predictions import COLUMNS, read_predictions, write_predictions
from levibot_assets.core.sources.synthetic import synthetic_day
from levibot_assets.core.tables import atomic_write_parquet, read_table, write_table


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    path = tmp_path / "a" / "f.bin"
    atomic_write_bytes(path, b"one")
    atomic_write_bytes(path, b"two")
    assert path.read_bytes() == b"two"
    assert sorted(p.name for p in path.parent.iterdir()) == ["f.bin"]


def test_failed_write_keeps_old_file(tmp_path):
    path = tmp_path / "f.parquet"
    old = synthetic_day("BTCUSDT", dt.date(2025, 10, 13))
    atomic_write_parquet(path, old)
    with pytest.raises(Exception):
        atomic_write_parquet(path, pd.DataFrame({"x": [object()]}))  # unserialisable
    pd.testing.assert_frame_equal(pd.read_parquet(path), old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.parquet", "f.parquet.sha256"]


def test_kill_mid_write_leaves_old_file_intact(tmp_path):
    """SIGKILL a writer that is rewriting a table in a loop: the file always reads back whole and its
    checksum always accepts it (a kill between the checksum file and the data file included)."""
    layout = DataLayout(tmp_path)
    write_table(layout, "raw_ohlcv", "2025-10-13", "BTCUSDT", synthetic_day("BTCUSDT", dt.date(2025, 10, 13)))
    script = textwrap.dedent(f"""
        import datetime as dt, sys
        from levibot_assets.core.layout import DataLayout
        from levibot_assets.core.tables import write_table
        from levibot_assets.core.sources.synthetic import synthetic_day
        frames = [synthetic_day("BTCUSDT", dt.date(2025, 10, d)) for d in (13, 14)]
        layout = DataLayout({str(tmp_path)!r})
        print("ready", flush=True)
        i = 0
        while True:
            write_table(layout, "raw_ohlcv", "2025-10-13", "BTCUSDT", frames[i % 2]); i += 1
    """)
    rng = random.Random(7)
    for _ in range(6):
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
        assert proc.stdout.readline().strip() == b"ready"
        import time
        time.sleep(rng.uniform(0.05, 0.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        df = read_table(layout, "raw_ohlcv", "2025-10-13", "BTCUSDT")
        assert len(df) == 1440 and df["timestamp"].is_monotonic_increasing


def test_atomic_symlink_swap(tmp_path):
    (tmp_path / "r1").mkdir()
    (tmp_path / "r2").mkdir()
    link = tmp_path / "current" / "BTCUSDT"
    atomic_symlink("../r1", link)
    atomic_symlink("../r2", link)
    assert os.readlink(link) == "../r2" and link.resolve() == (tmp_path / "r2").resolve()
    assert sorted(p.name for p in link.parent.iterdir()) == ["BTCUSDT"]


def test_layout_paths(tmp_path):
    layout = DataLayout(tmp_path)
    assert layout.table("raw_ohlcv", dt.date(2025, 10, 13), "BTCUSDT") == tmp_path / "raw_ohlcv/2025-10-13/BTCUSDT.parquet"
    assert layout.model_dir("2025-10-13", "ETHUSDT") == tmp_path / "models/2025-10-13/ETHUSDT"
    assert layout.current_link("SOLUSDT") == tmp_path / "current/SOLUSDT"


@pytest.mark.parametrize("data_root", ["local", "s3"], indirect=True)
def test_a_model_file_without_its_metrics_is_refused_not_paired_with_the_old_metrics(data_root, monkeypatch):
    """A run killed after writing a new model file but before its metrics must not pass for complete."""
    from levibot_assets.core import model_store
    from levibot_assets.core.model_api import TrainedModel
    from levibot_assets.core.tables import MissingPartition
    from levibot_assets_tests import release_fixtures as rf

    layout = DataLayout(data_root)
    old, new = rf.lgbm(rounds=5), rf.lgbm(rounds=15)
    model_store.save_trained_model(layout, "2025-10-04", "BTCUSDT", TrainedModel(old, {"auc": 0.51}))
    loaded = model_store.load_trained_model(layout, "lgbm", "2025-10-04", "BTCUSDT")
    assert loaded.metrics == {"auc": 0.51} and loaded.model.booster.model_to_string() == old.booster.model_to_string()

    def killed(path, text):
        raise KeyboardInterrupt("killed before the metrics were written")

    monkeypatch.setattr(model_store, "atomic_write_text", killed)
    with pytest.raises(KeyboardInterrupt):
        model_store.save_trained_model(layout, "2025-10-04", "BTCUSDT", TrainedModel(new, {"auc": 0.6}))
    monkeypatch.undo()
    with pytest.raises(MissingPartition, match=r"lgbm.txt is not the model lgbm_metrics.json describes .*materialize "
                                               r"lgbm_model for 2025-10-04\|BTCUSDT again"):
        model_store.load_trained_model(layout, "lgbm", "2025-10-04", "BTCUSDT")
    model_store.save_trained_model(layout, "2025-10-04", "BTCUSDT", TrainedModel(new, {"auc": 0.6}))  # the re-run
    loaded = model_store.load_trained_model(layout, "lgbm", "2025-10-04", "BTCUSDT")
    assert loaded.metrics == {"auc": 0.6} and loaded.model.booster.model_to_string() == new.booster.model_to_string()


def _stored_files(layout: DataLayout) -> dict:
    """One stored file of each checksummed kind -> how the pipeline reads it back."""
    day = dt.date(2025, 10, 13)
    bars = synthetic_day("BTCUSDT", day)
    write_table(layout, "raw_ohlcv", day, "BTCUSDT", bars)
    write_table(layout, "features", day, "BTCUSDT", compute_features(bars, day, 15))
    predictions = pd.DataFrame({"timestamp": bars["timestamp"], "model": "lgbm", "role": "candidate", "p_up": 0.5,
                                "label": 1.0, "scored": True, "release": None})[list(COLUMNS)]
    write_predictions(layout, day, "BTCUSDT", predictions)
    return {
        (layout.table("raw_ohlcv", day, "BTCUSDT"), "raw_ohlcv"): lambda: read_table(layout, "raw_ohlcv", day, "BTCUSDT"),
        (layout.table("features", day, "BTCUSDT"), "features"): lambda: read_table(layout, "features", day, "BTCUSDT"),
        (layout.predictions(day, "BTCUSDT"), "best_release"): lambda: read_predictions(layout, day, "BTCUSDT"),
    }


def _flip(path, rng: random.Random) -> bytes:
    """Flip one random bit of the stored file in place (not through the writer); returns the original bytes."""
    data = read_bytes(path)
    damaged = bytearray(data)
    bit = rng.randrange(len(data) * 8)
    damaged[bit // 8] ^= 1 << (bit % 8)
    (atomic.object_store.put(path, bytes(damaged)) if atomic.object_store.is_remote(path) else path.write_bytes(damaged))
    return data


def test_every_single_bit_flip_in_a_stored_table_is_refused_naming_the_file_and_partition(tmp_path):
    """300 random one-bit flips over raw_ohlcv, features and predictions files: each read is refused,
    naming the file and the partition to materialize again; the restored file reads again."""
    layout = DataLayout(tmp_path)
    readers = _stored_files(layout)
    rng = random.Random(20251013)
    refused = 0
    for n in range(300):
        (path, producer), read = list(readers.items())[n % 3]
        original = _flip(path, rng)
        try:
            read()
        except DamagedFile as exc:
            refused += str(path) in str(exc) and f"materialize {producer} for 2025-10-13|BTCUSDT again" in str(exc)
        path.write_bytes(original)
    assert refused == 300
    for read in readers.values():
        read()


@pytest.mark.parametrize("data_root", ["local", "s3"], indirect=True)
def test_a_writer_killed_between_checksum_and_file_leaves_the_old_file_readable(data_root, monkeypatch):
    """The checksum file goes first and still lists the replaced file: a kill in between blocks nothing,
    and a damaged file is refused on an object store too."""
    layout = DataLayout(data_root)
    day = dt.date(2025, 10, 13)
    old, new = synthetic_day("BTCUSDT", day), synthetic_day("BTCUSDT", day + dt.timedelta(days=1))
    write_table(layout, "raw_ohlcv", day, "BTCUSDT", old)
    path = layout.table("raw_ohlcv", day, "BTCUSDT")
    plain_write = integrity.atomic_write_bytes

    def killed(target, data):
        if target == path:
            raise KeyboardInterrupt("killed between the checksum file and the data file")
        return plain_write(target, data)

    for _ in range(2):  # two kills in a row
        monkeypatch.setattr(integrity, "atomic_write_bytes", killed)
        with pytest.raises(KeyboardInterrupt):
            write_table(layout, "raw_ohlcv", day, "BTCUSDT", new)
        monkeypatch.undo()
        pd.testing.assert_frame_equal(read_table(layout, "raw_ohlcv", day, "BTCUSDT"), old)
    write_table(layout, "raw_ohlcv", day, "BTCUSDT", new)
    pd.testing.assert_frame_equal(read_table(layout, "raw_ohlcv", day, "BTCUSDT"), new)
    _flip(path, random.Random(1))
    with pytest.raises(DamagedFile, match=r"raw_ohlcv/2025-10-13/BTCUSDT.parquet is damaged.*"
                                          r"materialize raw_ohlcv for 2025-10-13\|BTCUSDT again"):
        read_table(layout, "raw_ohlcv", day, "BTCUSDT")
    write_table(layout, "raw_ohlcv", day, "BTCUSDT", old)  # re-materializing repairs it
    pd.testing.assert_frame_equal(read_table(layout, "raw_ohlcv", day, "BTCUSDT"), old)


def test_a_table_written_before_checksums_still_reads(tmp_path):
    layout = DataLayout(tmp_path)
    bars = synthetic_day("BTCUSDT", dt.date(2025, 10, 13))
    path = write_table(layout, "raw_ohlcv", "2025-10-13", "BTCUSDT", bars)
    checksum_file(path).unlink()
    pd.testing.assert_frame_equal(read_table(layout, "raw_ohlcv", "2025-10-13", "BTCUSDT"), bars)


def test_a_damaged_features_day_never_reaches_training(tmp_path):
    """The model's window read refuses the damaged day instead of training on it or leaving it out."""
    from levibot_assets_tests import release_fixtures as rf

    layout = DataLayout(tmp_path)
    for day, frame in rf.feature_window(days=3).items():
        write_table(layout, "features", day, rf.SYMBOL, frame)
    damaged = layout.table("features", rf.TEST_DATE - dt.timedelta(days=1), rf.SYMBOL)
    _flip(damaged, random.Random(3))
    with pytest.raises(DamagedFile, match=f"{damaged}.*materialize features for 2025-10-03\\|BTCUSDT again"):
        load_feature_window(layout, rf.SYMBOL, rf.TEST_DATE, 3, rf.HORIZON)

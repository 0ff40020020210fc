"""Atomic writes and symlink swaps, and the model store's check that model files and metrics go together."""
import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from levibot_assets.core.atomic import atomic_symlink, atomic_write_bytes, atomic_write_parquet
from levibot_assets.core.layout import DataLayout
from levibot_assets.core.sources.synthetic import synthetic_day


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
    assert [p.name for p in tmp_path.iterdir()] == ["f.parquet"]


def test_kill_mid_write_leaves_old_file_intact(tmp_path):
    """SIGKILL a writer that is rewriting the file in a loop: the file always reads back whole."""
    path = tmp_path / "raw.parquet"
    atomic_write_parquet(path, synthetic_day("BTCUSDT", dt.date(2025, 10, 13)))
    script = textwrap.dedent(f"""
        import datetime as dt, sys
        from levibot_assets.core.atomic import atomic_write_parquet
        from levibot_assets.core.sources.synthetic import synthetic_day
        frames = [synthetic_day("BTCUSDT", dt.date(2025, 10, d)) for d in (13, 14)]
        print("ready", flush=True)
        i = 0
        while True:
            atomic_write_parquet({str(path)!r}, frames[i % 2]); i += 1
    """)
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
        assert proc.stdout.readline().strip() == b"ready"
        import time
        time.sleep(0.3)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        df = pd.read_parquet(path)
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

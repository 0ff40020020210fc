"""`levibot materialize`: partitions run in date order into the persistent DAGSTER_HOME instance."""
import datetime as dt
import errno
import os
import shutil

import dagster as dg
import pytest

from levibot_assets.cli import main
from levibot_assets.core import atomic
from levibot_assets.core.layout import DataLayout
from levibot_assets_tests.conftest import REPO_ROOT


def test_materialize_records_runs_in_dagster_home(levibot_env, tmp_path, monkeypatch, capsys):
    settings = levibot_env()
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    code = main(["materialize", "--start", "2025-10-12", "--end", "2025-10-13", "--symbols", "ETHUSDT",
                 "--select", "features,raw_ohlcv"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "materializing raw_ohlcv, features for 2 day(s) 2025-10-12..2025-10-13 x ETHUSDT" in out
    assert "ETHUSDT 2025-10-12..2025-10-13: ok" in out and "1 of 1 runs succeeded" in out
    layout = DataLayout(settings.data_dir)
    assert layout.table("features", "2025-10-13", "ETHUSDT").exists()
    with dg.DagsterInstance.get() as instance:  # the run is kept, so the UI shows it
        (run,) = instance.get_runs()  # one range run for the symbol
        materialized = {str(k) for k in instance.get_materialized_partitions(dg.AssetKey("features"))}
    assert (run.tags["dagster/asset_partition_range_start"], run.tags["dagster/asset_partition_range_end"]) == (
        "2025-10-12|ETHUSDT", "2025-10-13|ETHUSDT")
    assert materialized == {"2025-10-12|ETHUSDT", "2025-10-13|ETHUSDT"}


def test_materialize_refuses_bad_ranges_in_one_line(levibot_env, capsys):
    levibot_env()
    assert main(["materialize", "--start", "2025-10-13", "--end", "2025-10-12"]) == 2
    assert capsys.readouterr().err.strip().endswith("end date 2025-10-12 is before start date 2025-10-13")
    assert main(["materialize", "--start", "2023-02-01", "--end", "2023-02-02"]) == 2
    assert "before the first partition 2023-03-01 (LEVIBOT_START_DATE)" in capsys.readouterr().err
    assert main(["materialize", "--start", "2099-01-01", "--end", "2099-01-02"]) == 2
    assert "after the last complete UTC day" in capsys.readouterr().err
    assert main(["materialize", "--days", "0"]) == 2
    assert "give at least 1 day" in capsys.readouterr().err


def test_materialize_refuses_unknown_assets_and_symbols(levibot_env, capsys):
    levibot_env()
    assert main(["materialize", "--days", "1", "--select", "prices"]) == 2
    assert "unknown assets ['prices']" in capsys.readouterr().err
    assert main(["materialize", "--days", "1", "--symbols", "XRPUSDT"]) == 2
    assert "not partitions" in capsys.readouterr().err


def _home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


def test_an_os_error_of_the_data_directory_is_named_in_the_run_summary(levibot_env, tmp_path, monkeypatch, capsys):
    """A data directory that cannot be written (here: a file where a directory must be) fails each
    partition with the OS error and its path, not Dagster's "Error occurred while executing op"."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a directory")
    levibot_env(data_dir=blocker / "data")
    _home(tmp_path, monkeypatch)
    assert main(["materialize", "--start", "2025-10-13", "--end", "2025-10-13", "--symbols", "ETHUSDT",
                 "--select", "raw_ohlcv"]) == 1
    out = capsys.readouterr().out
    summary = out[out.index("ETHUSDT 2025-10-13..2025-10-13: FAILED"):]
    assert f"- 2025-10-13|ETHUSDT: not stored, NotADirectoryError: [Errno 20] Not a directory: '{blocker}" in summary
    assert "Error occurred while executing op" not in summary and "0 of 1 runs succeeded" in summary


def test_a_full_disk_names_the_file_that_could_not_be_written(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic.os, "fsync", full)
    with pytest.raises(OSError, match=rf"No space left on device: '{tmp_path / 'f.bin'}'"):
        atomic.atomic_write_bytes(tmp_path / "f.bin", b"x")
    assert list(tmp_path.iterdir()) == []  # no temp file left behind


def test_a_reversed_partition_range_fails_naming_it_instead_of_running_nothing(levibot_env, tmp_path, monkeypatch):
    """`dagster asset materialize --partition-range B...A` with B after A: Dagster runs the steps with
    no partition, which used to succeed writing nothing."""
    from levibot_assets.definitions import build_resources
    from levibot_assets_tests.graph import ASSETS
    from levibot_assets.materialize import materialize_ranges

    settings = levibot_env()
    defs = dg.Definitions(assets=ASSETS, resources=build_resources(settings))
    with dg.instance_for_test() as instance:
        (run,) = materialize_ranges(defs, dt.date(2025, 10, 13), dt.date(2025, 10, 11), ["ETHUSDT"], ["raw_ohlcv"], instance)
    assert not run.success
    assert ("the run holds no partition of raw_ohlcv: its range 2025-10-13|ETHUSDT...2025-10-11|ETHUSDT ends before "
            "it starts") in run.failure
    assert not (DataLayout(settings.data_dir).root / "raw_ohlcv").exists()

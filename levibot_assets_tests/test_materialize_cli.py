"""`levibot materialize`: partitions run in date order into the persistent DAGSTER_HOME instance."""
import shutil

import dagster as dg

from levibot_assets.cli import main
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

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
    assert "2 of 2 runs succeeded" in out
    layout = DataLayout(settings.data_dir)
    assert layout.table("features", "2025-10-13", "ETHUSDT").exists()
    with dg.DagsterInstance.get() as instance:  # the runs are kept, so the UI shows them
        runs = instance.get_runs()
    assert len(runs) == 2 and {r.tags["dagster/partition"] for r in runs} == {"2025-10-12|ETHUSDT", "2025-10-13|ETHUSDT"}


def test_materialize_refuses_unknown_assets_and_symbols(levibot_env, capsys):
    levibot_env()
    assert main(["materialize", "--days", "1", "--select", "prices"]) == 2
    assert "unknown assets ['prices']" in capsys.readouterr().err
    assert main(["materialize", "--days", "1", "--symbols", "XRPUSDT"]) == 2
    assert "not partitions" in capsys.readouterr().err

"""raw_ohlcv and features through dagster.materialize with a temporary instance."""
import datetime as dt
import json

import dagster as dg
import pandas as pd
import pytest

from levibot_assets_tests.graph import features, raw_ohlcv
from levibot_assets.core.layout import DataLayout
from levibot_assets.definitions import build_resources
from levibot_assets.partitions import partition_key

ASSETS = [raw_ohlcv, features]


def _materialize(settings, key, instance, selection=None):
    return dg.materialize(ASSETS, resources=build_resources(settings), partition_key=key, instance=instance,
                          selection=selection)


def _metadata(result, asset):
    (mat,) = [m for m in result.asset_materializations_for_node(asset)]
    return {k: v.value for k, v in mat.metadata.items()}


def test_synthetic_partition_is_deterministic_and_replaced_atomically(levibot_env, tmp_path):
    settings = levibot_env()
    layout = DataLayout(settings.data_dir)
    key = partition_key("2025-10-13", "BTCUSDT")
    with dg.instance_for_test() as instance:
        assert _materialize(settings, key, instance).success
        path = layout.table("raw_ohlcv", dt.date(2025, 10, 13), "BTCUSDT")
        first = path.read_bytes()
        inode = path.stat().st_ino
        assert _materialize(settings, key, instance).success
        assert path.read_bytes() == first  # same key, byte-identical parquet
        assert path.stat().st_ino != inode  # replaced by rename, not rewritten in place
    assert sorted(p.name for p in path.parent.iterdir()) == ["BTCUSDT.parquet", "BTCUSDT.parquet.sha256"]
    f = pd.read_parquet(layout.table("features", "2025-10-13", "BTCUSDT"))
    assert len(f) == 1440


def test_features_use_previous_day_as_warm_up(levibot_env):
    settings = levibot_env()
    layout = DataLayout(settings.data_dir)
    with dg.instance_for_test() as instance:
        previews = {}
        for day in ("2025-10-12", "2025-10-13"):
            result = _materialize(settings, partition_key(day, "SOLUSDT"), instance)
            assert result.success
            previews[day] = _metadata(result, "features")["preview"]
        meta = _metadata(result, "features")
    assert meta["warmup_day_present"] is True
    f = pd.read_parquet(layout.table("features", "2025-10-13", "SOLUSDT"))
    assert f.loc[0, ["sma_50_ratio", "volatility_30", "ema_26_ratio"]].notna().all()
    for day, preview in previews.items():  # the cold day's first rows hold NaN
        _assert_preview_renders_as_to_markdown(preview, pd.read_parquet(layout.table("features", day, "SOLUSDT")).head(5))
    assert "| nan |" in previews["2025-10-12"]


def _cells(markdown: str) -> list[list[str]]:
    """A Markdown table as rendered: cells without their padding, the rule row as alignments."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in markdown.splitlines()]
    rows[1] = ["right" if c.endswith(":") else "left" for c in rows[1]]
    return rows


def _assert_preview_renders_as_to_markdown(preview: str, head: pd.DataFrame) -> None:
    """The preview shows what DataFrame.to_markdown shows: the same cells, aligned alike (NaN, floats, bools)."""
    assert _cells(preview) == _cells(head.to_markdown(index=False))


def test_features_without_raw_partition_fails_clearly(levibot_env):
    settings = levibot_env()
    with dg.instance_for_test() as instance:
        result = dg.materialize(ASSETS, resources=build_resources(settings), selection=[features],
                                partition_key=partition_key("2025-10-13", "BTCUSDT"), instance=instance,
                                raise_on_error=False)
    assert not result.success
    failure = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"][0]
    error = failure.event_specific_data.error
    text = error.message + (error.cause.message if error.cause else "")
    assert "raw_ohlcv partition 2025-10-13|BTCUSDT has not been materialized" in text


def test_files_source_on_real_data_matches_the_dump(levibot_env, shared_data_dir):
    settings = levibot_env(source="files", files_dir=shared_data_dir)
    layout = DataLayout(settings.data_dir)
    with dg.instance_for_test() as instance:
        assert _materialize(settings, partition_key("2023-04-09", "BTCUSDT"), instance).success
        result = _materialize(settings, partition_key("2023-04-10", "BTCUSDT"), instance)
    assert result.success
    raw = pd.read_parquet(layout.table("raw_ohlcv", "2023-04-10", "BTCUSDT"))
    rows = json.loads((shared_data_dir / "BTC_USDT-1m.json").read_text())
    start = int(pd.Timestamp("2023-04-10", tz="UTC").timestamp() * 1000)
    expected = [r[4] for r in rows if start <= r[0] < start + 86_400_000]
    assert len(raw) == 1440 and raw["close"].tolist() == expected
    f = pd.read_parquet(layout.table("features", "2023-04-10", "BTCUSDT"))
    assert len(f) == 1440 and f["close"].tolist() == expected
    assert _metadata(result, "raw_ohlcv")["missing_minutes"] == 0


def test_halt_day_gap_is_reported_not_filled(levibot_env, shared_data_dir):
    settings = levibot_env(source="files", files_dir=shared_data_dir)
    layout = DataLayout(settings.data_dir)
    with dg.instance_for_test() as instance:
        result = _materialize(settings, partition_key("2023-03-24", "ETHUSDT"), instance, selection=[raw_ohlcv])
    meta = _metadata(result, "raw_ohlcv")
    assert meta["missing_minutes"] == 80 and meta["gaps"] == 1
    assert "2023-03-24 12:40..13:59 (80 min)" in meta["gap_list"]
    assert meta["zero_volume_streaks"] >= 1
    raw = pd.read_parquet(layout.table("raw_ohlcv", "2023-03-24", "ETHUSDT"))
    assert len(raw) == 1440 - 80


def test_partition_outside_range_is_refused(levibot_env):
    settings = levibot_env()
    with dg.instance_for_test() as instance, pytest.raises(Exception, match="NOPEUSDT|partition"):
        _materialize(settings, partition_key("2025-10-13", "NOPEUSDT"), instance)


def test_ccxt_source_through_dagster_paginates_and_retries(levibot_env, monkeypatch):
    """The ccxt path end to end, offline: a real ccxt.binance serving recorded /api/v3/klines pages."""
    import ccxt

    from levibot_assets.core.sources import exchange as exchange_source
    from levibot_assets.core.sources.exchange import CcxtOhlcvClient
    from levibot_assets_tests.test_source_ccxt import DAY, DAY_MS, RecordedBinance, binance, recorded_klines

    rows = recorded_klines(DAY_MS - 60_000, 1442)
    exchange = binance()
    recorder = RecordedBinance(exchange, rows, failures=[ccxt.NetworkError("connection reset")])
    delays = []
    client = CcxtOhlcvClient(exchange=exchange, sleep=delays.append, rand=lambda: 0.0)  # no jitter
    monkeypatch.setattr(exchange_source, "ccxt_client", lambda exchange_id, options=None: client)
    settings = levibot_env(source="ccxt")
    with dg.instance_for_test() as instance:
        result = _materialize(settings, partition_key(DAY, "BTCUSDT"), instance, selection=[raw_ohlcv])
    assert result.success
    assert len(recorder.requests) == 3 and delays == [1.0]  # one retried NetworkError, then 2 pages
    raw = pd.read_parquet(DataLayout(settings.data_dir).table("raw_ohlcv", DAY, "BTCUSDT"))
    assert len(raw) == 1440 and raw["close"].tolist() == [float(r[4]) for r in rows[1:1441]]
    assert _metadata(result, "raw_ohlcv")["source"] == "ccxt:binance"


@pytest.mark.parametrize("fault, cause", [
    ("spike", "check no_price_spike failed: 1 bars jump more than 1.5x from their neighbours and back: 11:40"),
    ("conflicting-minute", "1 minute(s) with conflicting rows, the first 2023-04-10 11:40: ["),
])
def test_a_spike_or_a_conflicting_minute_in_a_dump_never_reaches_features(levibot_env, shared_data_dir, tmp_path,
                                                                          fault, cause):
    rows = json.loads((shared_data_dir / "BTC_USDT-1m.json").read_text())
    i = next(n for n, row in enumerate(rows) if row[0] == int(pd.Timestamp("2023-04-10 11:40", tz="UTC").timestamp() * 1000))
    bad = [rows[i][0], rows[i][1], rows[i][2] * 1000, rows[i][3], rows[i][4] * 1000, rows[i][5]]  # close, high x1000
    if fault == "spike":
        rows[i] = bad
    else:
        rows.insert(i + 1, bad)  # the same minute again, holding the spike
    (tmp_path / "dump").mkdir()
    (tmp_path / "dump" / "BTC_USDT-1m.json").write_text(json.dumps(rows))
    settings = levibot_env(source="files", files_dir=tmp_path / "dump")
    with dg.instance_for_test() as instance:
        result = dg.materialize(ASSETS, resources=build_resources(settings), instance=instance, raise_on_error=False,
                                partition_key=partition_key("2023-04-10", "BTCUSDT"))

    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert failure.step_key == "raw_ohlcv" and cause in failure.event_specific_data.error.message
    assert [e.step_key for e in result.all_events if e.event_type_value == "STEP_START"] == ["raw_ohlcv"]
    layout = DataLayout(settings.data_dir)
    assert not layout.table("raw_ohlcv", "2023-04-10", "BTCUSDT").exists()
    assert not layout.table("features", "2023-04-10", "BTCUSDT").exists()

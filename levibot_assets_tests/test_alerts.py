"""Alerts: the JSONL record, webhook delivery to a real local HTTP server, and the two sensors."""
import datetime as dt
import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pandas as pd
import pytest

from levibot_assets.assets.market import raw_ohlcv
from levibot_assets.core.alerts import Alert, append_alert, post_webhook, read_alerts, redact_url
from levibot_assets.core.layout import DataLayout
from levibot_assets.core.sources.synthetic import synthetic_day
from levibot_assets.definitions import build_resources
from levibot_assets.partitions import partition_key
from levibot_assets.resources.alerts import AlertResource
from levibot_assets.resources.storage import StorageResource
from levibot_assets.resources.market_data import MarketDataResource
from levibot_assets.sensors import asset_check_alerts, run_failure_alerts
from levibot_assets.settings import Settings

SECRET_PATH = "/services/T000/B000/secret-token"


class Webhook:
    """A real HTTP endpoint on 127.0.0.1 that records each JSON body and answers `status`."""

    def __init__(self, status: int = 200):
        self.status, self.bodies = status, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers["Content-Length"])
                outer.bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(outer.status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}{SECRET_PATH}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}{SECRET_PATH}"


ALERT = Alert(kind="asset_check", severity="WARN", title="check complete_day failed", details="15 missing minutes",
              asset="raw_ohlcv", partition="2025-10-13|BTCUSDT")


def test_redact_url_hides_path_and_token():
    assert redact_url("https://hooks.slack.com/services/T0/B0/xyz") == "https://hooks.slack.com/..."
    assert redact_url("http://127.0.0.1:8080/a?token=1") == "http://127.0.0.1:8080/..."


def test_post_delivers_slack_payload():
    with Webhook() as hook:
        assert post_webhook(hook.url, ALERT.text)
    assert hook.bodies == [{"text": ALERT.text}]
    assert ALERT.text.startswith("[LeviBot WARN] check complete_day failed - raw_ohlcv [2025-10-13|BTCUSDT]")


def test_failing_endpoint_retries_never_raises_and_never_logs_the_url(caplog):
    caplog.set_level(logging.WARNING)
    with Webhook(status=500) as hook:
        assert not post_webhook(hook.url, "x", retries=3, backoff_s=0.01)
    assert len(hook.bodies) == 3
    assert not post_webhook(_closed_port_url(), "x", retries=2, backoff_s=0.01)
    assert not post_webhook("not a url", "x", retries=1)
    assert "secret-token" not in caplog.text and "http://127.0.0.1:" in caplog.text


def test_alert_is_recorded_even_when_the_webhook_fails(tmp_path):
    resource = AlertResource(
        storage=StorageResource(data_dir=str(tmp_path)), webhook_url=_closed_port_url(), retries=2, backoff_s=0.01
    )
    assert resource.send(ALERT) is False
    (record,) = read_alerts(DataLayout(tmp_path).alerts_file)
    assert record["title"] == ALERT.title and record["partition"] == ALERT.partition and record["text"] == ALERT.text


def test_concurrent_appends_keep_whole_lines(tmp_path):
    path = tmp_path / "alerts.jsonl"
    threads = [threading.Thread(target=lambda: [append_alert(path, ALERT) for _ in range(25)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(read_alerts(path)) == 100


def test_bad_severity_is_refused():
    with pytest.raises(ValueError, match="severity"):
        Alert(kind="asset_check", severity="INFO", title="x")


class HoledDuplicatedMarketData(MarketDataResource):
    """Synthetic candles with 15 minutes missing (a WARN) and one repeated bar (a blocking ERROR)."""

    def fetch_day(self, symbol: str, date: dt.date) -> pd.DataFrame:
        bars = synthetic_day(symbol, date).drop(index=range(60, 75))
        return pd.concat([bars, bars.iloc[[0]]], ignore_index=True)


def _tick(sensor, instance, cursor, alerts):
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources={"alerts": alerts}) as context:
        return sensor.evaluate_tick(context).cursor


def test_sensors_alert_once_per_failed_check_and_failed_run(tmp_path):
    day = dt.date(2025, 10, 13)
    with Webhook() as hook, dg.instance_for_test() as instance:
        alerts = AlertResource(storage=StorageResource(data_dir=str(tmp_path / "data")), webhook_url=hook.url)
        check_cursor = _tick(asset_check_alerts, instance, None, alerts)  # first tick: from now on
        run_cursor = _tick(run_failure_alerts, instance, None, alerts)
        result = dg.materialize(
            [raw_ohlcv],
            partition_key=str(partition_key(day, "BTCUSDT")),
            resources={**build_resources(Settings(data_dir=str(tmp_path / "data"))), "market_data": HoledDuplicatedMarketData()},
            instance=instance,
            raise_on_error=False,
        )
        assert not result.success
        for _ in range(2):  # the second round finds nothing new
            check_cursor = _tick(asset_check_alerts, instance, check_cursor, alerts)
            run_cursor = _tick(run_failure_alerts, instance, run_cursor, alerts)

    records = read_alerts(DataLayout(tmp_path / "data").alerts_file)
    by_title = {r["title"]: r for r in records}
    assert len(records) == 3, [r["title"] for r in records]
    assert by_title["check consistent_bars failed"]["severity"] == "ERROR"
    assert by_title["check complete_day failed"]["severity"] == "WARN"
    assert "01:00..01:14" in by_title["check complete_day failed"]["details"]
    assert by_title["check complete_day failed"]["partition"] == "2025-10-13|BTCUSDT"
    failure = by_title["run of __ephemeral_asset_job__ failed"]
    assert failure["severity"] == "ERROR" and failure["run_id"] == result.run_id
    assert failure["partition"] == "2025-10-13|BTCUSDT"
    assert sorted(b["text"] for b in hook.bodies) == sorted(r["text"] for r in records)

"""Alerts: the JSONL record, webhook delivery to a real local HTTP server, and the two sensors."""
import datetime as dt
import json
import logging
import shutil
import socket
import sqlite3
import threading
import zlib
from contextlib import closing, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from levibot_assets_tests.graph import raw_ohlcv
from levibot_assets.cli import main
from levibot_assets.core.alerts import Alert, append_alert, post_webhook
from levibot_assets.core.atomic import read_text
from levibot_assets.core.redaction import redact_text, redact_url
from levibot_assets.core.layout import DataLayout
from levibot_assets.core.sources.synthetic import synthetic_day
from levibot_assets.definitions import build_resources
from levibot_assets.partitions import partition_key
from levibot_assets.resources.alerts import AlertResource
from levibot_assets.resources.storage import StorageResource
from levibot_assets.resources.market_data import MarketDataResource
from levibot_assets.sensors import _run_partition, asset_check_alerts, run_failure_alerts
from levibot_assets.settings import Settings
from levibot_assets_tests.conftest import REPO_ROOT

SECRET_PATH = "/services/T000/B000/secret-token"


def read_alerts(path: Path) -> list[dict]:
    """Every alert recorded in alerts.jsonl so far (empty when none was ever sent)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in read_text(path).splitlines() if line.strip()]


class Webhook:
    """A real HTTP endpoint on 127.0.0.1 that records each JSON body and path and answers `status`."""

    def __init__(self, status: int = 200, path: str = SECRET_PATH):
        self.status, self.bodies, self.paths = status, [], []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers["Content-Length"])
                outer.bodies.append(json.loads(self.rfile.read(length)))
                outer.paths.append(self.path)
                self.send_response(outer.status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}{path}"
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
    assert redact_url("postgresql+psycopg2://levibot:pw@db:5432/optuna") == "postgresql+psycopg2://***@db:5432/..."


def test_redact_text_removes_the_credentials_of_every_url_in_it():
    text = ("binance GET http://alice:pa%40ss@127.0.0.1:9/api/v3/klines?symbol=BTCUSDT failed; "
            "proxy socks5h://bob:x@proxy:1080, broker redis://:hunter2@h:6379/0 and http://plain.host/a@b")
    assert redact_text(text) == ("binance GET http://***@127.0.0.1:9/api/v3/klines?symbol=BTCUSDT failed; "
                                 "proxy socks5h://***@proxy:1080, broker redis://***@h:6379/0 and http://plain.host/a@b")


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
    (failure,) = [r for r in records if r["kind"] == "run_failure"]
    assert failure["severity"] == "ERROR" and failure["run_id"] == result.run_id
    assert failure["asset"] == "raw_ohlcv" and failure["partition"] == "2025-10-13|BTCUSDT"
    assert "check consistent_bars failed: " + by_title["check consistent_bars failed"]["details"] in failure["details"]
    assert sorted(b["text"] for b in hook.bodies) == sorted(r["text"] for r in records)


def _levibot_home(tmp_path, monkeypatch) -> Path:
    """A DAGSTER_HOME with the project's dagster.yaml (SQLite), as `levibot materialize` uses it."""
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


def test_run_failure_alert_names_asset_partition_and_cause_once_per_failed_run(levibot_env, tmp_path, monkeypatch):
    _levibot_home(tmp_path, monkeypatch)
    settings = levibot_env()
    alerts = build_resources(settings)["alerts"]
    with dg.DagsterInstance.get() as instance:
        cursor = _tick(run_failure_alerts, instance, None, alerts)
        for day in ("2025-10-15", "2025-10-16"):  # features of days without raw_ohlcv: two failed runs
            assert main(["materialize", "--symbols", "ETHUSDT", "--start", day, "--end", day, "--select", "features"]) == 1
        for _ in range(2):  # the second tick finds nothing new
            cursor = _tick(run_failure_alerts, instance, cursor, alerts)
    records = read_alerts(DataLayout(settings.data_dir).alerts_file)
    assert [(r["asset"], r["partition"]) for r in records] == [("features", "2025-10-15|ETHUSDT"),
                                                             ("features", "2025-10-16|ETHUSDT")]
    for record in records:
        head = record["text"].splitlines()[0]
        assert head.startswith("[LeviBot ERROR] run of ") and head.endswith(f"failed - features [{record['partition']}]")
        cause = record["details"]
        assert "raw_ohlcv" in cause and record["partition"] in cause and "has not been materialized" in cause


def test_range_runs_are_alerted_with_their_partition_range():
    run = dg.DagsterRun(job_name="j", tags={"dagster/asset_partition_range_start": "2025-10-01|BTCUSDT",
                                             "dagster/asset_partition_range_end": "2025-10-09|BTCUSDT"})
    assert _run_partition(run) == "2025-10-01|BTCUSDT..2025-10-09|BTCUSDT"
    assert _run_partition(dg.DagsterRun(job_name="j", tags={"dagster/partition": "2025-10-01|BTCUSDT"})) == "2025-10-01|BTCUSDT"


SECRETS = ("SECRET-TOKEN-123", "DB-PASSWORD-e93b22")


def _secrets_found(root: Path, secrets: tuple[str, ...] = SECRETS) -> list[str]:
    """Every file under root whose bytes hold a secret; SQLite values are read row by row and
    compressed blobs (Dagster's snapshots table stores zlib) are decompressed first."""
    found = []
    for path in (p for p in root.rglob("*") if p.is_file()):
        contents = [path.read_bytes()]
        if contents[0].startswith(b"SQLite format 3"):
            with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
                for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
                    for row in db.execute(f'SELECT * FROM "{table}"'):
                        for value in row:
                            blob = value.encode() if isinstance(value, str) else value
                            if isinstance(blob, bytes):
                                contents.append(blob)
                                with suppress(zlib.error):
                                    contents.append(zlib.decompress(blob))
        found += [f"{secret} in {path}" for secret in secrets if any(secret.encode() in c for c in contents)]
    return found


def test_secrets_stay_out_of_the_dagster_instance(levibot_env, tmp_path, monkeypatch):
    """The webhook URL (with its token) and the Optuna storage URL (with its password) are in the settings,
    yet stored nowhere Dagster keeps things."""
    home = _levibot_home(tmp_path, monkeypatch)
    with Webhook(path=f"/hook?token={SECRETS[0]}") as hook:
        settings = levibot_env(alert_webhook=hook.url,
                               optuna_storage=f"postgresql+psycopg2://levibot:{SECRETS[1]}@127.0.0.1:1/optuna")
        alerts = build_resources(settings)["alerts"]
        with dg.DagsterInstance.get() as instance:
            cursor = _tick(run_failure_alerts, instance, None, alerts)
            days = ["materialize", "--symbols", "BTCUSDT", "--start"]
            assert main([*days, "2025-10-13", "--end", "2025-10-13", "--select", "raw_ohlcv"]) == 0
            assert main([*days, "2025-10-15", "--end", "2025-10-15", "--select", "features"]) == 1  # no raw_ohlcv
            _tick(run_failure_alerts, instance, cursor, alerts)
    assert hook.paths == [f"/hook?token={SECRETS[0]}"]  # the alert went out with the token
    assert _secrets_found(home) + _secrets_found(Path(settings.data_dir)) == []


def test_a_password_in_the_exchange_url_is_stored_nowhere_after_a_failing_run(levibot_env, tmp_path, monkeypatch, capsys):
    """ccxt quotes the URL it failed on: a `user:password@` endpoint (and proxy) in LEVIBOT_CCXT_OPTIONS
    must reach neither the console, the run records, the compute logs nor the alerts."""
    password = "Pw0rd-7f3a91"
    home = _levibot_home(tmp_path, monkeypatch)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed once the block ends: nothing listens there
    url = f"http://alice:{password}@127.0.0.1:{port}"
    api = {name: f"{url}/api/v3" for name in ("public", "private", "v1", "sapi")}
    settings = levibot_env(source="ccxt", ccxt_options=json.dumps({"urls": {"api": api}, "timeout": 1000}))
    alerts = build_resources(settings)["alerts"]
    with dg.DagsterInstance.get() as instance:
        cursor = _tick(run_failure_alerts, instance, None, alerts)
        assert main(["materialize", "--symbols", "BTCUSDT", "--start", "2025-10-13", "--end", "2025-10-13",
                     "--select", "raw_ohlcv"]) == 1
        _tick(run_failure_alerts, instance, cursor, alerts)
    console = capsys.readouterr()
    assert f"http://***@127.0.0.1:{port}/api/v3" in console.out  # the endpoint is still named
    (alert,) = read_alerts(DataLayout(settings.data_dir).alerts_file)
    assert "raw_ohlcv" in alert["text"] and "***@127.0.0.1" in alert["text"]
    assert password not in console.out + console.err
    assert _secrets_found(home, (password,)) + _secrets_found(Path(settings.data_dir), (password,)) == []

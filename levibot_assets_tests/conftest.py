"""Test-wide set-up: a clean LEVIBOT_* environment before the package is imported.

The test graph (levibot_assets_tests/graph.py) is built from these settings, so the start date set
here makes the shared real data (March/April 2023) valid partitions. Real data is looked up at
../shared/data (or $LEVIBOT_SHARED_DATA); tests that need it skip when it is absent.
"""
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
_SHARED = os.environ.get("LEVIBOT_SHARED_DATA") or str(REPO_ROOT.parent / "shared" / "data")

for _name in [n for n in os.environ if n.startswith("LEVIBOT_") and n != "LEVIBOT_SHARED_DATA"]:
    del os.environ[_name]
os.environ["LEVIBOT_START_DATE"] = "2023-03-01"
os.environ["LEVIBOT_DATA_DIR"] = str(Path(os.environ.get("TMPDIR", "/tmp")) / f"levibot-tests-{os.getpid()}")


@pytest.fixture
def shared_data_dir() -> Path:
    """The real Binance 2023-03/04 candles (freqtrade JSON); skips where the shared folder is absent."""
    path = Path(_SHARED) / "binance-spot-2023-03"
    if not (path / "BTC_USDT-1m.json").exists():
        pytest.skip(f"shared real data not found at {path} (set LEVIBOT_SHARED_DATA to the shared/data folder)")
    return path


@pytest.fixture
def levibot_env(monkeypatch, tmp_path):
    """Set LEVIBOT_* variables for one test; settings are re-read, data goes under tmp_path."""
    from levibot_assets.settings import get_settings

    def apply(**values):
        monkeypatch.setenv("LEVIBOT_DATA_DIR", str(tmp_path / "data"))
        for name, value in values.items():
            monkeypatch.setenv(f"LEVIBOT_{name.upper()}", str(value))
        get_settings.cache_clear()
        return get_settings()

    yield apply
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def dagster_dev(tmp_path_factory):
    """One running `dagster dev` shared by the UI tests (levibot_assets_tests/dagster_dev.py)."""
    from levibot_assets_tests.dagster_dev import running_dagster_dev

    with running_dagster_dev(tmp_path_factory.mktemp("dagster-dev")) as server:
        yield server


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    """One moto S3 server on 127.0.0.1 for the session (levibot_assets_tests/s3_server.py)."""
    from levibot_assets_tests.s3_server import running_s3_server

    with running_s3_server(tmp_path_factory.mktemp("s3")) as endpoint:
        yield endpoint


@pytest.fixture
def s3_data_dir(s3_endpoint, monkeypatch) -> str:
    """`s3://<fresh bucket>/data` on the local server, with the AWS variables pointing there."""
    import uuid

    from levibot_assets_tests.s3_server import aws_env, create_bucket

    for name, value in aws_env(s3_endpoint).items():
        monkeypatch.setenv(name, value)
    bucket = f"levibot-{uuid.uuid4().hex[:12]}"
    create_bucket(s3_endpoint, bucket)
    return f"s3://{bucket}/data"


@pytest.fixture
def data_root(request, tmp_path):
    """A fresh data directory on local disk, or with the `indirect` parameter "s3" on the local S3 server."""
    if getattr(request, "param", "local") == "s3":
        return request.getfixturevalue("s3_data_dir")
    return tmp_path / "data"


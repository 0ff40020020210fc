"""A local S3-compatible server (moto's server mode) on 127.0.0.1 for the object-storage tests.

The tests reach it the way a deployment reaches S3 or MinIO: through the standard AWS variables
(AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...), which s3fs and boto read themselves.
"""
from __future__ import annotations

import contextlib
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

from levibot_assets_tests.processes import free_port, running, wait_until

REGION = "us-east-1"


def _answers(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(endpoint, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # an S3 error document is an answer
    except OSError:
        return False


@contextlib.contextmanager
def running_s3_server(log_dir: Path) -> Iterator[str]:
    """Start `moto_server` on a free port; yield its endpoint URL; stop it by its PID on exit."""
    port = free_port()
    log = log_dir / "moto_server.log"
    moto_server = Path(sys.executable).parent / "moto_server"
    with running([str(moto_server), "-H", "127.0.0.1", "-p", str(port)], log) as process:
        endpoint = f"http://127.0.0.1:{port}"
        wait_until(lambda: _answers(endpoint), 60, "moto_server answering", process, log)
        yield endpoint


def aws_env(endpoint: str) -> dict[str, str]:
    """The variables that point s3fs and boto at the local server (dummy credentials)."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "levibot-test",
        "AWS_SECRET_ACCESS_KEY": "levibot-test",
        "AWS_DEFAULT_REGION": REGION,
    }


def create_bucket(endpoint: str, name: str) -> None:
    import boto3

    boto3.client("s3", endpoint_url=endpoint, region_name=REGION, aws_access_key_id="levibot-test",
                 aws_secret_access_key="levibot-test").create_bucket(Bucket=name)

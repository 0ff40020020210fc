"""A real, throwaway PostgreSQL server for tests of the deployment topology and shared Optuna storage.

`initdb` into a fresh temp directory, `postgres` on 127.0.0.1 at a free port with password
authentication, one database per use. PostgreSQL refuses to run as root, so as root the server
runs as an unprivileged account (`postgres` where it exists, else `nobody`) owning the directory.
Binaries are searched on PATH, then in /usr/lib/postgresql/*/bin (Debian/Ubuntu) or
$LEVIBOT_PG_BIN. Where they are missing a test skips, except in CI (CI=true) where it fails:
`scripts/install_system_deps.sh` installs them.

Use in a test module (no conftest needed):  `from levibot_assets_tests.postgres import postgres_server`
"""
from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from levibot_assets_tests import processes

SUPERUSER = "levibot"
START_TIMEOUT_S = 60.0


class PostgresNotFound(RuntimeError):
    """initdb/postgres binaries are not installed."""


def find_bin_dir() -> Path:
    """The directory holding initdb and postgres."""
    candidates = []
    if os.environ.get("LEVIBOT_PG_BIN"):
        candidates.append(Path(os.environ["LEVIBOT_PG_BIN"]))
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    for directory in candidates:
        if (directory / "initdb").exists() and (directory / "postgres").exists():
            return directory
    raise PostgresNotFound(
        "PostgreSQL server binaries (initdb, postgres) not found on PATH, in /usr/lib/postgresql/*/bin "
        "or $LEVIBOT_PG_BIN: run scripts/install_system_deps.sh"
    )


def _server_user() -> str | None:
    """None when we are not root; otherwise an unprivileged account to run the server as."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise PostgresNotFound("running as root and neither a 'postgres' nor a 'nobody' account exists")


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str
    password: str

    def connect(self, dbname: str = "postgres"):
        import psycopg2

        return psycopg2.connect(
            host=self.host, port=self.port, user=self.user, password=self.password, dbname=dbname, connect_timeout=5
        )

    def create_database(self, name: str) -> str:
        conn = self.connect()
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return name

    def url(self, dbname: str) -> str:
        """SQLAlchemy URL (Optuna's RDB storage)."""
        return f"postgresql+psycopg2://{self.user}:{self.password}@{self.host}:{self.port}/{dbname}"

    def dagster_env(self, dbname: str) -> dict[str, str]:
        """The DAGSTER_PG_* variables that docker/dagster.yaml reads."""
        return {
            "DAGSTER_PG_HOST": self.host,
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_USER": self.user,
            "DAGSTER_PG_PASSWORD": self.password,
            "DAGSTER_PG_DB": dbname,
        }


def _accepts_connections(server: PostgresServer) -> bool:
    import psycopg2

    try:
        server.connect().close()
        return True
    except psycopg2.OperationalError:
        return False


def _run_as(argv: list[str], user: str | None) -> None:
    result = subprocess.run(argv, user=user, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")


@dataclass
class _Running:
    server: PostgresServer
    process: subprocess.Popen
    root: Path


def _start(bin_dir: Path) -> _Running:
    user = _server_user()
    # Not pytest's tmp_path: its parents are private to root, and the server user must reach the dir.
    root = Path(tempfile.mkdtemp(prefix="levibot-pg-"))
    try:
        data_dir, pwfile, log = root / "data", root / "pwfile", root / "postgres.log"
        password = secrets.token_hex(12)
        pwfile.write_text(password + "\n")
        if user is not None:
            shutil.chown(root, user=user)
            shutil.chown(pwfile, user=user)
        _run_as(
            [str(bin_dir / "initdb"), "-D", str(data_dir), "-U", SUPERUSER, f"--pwfile={pwfile}",
             "--auth=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync"],
            user,
        )
        port = processes.free_port()
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(port),
            "unix_socket_directories": "",
            # A disposable server: durability settings off make it several times faster.
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
        }
        argv = [str(bin_dir / "postgres"), "-D", str(data_dir)]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        process = processes.start(argv, log, user=user)
        server = PostgresServer(host="127.0.0.1", port=port, user=SUPERUSER, password=password)
        try:
            processes.wait_until(lambda: _accepts_connections(server), START_TIMEOUT_S, "PostgreSQL start", process, log)
        except BaseException:
            stop_postgres(process)
            raise
        return _Running(server, process, root)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise


def stop_postgres(process: subprocess.Popen) -> None:
    """SIGINT is PostgreSQL's "fast shutdown"; SIGKILL follows if it hangs."""
    processes.stop(process, first_signal=signal.SIGINT)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


@contextlib.contextmanager
def postgres_running(bin_dir: Path | None = None) -> Iterator[PostgresServer]:
    """A started server for the duration of the block; stopped by PID and its directory removed."""
    running = _start(bin_dir or find_bin_dir())
    try:
        yield running.server
    finally:
        stop_postgres(running.process)
        shutil.rmtree(running.root, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server for the module; skips without binaries, except in CI where it fails."""
    try:
        bin_dir = find_bin_dir()
    except PostgresNotFound as exc:
        if in_ci():
            pytest.fail(f"CI=true and PostgreSQL is missing: {exc}", pytrace=False)
        pytest.skip(str(exc))
    with postgres_running(bin_dir) as server:
        yield server

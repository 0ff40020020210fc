"""Long-running child processes for end-to-end tests, each in its own process group.

Every process is stopped by its PID's group in a `finally`: SIGTERM, then SIGKILL after a timeout,
so the servers and the subprocesses they spawn (run workers, code servers) never outlive a test.
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator, Mapping, Sequence

STOP_TIMEOUT_S = 15.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _restore_sigint() -> None:
    # A process started in the background by a non-interactive shell inherits SIGINT ignored;
    # Dagster's servers interrupt their own children with SIGINT, so give it its default back.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(
    argv: Sequence[str],
    log_path: Path,
    env: Mapping[str, str] | None = None,
    user: str | None = None,
) -> subprocess.Popen:
    """Start `argv` in a new session (its own process group), stdout+stderr to `log_path`."""
    log = open(log_path, "ab")
    try:
        return subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            start_new_session=True,
            preexec_fn=_restore_sigint,
            user=user,
        )
    finally:
        log.close()


def stop(process: subprocess.Popen, first_signal: int = signal.SIGTERM, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """Stop the process and its whole group: `first_signal`, then SIGKILL after `timeout_s`."""
    pgid = process.pid  # start_new_session: the group id is the leader's pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, first_signal)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        pass
    # Children may outlive the leader (run workers of a code server): the group gets SIGKILL.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    process.wait()


@contextlib.contextmanager
def running(
    argv: Sequence[str],
    log_path: Path,
    env: Mapping[str, str] | None = None,
    user: str | None = None,
    first_signal: int = signal.SIGTERM,
) -> Iterator[subprocess.Popen]:
    """`start` on entry, `stop` on exit, whatever happens in between."""
    process = start(argv, log_path, env=env, user=user)
    try:
        yield process
    finally:
        stop(process, first_signal=first_signal)


def wait_until(
    predicate,
    timeout_s: float,
    what: str,
    process: subprocess.Popen | None = None,
    log_path: Path | None = None,
    interval_s: float = 0.5,
):
    """Poll `predicate()` until it returns a truthy value; fail with the log tail on timeout or exit."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what}: process exited with code {process.returncode}\n{log_tail(log_path)}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not reached within {timeout_s:.0f}s\n{log_tail(log_path)}")
        time.sleep(interval_s)


def log_tail(log_path: Path | None, chars: int = 4000) -> str:
    if log_path is None or not log_path.exists():
        return ""
    text = log_path.read_text(errors="replace")
    return f"--- tail of {log_path} ---\n{text[-chars:]}"

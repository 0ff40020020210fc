"""Crash-safe file operations: a reader sees the old file or the new one, never a torn one."""
from __future__ import annotations

import fcntl
import io
import os
import tempfile
from pathlib import Path

import pandas as pd


def fsync_dir(directory: Path) -> None:
    """Make a rename or new entry in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write to a temp file in the same directory, fsync, then os.replace over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def append_line(path: str | os.PathLike, line: str) -> Path:
    """Append one line durably: O_APPEND + a single write() under an exclusive flock, then fsync.

    Concurrent writers (threads or processes) never interleave; the flock also covers filesystems
    where appends are not atomic (NFS). A crash can at worst leave a torn last line.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, line.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)  # closing releases the lock
    return path


def parquet_bytes(df: pd.DataFrame) -> bytes:
    """Serialise deterministically: the same frame always gives the same bytes."""
    buffer = io.BytesIO()
    df.to_parquet(buffer, engine="pyarrow", index=False, compression="zstd")
    return buffer.getvalue()


def atomic_write_parquet(path: str | os.PathLike, df: pd.DataFrame) -> Path:
    return atomic_write_bytes(path, parquet_bytes(df))


def atomic_symlink(target: str | os.PathLike, link: str | os.PathLike) -> Path:
    """Point `link` at `target` by renaming a fresh temp symlink over it (`ln -sfn` is not atomic)."""
    link = Path(link)
    link.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(100):
        tmp = link.parent / f".{link.name}.tmp-{os.getpid()}-{attempt}"
        try:
            os.symlink(os.fspath(target), tmp)
            break
        except FileExistsError:
            continue
    else:  # pragma: no cover - 100 stale temp links from the same pid
        raise RuntimeError(f"could not create a temporary symlink beside {link}")
    try:
        os.replace(tmp, link)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(link.parent)
    return link

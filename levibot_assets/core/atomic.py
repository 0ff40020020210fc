"""Crash-safe file operations: a reader sees the old file or the new one, never a torn one.

Paths are local (pathlib) or on an object store (core.object_store); each operation here does the
same thing on both, by the means each has (rename and symlink here, single PUTs there).
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

from levibot_assets.core import object_store


def fsync_dir(directory: Path) -> None:
    """Make a rename or new entry in `directory` durable (nothing to do on an object store)."""
    if object_store.is_remote(directory):
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _create_temp(path: Path) -> tuple[int, Path]:
    """A new hidden temp file beside `path`, created with mode 0o666 so the kernel applies the umask.

    tempfile.mkstemp creates 0600 whatever the umask, and the files written here (models, parquet,
    manifests, summaries) are read by a trading engine running as another user. Letting open() apply
    the process umask (and any default ACL of the directory) gives exactly the mode a normal file
    gets, without reading the umask (os.umask can only be read by setting it, racy in threads).
    """
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{os.urandom(6).hex()}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file beside {path}")  # pragma: no cover


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write to a temp file in the same directory, fsync, then os.replace over `path`.

    The file gets the mode of a normally created file (0o666 & ~umask). On an object store: one PUT.
    """
    if object_store.is_remote(path):
        object_store.put(path, data)
        return path
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:  # ENOSPC, EIO name no file: say which write failed
        tmp.unlink(missing_ok=True)
        raise exc if exc.filename else type(exc)(exc.errno, exc.strerror, str(path)) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def _cut_torn_tail(fd: int) -> None:
    """Truncate the file after its last newline: drop what a writer killed mid-line left behind.

    Called under the exclusive flock, so no live writer is mid-line. Without this the next line would
    be glued onto the torn one and both would be unreadable. Dropping the fragment loses nothing that
    took effect: a line only counts once its write and fsync returned.
    """
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    keep, end = 0, size
    while end > 0:  # back to the last newline, a block at a time
        start = max(0, end - (1 << 16))
        newline = os.pread(fd, end - start, start).rfind(b"\n")
        if newline >= 0:
            keep = start + newline + 1
            break
        end = start
    os.ftruncate(fd, keep)


def append_line(path: str | os.PathLike, line: str) -> Path:
    """Append one line durably: O_APPEND + a single write() under an exclusive flock, then fsync.

    Concurrent writers (threads or processes) never interleave; the flock also covers filesystems
    where appends are not atomic (NFS). A crash mid-write leaves a torn last line, which the next
    append cuts off before writing (readers skip it meanwhile). New files get 0o666 & ~umask.
    On an object store: a conditional PUT of the whole object (object_store.append).
    """
    if object_store.is_remote(path):
        object_store.append(path, line.encode("utf-8"))
        return path
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _cut_torn_tail(fd)
        os.write(fd, line.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)  # closing releases the lock
    return path


def read_bytes(path) -> bytes:
    """The whole file, as one version of it: on an object store a single GET (see core.object_store)."""
    return object_store.get(path) if object_store.is_remote(path) else Path(path).read_bytes()


def read_text(path, errors: str = "strict") -> str:
    return read_bytes(path).decode("utf-8", errors)


def set_link(link, target) -> None:
    """Point `link` at the path `target` (a relative symlink, or a pointer object on an object store)."""
    if object_store.is_remote(link):
        object_store.put(link, (object_store.relative(target, link.parent) + "\n").encode("utf-8"))
    else:
        atomic_symlink(os.path.relpath(target, link.parent), link)


def read_link(link) -> str | None:
    """The relative target `link` holds, or None when there is no link."""
    if object_store.is_remote(link):
        return object_store.read_pointer(link)
    try:
        return os.readlink(link)
    except FileNotFoundError:
        return None


def resolve_link(link, target: str):
    """The path a link's relative `target` (as read_link gives it) names."""
    if object_store.is_remote(link):
        return object_store.resolve(link, target)
    return Path(os.path.normpath(link.parent / target))


def is_link(path) -> bool:
    """A symlink, or on an object store any object where links live (they hold nothing else)."""
    return path.is_file() if object_store.is_remote(path) else path.is_symlink()


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

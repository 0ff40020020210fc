"""The data directory on an object store (`s3://bucket/prefix`): the operations that differ from a local disk.

An object store has no rename, no symlink, no append and no flock. What replaces each:

- a whole-file write is one PUT and a whole-file read one GET: a reader sees the old object or the
  new one, never a torn one (s3fs's file objects read ranges and fail if the object changes in
  between, so reads here never go through them);
- a link (current/<SYMBOL>, best_*) is a small pointer object whose body is the relative target a
  symlink would hold (`../releases/<date>/<SYMBOL>`); swapping it is one PUT;
- an append (history.jsonl, alerts.jsonl) is read, then PUT with `If-Match: <etag>` (or
  `If-None-Match: *` for a new object), retried when another writer got in between;
- a lock is a lease object created with `If-None-Match: *` and deleted with `If-Match: <etag>`. A
  holder that died leaves it behind: a waiter that sees the same lease (same ETag) for longer than
  the lease time, measured on its own monotonic clock (no clock skew between hosts), deletes it
  with `If-Match` so that only that stale lease can go.

These conditional writes are S3's (AWS since 2024, MinIO, moto); other fsspec protocols are
refused when the data directory is opened. Credentials and the endpoint come from the standard AWS
variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL for MinIO and the like).
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import posixpath
import random
import socket
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

PROTOCOLS = ("s3",)
LEASE_S = 60.0  # longer than any critical section (a release upload, a summary update): seconds
APPEND_ATTEMPTS = 50


class ObjectStoreError(RuntimeError):
    """The data directory URL cannot be used, a request failed (no such bucket, access denied) or a
    conditional write kept losing to other writers; the message names the object and says why."""


def is_remote(path: Any) -> bool:
    """True for an object-store path (a UPath that is not a local pathlib.Path)."""
    return hasattr(path, "fs") and not isinstance(path, Path)


def is_url(location: str) -> bool:
    """An object-store URL rather than a local path (`file://` counts as local)."""
    return "://" in location and not location.startswith("file://")


def unusable(location: str) -> str | None:
    """Why `location` cannot be the data directory, or None: local paths can, and s3:// URLs with s3fs."""
    if not is_url(location):
        return None
    protocol = location.split("://", 1)[0].lower()
    if protocol not in PROTOCOLS:
        return (f"uses {protocol}://, which is not supported: a local path or s3://bucket/prefix "
                "(locks and appends need S3 conditional writes)")
    if importlib.util.find_spec("s3fs") is None:
        return "needs s3fs: pip install 'levibot_assets[s3]'"
    return None


def open_root(url: str):
    """The UPath of `s3://bucket/prefix`, with listing caches off (other hosts write there too)."""
    if reason := unusable(url):
        raise ObjectStoreError(f"data directory {url} {reason}")
    from upath import UPath

    return UPath(url, use_listings_cache=False)


def _bucket_key(path) -> tuple[str, str]:
    bucket, key, _ = path.fs.split_path(path.path)
    return bucket, key


RACE_CODES = ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey")


def _lost_race(exc: OSError) -> bool:
    """True when a conditional write or delete failed because another writer changed the object first:
    412 PreconditionFailed, 409 ConditionalRequestConflict, or NoSuchKey for an object deleted
    meanwhile. Anything else (NoSuchBucket, AccessDenied, ...) is not a race and must surface."""
    if isinstance(exc, FileExistsError):  # s3fs's translation of a failed If-None-Match: *
        return True
    response = getattr(exc.__cause__, "response", None) or {}
    return response.get("Error", {}).get("Code") in RACE_CODES


def _failed(path, exc: OSError) -> ObjectStoreError:
    """The error of a request that failed for another reason than a race, naming the object."""
    return ObjectStoreError(f"{path}: {exc}")


def _put_if(path, body: bytes, **condition: str) -> str | None:
    """PUT `body` under a condition (IfMatch=<etag> or IfNoneMatch="*"): the new ETag, or None when
    another writer changed the object first."""
    bucket, key = _bucket_key(path)
    try:
        return path.fs.call_s3("put_object", Bucket=bucket, Key=key, Body=body, **condition)["ETag"]
    except OSError as exc:
        if not _lost_race(exc):
            raise _failed(path, exc) from exc
        return None


def etag(path) -> str | None:
    """The object's ETag (changes with every PUT of other bytes), None when there is no object."""
    try:
        return path.fs.info(path.path)["ETag"]
    except FileNotFoundError:
        return None


def put(path, data: bytes) -> None:
    """One PUT: the object is replaced whole or not at all."""
    try:
        path.fs.pipe_file(path.path, data)
    except OSError as exc:
        raise _failed(path, exc) from exc


def append(path, data: bytes) -> None:
    """Append `data` to an object: read it, then PUT it back only if nobody wrote it meanwhile."""
    for attempt in range(APPEND_ATTEMPTS):
        current = etag(path)
        try:
            old = b"" if current is None else get(path)
        except FileNotFoundError:
            continue
        condition = {"IfNoneMatch": "*"} if current is None else {"IfMatch": current}
        if _put_if(path, old + data, **condition) is not None:
            return
        time.sleep(random.uniform(0.0, 0.05 * (attempt + 1)))
    raise ObjectStoreError(f"{path}: {APPEND_ATTEMPTS} appends in a row lost to other writers")


def get(path) -> bytes:
    """One GET of the whole object: the version that was there when the request was served."""
    try:
        return path.fs.cat_file(path.path)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise _failed(path, exc) from exc


def read_pointer(link) -> str | None:
    """The target a pointer object holds, or None when there is none."""
    try:
        return get(link).decode("utf-8").strip()
    except FileNotFoundError:
        return None


def resolve(link, target: str):
    """The path a pointer's relative `target` names (normalised: object keys have no '..')."""
    path = posixpath.normpath(posixpath.join(posixpath.dirname(link.path), target))
    return link.with_segments(f"{link.protocol}://{path}")


def relative(target, start) -> str:
    return posixpath.relpath(target.path, start.path)


def _delete_if_unchanged(path, expected: str) -> None:
    bucket, key = _bucket_key(path)
    try:
        path.fs.call_s3("delete_object", Bucket=bucket, Key=key, IfMatch=expected)
    except OSError as exc:
        if not _lost_race(exc):
            raise _failed(path, exc) from exc


@contextlib.contextmanager
def lease(path, lease_s: float | None = None, poll_s: float = 0.05) -> Iterator[None]:
    """Hold the lease object `path` for the block (see the module docstring); LEASE_S by default.

    A holder killed inside the block delays the next writer of the same lock by up to `lease_s`.
    """
    lease_s = LEASE_S if lease_s is None else lease_s
    body = json.dumps({"holder": f"{socket.gethostname()}:{os.getpid()}", "token": uuid.uuid4().hex}).encode()
    seen: tuple[str | None, float] = (None, 0.0)  # (ETag of the lease someone else holds, since when)
    while (mine := _put_if(path, body, IfNoneMatch="*")) is None:
        held = etag(path)
        now = time.monotonic()
        if held != seen[0]:
            seen = (held, now)
        elif held is not None and now - seen[1] > lease_s:
            _delete_if_unchanged(path, held)  # a no-op when someone else took it over first
            continue
        time.sleep(poll_s * random.uniform(0.5, 1.5))
    try:
        yield
    finally:
        _delete_if_unchanged(path, mine)  # a no-op when it was taken over after the lease ran out

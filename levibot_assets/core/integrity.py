"""Stored files checked against their sha256: the one hash function and the one verification.

Two schemes rest on it. Model and release files are listed with their sha256 in the record that
goes with them (a metrics file, a release manifest) and are checked by `verify`, which returns the
bytes it hashed so that what is loaded is what was checked (checkpoints are pickles). Stored tables
carry their accepted sha256 in a checksum file beside them (`write_checked` / `read_checked`).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Mapping

from levibot_assets.core.atomic import atomic_write_bytes, atomic_write_text, read_bytes, read_text
from levibot_assets.core.layout import checksum_file

# What verify says of a listed file that is absent or whose bytes have another sha256.
MISSING, MISMATCH = "missing", "mismatch"


class DamagedFile(ValueError):
    """A stored file whose bytes have none of the sha256 recorded beside it (bit rot, a bad copy)."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(files: Mapping[str, tuple[Path, str | None]]) -> tuple[dict[str, bytes], dict[str, str]]:
    """Read each file {name: (path, sha256)} once: (bytes of those matching their sha256, problems).

    `problems` maps each other name, in the order given, to MISSING (absent or not a file) or
    MISMATCH. The bytes returned are the ones that were hashed, so a caller can use them without a
    second read that could see another file.
    """
    contents: dict[str, bytes] = {}
    problems: dict[str, str] = {}
    for name, (path, sha256) in files.items():
        try:
            data = read_bytes(path)
        except (FileNotFoundError, IsADirectoryError):
            problems[name] = MISSING
            continue
        if sha256_bytes(data) != sha256:
            problems[name] = MISMATCH
            continue
        contents[name] = data
    return contents, problems


# ----------------------------------------------------------------------------- a checksum file beside the data


def _accepted(path) -> list[str] | None:
    """The sha256 listed in the file's checksum file; None when it has none (written before checksums)."""
    try:
        return read_text(checksum_file(path), errors="replace").split()
    except FileNotFoundError:
        return None


def write_checked(path, data: bytes) -> Path:
    """Write `data` atomically, its sha256 in the checksum file beside it (layout.checksum_file).

    Two files cannot be replaced as one, so the checksum file is written first and lists the new
    sha256 and that of the file being replaced (when that one still verified). A writer killed
    between the two writes leaves the old file, which still matches: no kill leaves a file that its
    checksum refuses, locally or on an object store (one PUT each). Two writers of one partition at
    once write the same bytes (sources and tables.parquet_bytes are deterministic), hence the same sha256.
    """
    digests = [sha256_bytes(data)]
    try:
        old = read_bytes(path)
    except FileNotFoundError:
        old = None
    if old is not None:
        accepted = _accepted(path)
        if accepted is None or sha256_bytes(old) in accepted:
            digests.append(sha256_bytes(old))
    atomic_write_text(checksum_file(path), "\n".join(dict.fromkeys(digests)) + "\n")
    return atomic_write_bytes(path, data)


def read_checked(path) -> bytes:
    """The file's bytes after checking them against its checksum file; DamagedFile if they match none.

    The data is read before its checksum file (the reverse of the writer), so a reader racing one
    writer always finds the version it read listed; a second look covers a reader overtaken by two.
    A file without a checksum file (written before they existed) is returned as it is.
    """
    for _ in range(2):
        data = read_bytes(path)
        accepted = _accepted(path)
        if accepted is None or sha256_bytes(data) in accepted:
            return data
    raise DamagedFile(f"{path} is damaged: its sha256 is not the one recorded in {checksum_file(path).name}")

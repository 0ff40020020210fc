"""One release directory on disk: what it holds, how it is written, and the check that it is intact.

    releases/<date>/<SYMBOL>/<model files> + manifest.json   (sha256 of every file, metrics, decision)

A release is assembled in a staging directory (model files, then manifest.json last, each fsynced)
and put in place with one rename (an atomic renameat2 exchange when an older copy is there), so a
reader sees the old release or the new one, never a mix. On an object store (no rename) the files
are uploaded under their content, `<SYMBOL>/<sha256[:16]>/<name>`, never overwriting a file another
manifest lists, and the manifest PUT last is the one write that switches to the new release.
Checkpoints are pickles: models are only ever loaded from bytes whose sha256 matched the manifest
(`verify_release`; the loader, the listing, rollback and the quality rule all go through it or its
`check_files`, both resting on core.integrity.verify). The manifest is built from plain values, so
this module knows nothing of the decision that made the release.

Which release is in service, and the history of that, is release.deploy's concern.
"""
from __future__ import annotations

import ctypes
import errno
import json
import os
import platform
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

from levibot_assets.core import object_store
from levibot_assets.core.atomic import atomic_write_bytes, atomic_write_text, fsync_dir, read_text
from levibot_assets.core.integrity import MISSING, sha256_bytes, sha256_file, verify
from levibot_assets.core.layout import DataLayout
from levibot_assets.core.model_api import Classifier, load_from_bytes
from levibot_assets.core.records import json_text, utc_now


MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
LIBRARIES = (
    "levibot_assets", "numpy", "pandas", "pyarrow", "lightgbm", "scikit-learn", "optuna",
    "torch", "lightning", "pytorch-forecasting", "dagster",
)


class ReleaseError(RuntimeError):
    """A release cannot be written, found, verified or rolled back to; the message says why."""


# ----------------------------------------------------------------------------- versions


def library_versions() -> dict[str, str | None]:
    """Installed versions (read from package metadata: nothing heavy is imported)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


# ----------------------------------------------------------------------------- verify and load


def release_file(release_dir: Path, name: str, sha256: str | None) -> Path:
    """Where a release keeps the file `name`: beside the manifest, or under its hash on an object store."""
    if object_store.is_remote(release_dir):
        return release_dir / str(sha256)[:16] / name
    return release_dir / name


def manifest_version(manifest: Path | str) -> tuple | str | None:
    """Changes whenever a release is written again (a re-run of its date under an unchanged
    current/ link): its manifest's inode and mtime, or its ETag on an object store. The serving
    loader calls it before every prediction, so a local path may be given as a plain str."""
    if object_store.is_remote(manifest):
        return object_store.etag(manifest)
    try:
        stat = os.stat(manifest)
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def read_manifest(release_dir: Path) -> dict:
    path = release_dir / MANIFEST
    try:
        manifest = json.loads(read_text(path))
    except FileNotFoundError:
        raise ReleaseError(f"{release_dir} is not a release: {MANIFEST} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ReleaseError(f"{path} is not valid JSON ({exc}): the release is damaged") from None
    files = manifest.get("files")
    if not isinstance(files, dict) or not files or "model_type" not in manifest:
        raise ReleaseError(f"{path} lacks 'files' or 'model_type': the release is damaged")
    for name in files:
        if name != Path(name).name or name in ("", ".", "..", MANIFEST):
            raise ReleaseError(f"{path} lists a file name {name!r} outside the release directory")
    return manifest


def check_files(directory: Path, expected_sha256: Mapping[str, str | None]) -> tuple[dict[str, bytes], dict[str, str]]:
    """integrity.verify of the named files of a release directory (where release_file keeps them)."""
    return verify({name: (release_file(directory, name, sha256), sha256) for name, sha256 in expected_sha256.items()})


def verify_release(release_dir: Path) -> tuple[dict, dict[str, bytes]]:
    """The manifest and the bytes of every listed file, each checked against its sha256; else ReleaseError."""
    manifest = read_manifest(release_dir)
    contents, problems = check_files(release_dir, {name: info.get("sha256") for name, info in manifest["files"].items()})
    if problems:
        name, problem = next(iter(problems.items()))  # the first in manifest order
        if problem == MISSING:
            raise ReleaseError(f"{release_dir}: {name} listed in the manifest is missing")
        path = release_file(release_dir, name, manifest["files"][name].get("sha256"))
        raise ReleaseError(
            f"{path} does not match the sha256 in its manifest: the file was modified or damaged; refusing to load it"
        )
    return manifest, contents


def load_release(release_dir: Path) -> tuple[Classifier, dict]:
    """Load a release's model from the bytes that passed verification (a private copy, not the paths).

    Loading from a private copy closes the gap between checking a file and unpickling it.
    """
    manifest, contents = verify_release(release_dir)
    return load_from_bytes(manifest["model_type"], contents), manifest


def release_id(manifest: dict) -> str:
    """`<date>@<12 hex>`: one release, as history records it and the champion re-check compares it.

    The hash is of the parsed manifest, so the manifest a ServedModel loaded and the one read back
    from disk give the same id. The date alone is not enough: re-running a partition replaces
    releases/<date>/<SYMBOL> behind an unchanged current/ link with another model and manifest.
    """
    digest = sha256_bytes(json.dumps(manifest, sort_keys=True).encode("utf-8"))[:12]
    return f"{manifest.get('date')}@{digest}"


# ----------------------------------------------------------------------------- writing a release


def _exchange_paths(a: Path, b: Path) -> bool:
    """Atomically swap two directories (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(a))


def install_dir(staging: Path, final: Path) -> None:
    """Put a complete staging directory at `final` in one rename (replacing an older copy atomically).

    On an object store: upload every file the staged manifest lists under its hash (one already
    there is the same bytes), then the manifest, whose PUT is the switch.
    """
    if object_store.is_remote(final):
        manifest = (staging / MANIFEST).read_bytes()
        for name, info in json.loads(manifest)["files"].items():
            target = release_file(final, name, info["sha256"])
            if not target.exists():
                atomic_write_bytes(target, (staging / name).read_bytes())
        atomic_write_bytes(final / MANIFEST, manifest)
        shutil.rmtree(staging)
        return
    if not final.exists():
        os.rename(staging, final)
    elif _exchange_paths(staging, final):
        shutil.rmtree(staging)  # now holds the old copy
    else:  # no atomic exchange on this filesystem: a brief window where `final` is absent
        old = staging.with_name(staging.name + ".old")
        os.rename(final, old)
        os.rename(staging, final)
        shutil.rmtree(old)
    fsync_dir(final.parent)


def _remove_stale_staging(layout: DataLayout, symbol: str) -> None:
    """Staging dirs left by a crashed writer (callers hold the symbol lock, so none is live).

    On an object store staging is a local temporary directory, gone with its process's /tmp.
    """
    if layout.remote:
        return
    pattern = layout.release_staging_dir("*", symbol, "*").relative_to(layout.root)
    for stale in layout.root.glob(str(pattern)):
        shutil.rmtree(stale, ignore_errors=True)


def build_manifest(date: str, symbol: str, model_type: str, files: Mapping[str, str], record: Mapping[str, Any]) -> dict:
    """The manifest of a release: its files' sha256, what `record` says of it (decision, params,
    metrics, training data), the library versions and when it was written."""
    return {
        **record,
        "format": MANIFEST_FORMAT,
        "date": date,
        "symbol": symbol,
        "model_type": model_type,
        "files": {name: {"sha256": digest} for name, digest in sorted(files.items())},
        "libraries": library_versions(),
        "created_at": utc_now(),
    }


def stage_release(
    layout: DataLayout, date: str, symbol: str, model: Classifier | None, record: Mapping[str, Any]
) -> tuple[Path, str]:
    """Write the model's files then manifest.json into a staging directory, fsynced; (staging, its release_id).

    The caller holds the symbol lock and puts the staging directory in place with install_dir
    (deploy._change_service).
    """
    if model is None:
        raise ReleaseError(f"{date}|{symbol}: a released decision carries no model to write")
    _remove_stale_staging(layout, symbol)
    if layout.remote:
        staging = Path(tempfile.mkdtemp(prefix=f"levibot-release-{symbol}-"))
    else:
        staging = layout.release_staging_dir(date, symbol, f"{os.getpid()}-{os.urandom(4).hex()}")
        staging.mkdir(parents=True)
    try:
        written = [Path(p) for p in model.save(staging)]
        if not written:
            raise ReleaseError(f"{model.model_type}.save wrote no files")
        files = {p.name: sha256_file(p) for p in written}
        text = json_text(build_manifest(date, symbol, model.model_type, files, record))
        atomic_write_text(staging / MANIFEST, text)
        fsync_dir(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging, release_id(json.loads(text))

"""Atomic publication of numbered version directories.

TF Serving polls its base path every second and loads any child whose name parses as an
integer: a half-copied version gets loaded and fails. So each version is built in a
`.tmp-*` directory beside its final place (a name TF Serving ignores), fsynced, then
renamed in one step.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from exporter.errors import ExportError


def existing_versions(base: Path) -> list[int]:
    """Numeric child directories of `base`, as TF Serving would see them."""
    if not base.is_dir():
        return []
    return sorted(int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit())


def next_version(*bases: Path) -> int:
    """One more than the highest version present under any of `bases` (1 when none)."""
    return max((v for b in bases for v in existing_versions(b)), default=0) + 1


def _fsync_tree(root: Path) -> None:
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_writable_dir(path: Path) -> None:
    """Create `path` (and parents) or raise ExportError saying why it cannot be written."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(
            f"Cannot create output directory {path}: {exc.strerror}. "
            "Pass --out pointing at a writable location."
        ) from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise ExportError(
            f"Output directory {path} is not writable. Fix its permissions or pass another --out."
        )


@contextlib.contextmanager
def atomic_directory(final: Path) -> Iterator[Path]:
    """Yield a scratch directory that becomes `final` only if the block succeeds."""
    if final.exists():
        raise ExportError(
            f"{final} already exists. TF Serving never reloads a version it has loaded: "
            "publish under a new version number (omit --version to take the next one)."
        )
    created_parent = not final.parent.exists()
    ensure_writable_dir(final.parent)
    scratch = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    try:
        yield scratch
        _fsync_tree(scratch)
        os.rename(scratch, final)
        _fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        if created_parent:
            with contextlib.suppress(OSError):  # leave it if anything else landed there
                final.parent.rmdir()
        raise


def atomic_write_bytes(final: Path, data: bytes) -> None:
    """Write a file by temp-file + fsync + rename, so readers never see a partial file."""
    ensure_writable_dir(final.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{final.name}-", dir=final.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise

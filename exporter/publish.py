"""Crash-safe publication of an export's version directories and files, readable by any user.

TF Serving polls its base path every second and loads any child whose name parses as an
integer: a half-copied version gets loaded and fails. So everything an export publishes is
staged beside its final place under a `.tmp-*` name TF Serving ignores, fsynced, given the
modes the umask asks for (tempfile's private 0700/0600 would hide it from a server running as
another user, as Kubernetes runs it), then renamed in one step.

A staged entry's name carries our marker, host and pid, and its writer holds an exclusive
`flock` on it until it is published, so the next export can sweep what a crashed (`kill -9`)
one left behind and never touch what a live one is still writing. Directories an export had
to create are removed again if it fails: a failed export leaves the tree exactly as it was.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import secrets
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from exporter.errors import OutputError, UsageError

MARKER = "frozen-scalars"
STALE_AFTER_S = 24 * 3600.0  # when liveness cannot be proven either way (pid reused, other host)
_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"
_OURS = re.compile(
    rf"^\.tmp-(?P<final>.+)\.{MARKER}\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.[0-9a-f]{{8}}$"
)
# What earlier releases staged with tempfile (`.tmp-<final>-<8 random chars>`): no owner to
# ask, so these count as stale only by age.
_LEGACY = re.compile(r"^\.tmp-(?P<final>.+)-[a-z0-9_]{8}$")


def existing_versions(base: Path) -> list[int]:
    """Numeric child directories of `base`, as TF Serving would see them."""
    if not base.is_dir():
        return []
    return sorted(int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit())


def next_version(*bases: Path) -> int:
    """One more than the highest version present under any of `bases` (1 when none)."""
    return max((v for b in bases for v in existing_versions(b)), default=0) + 1


def current_umask() -> int:
    """The process umask, read without changing it (Linux exposes it in /proc)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)  # no /proc: the only portable read is a set-and-restore
    os.umask(mask)
    return mask


def check_writable(path: Path) -> None:
    """Raise OutputError unless `path` exists as a writable directory or could be created.

    Creates nothing, so a later failure has no empty directory to clean up.
    """
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise OutputError(
            f"Cannot create output directory {path}: {probe} is not a directory. "
            "Pass --out pointing at a writable location."
        )
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputError(
            f"Cannot create output directory {path}: {probe} is not writable. "
            "Fix its permissions or pass another --out."
        )


# errno -> (what happened, what to do); TensorFlow's file writers report the same conditions
# as OpErrors whose message carries the C library's text (strerror), so both are read.
_OUTPUT_FAILURES = {
    errno.ENOSPC: "No space left on device",
    errno.EDQUOT: "Disk quota exceeded",
    errno.EFBIG: "File too large",
    errno.EACCES: "Permission denied",
    errno.EPERM: "Operation not permitted",
    errno.EROFS: "Read-only file system",
}
_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def _free_bytes(path: Path) -> int:
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def output_failure(exc: BaseException, out: Path, needed: int) -> OutputError | None:
    """The fix-it OutputError for a write that failed because of the output location (disk
    full, quota, permissions, read-only), or None when `exc` (and its causes) is another error.

    `needed` estimates the bytes the whole export writes, to say how much to free.
    """
    seen: BaseException | None = exc
    while seen is not None:
        code = getattr(seen, "errno", None)
        text = str(getattr(seen, "message", None) or seen)
        if code not in _OUTPUT_FAILURES:
            code = next((c for c, s in _OUTPUT_FAILURES.items() if s in text), None)
        if code is not None:
            break
        seen = seen.__cause__ or seen.__context__
    if seen is None or code is None:
        return None
    where = getattr(seen, "filename", None) or out
    if code in _FULL:
        free = _free_bytes(out)
        short = needed - free if needed > free else needed
        return OutputError(
            f"{_OUTPUT_FAILURES[code]} writing {where}: {_size(free)} are free there and the "
            f"export writes about {_size(needed)}; free {_size(short)} "
            "or pass another --out. Nothing was published."
        )
    return OutputError(
        f"{_OUTPUT_FAILURES[code]} writing {where}: fix the permissions of {out} or pass "
        "another --out. Nothing was published."
    )


def _size(n: int) -> str:
    """Decimal units, as `df -H` and disk vendors count: '980 KB', '13 MB', '2.1 GB'."""
    for unit, scale in (("GB", 10**9), ("MB", 10**6)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}" if n < 10 * scale else f"{n // scale} {unit}"
    return f"{-(-n // 1000)} KB"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publishable(root: Path, umask: int) -> None:
    """Give every entry under `root` the umask's modes (0755/0644 under umask 022), fsynced."""
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            path = Path(dirpath, name)
            if path.is_symlink():  # chmod would follow it out of the tree
                continue
            executable = path.stat().st_mode & 0o100
            path.chmod((0o777 if executable else 0o666) & ~umask)
            _fsync(path)
        Path(dirpath).chmod(0o777 & ~umask)
        _fsync(Path(dirpath))


def _owner_gone(path: Path, match: re.Match[str]) -> bool:
    """True when no live export can be writing `path` (call with its flock held)."""
    try:
        age = time.time() - path.lstat().st_mtime
    except FileNotFoundError:
        return False
    if "pid" not in match.groupdict() or match["host"] != _HOST:
        return age > STALE_AFTER_S
    try:
        os.kill(int(match["pid"]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, owned by another user
        pass
    return age > STALE_AFTER_S  # the pid is alive: reused by another process, or ours


def sweep_stale(directory: Path) -> list[Path]:
    """Remove what crashed exports staged in `directory`; return what was removed.

    Only names we stage are considered, and only those whose writer is gone: its flock
    released (the kernel drops it when a process dies, even on SIGKILL) and its pid dead,
    or, where that cannot be told, older than STALE_AFTER_S.
    """
    removed: list[Path] = []
    if not directory.is_dir():
        return removed
    for entry in sorted(directory.iterdir()):
        match = _OURS.match(entry.name) or _LEGACY.match(entry.name)
        if match is None:
            continue
        try:
            fd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:  # vanished meanwhile, or a symlink: not ours
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live export holds it
            if not _owner_gone(entry, match):
                continue
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
        finally:
            os.close(fd)
    return removed


@dataclass
class _Staged:
    final: Path
    scratch: Path
    fd: int  # holds the flock until published or removed
    is_dir: bool
    previous: bytes | None = None  # a file's content before publication, to undo it
    published: bool = False


class Publication:
    """Stage directories and files, then publish all of them on success or none on failure.

    Use as a context manager. On a clean exit, staged directories are published last-staged
    first (as nested `with` blocks would: the ONNX twin before the SavedModel that TF Serving
    polls for), then staged files in staging order. If anything fails (in the block or while
    publishing), every staged entry is removed, published ones are taken back, and the
    directories it created are removed: the tree is left as it was.
    """

    def __init__(self) -> None:
        self._staged: list[_Staged] = []
        self._created: list[Path] = []
        self._umask = current_umask()

    def _prepare(self, final: Path) -> Path:
        missing = []
        parent = final.parent
        while not parent.exists():
            missing.append(parent)
            parent = parent.parent
        try:
            for directory in reversed(missing):
                directory.mkdir()
                self._created.append(directory)
        except OSError as exc:
            raise OutputError(
                f"Cannot create output directory {final.parent}: {exc.strerror}. "
                "Pass --out pointing at a writable location."
            ) from exc
        sweep_stale(final.parent)
        token = secrets.token_hex(4)
        return final.parent / f".tmp-{final.name}.{MARKER}.{_HOST}.{os.getpid()}.{token}"

    def directory(self, final: Path) -> Path:
        """An empty scratch directory that becomes `final` when the publication commits."""
        if final.exists():
            raise UsageError(
                f"{final} already exists. TF Serving never reloads a version it has loaded: "
                "publish under a new version number (omit --version to take the next one)."
            )
        scratch = self._prepare(final)
        scratch.mkdir()
        fd = os.open(scratch, os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._staged.append(_Staged(final, scratch, fd, is_dir=True))
        return scratch

    def file(self, final: Path, data: bytes) -> None:
        """Stage `data` to replace (or create) the file `final` when the publication commits."""
        scratch = self._prepare(final)
        fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 & ~self._umask)
        fcntl.flock(fd, fcntl.LOCK_EX)
        previous = final.read_bytes() if final.is_file() else None
        self._staged.append(_Staged(final, scratch, fd, is_dir=False, previous=previous))
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)

    def __enter__(self) -> Publication:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None:
                self._commit()
        except BaseException:
            self._rollback()
            raise
        if exc_type is not None:
            self._rollback()

    def _commit(self) -> None:
        dirs = [s for s in reversed(self._staged) if s.is_dir]
        for staged in dirs + [s for s in self._staged if not s.is_dir]:
            if staged.is_dir:
                _publishable(staged.scratch, self._umask)
            if staged.is_dir and staged.final.exists():  # rename() would replace an empty one
                raise OutputError(f"{staged.final} appeared while exporting: another export?")
            os.replace(staged.scratch, staged.final)
            staged.published = True
            _fsync(staged.final.parent)
        for staged in self._staged:
            os.close(staged.fd)
            staged.fd = -1

    def _rollback(self) -> None:
        for staged in reversed(self._staged):
            if staged.fd >= 0:
                os.close(staged.fd)
            if staged.published and staged.is_dir:
                os.replace(staged.final, staged.scratch)
            elif staged.published and staged.previous is not None:
                staged.scratch.write_bytes(staged.previous)
                os.replace(staged.scratch, staged.final)
            elif staged.published:
                staged.final.unlink()
            if staged.is_dir:
                shutil.rmtree(staged.scratch, ignore_errors=True)
            else:
                staged.scratch.unlink(missing_ok=True)
        for directory in reversed(self._created):
            with contextlib.suppress(OSError):  # not empty: a concurrent export wrote there
                directory.rmdir()


def atomic_write_bytes(final: Path, data: bytes) -> None:
    """Publish one file: readers see the old content or the new one, never a partial file."""
    with Publication() as publication:
        publication.file(final, data)

"""Files that appear complete or not at all and survive a power cut once written, with the permissions a plain
``open()`` would give them; an error naming the path when one cannot be written; a file's hash (what caches of
models are keyed by).

A file is written under a temporary name beside its final one (``.NAME.XXXXXXXX.partial``), flushed and fsynced,
renamed, and then its folder is fsynced: after a power cut the final name holds the old content or the whole new
one (a rename without the fsyncs can leave an empty file under it). The temporary is locked (``flock``) while
its writer lives, so the next writer of the same name can tell a killed writer's leftovers (lock free: removed)
from another writer's work in progress (locked: left alone)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import hashlib
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from runtime.signals import deferred

_UMASK: int | None = None
EXIT_CANNOT_WRITE = 73  # sysexits.h's EX_CANTCREAT: every command's exit code when its output cannot be written
_REASONS = {
    errno.ENOSPC: "no space left on device (free some space and run again)",
    errno.EDQUOT: "disk quota exceeded (free some space and run again)",
    errno.EFBIG: "the file is too large for this file system (write it to another one)",
    errno.EROFS: "the file system is read-only (write somewhere else)",
    errno.EACCES: "permission denied (write somewhere you may, or change the folder's permissions)",
    errno.EPERM: "permission denied (write somewhere you may, or change the folder's permissions)",
}
FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # what a write into a file already open fails with


class WriteError(OSError):
    """An output that could not be written (its ``errno`` kept): the message names the path as the user gave it
    and what to do, e.g. ``cannot write out.wav: no space left on device (free some space and run again)``."""

    def __str__(self) -> str:
        return f"cannot write {self.filename}: {_REASONS.get(self.errno, self.strerror)}"

    @classmethod
    def of(cls, exc: OSError, path: str | os.PathLike) -> WriteError:
        return exc if isinstance(exc, WriteError) else cls(exc.errno, exc.strerror, str(path))


def umask() -> int:
    """The process's umask (read without changing it where Linux allows)."""
    global _UMASK
    if _UMASK is None:
        try:
            with open("/proc/self/status", encoding="ascii") as status:
                _UMASK = next(int(line.split()[1], 8) for line in status if line.startswith("Umask:"))
        except (OSError, StopIteration, ValueError):
            _UMASK = os.umask(0o022)
            os.umask(_UMASK)
    return _UMASK


def sha256(path: str | os.PathLike) -> str:
    """The hex SHA-256 of a file's bytes, read a megabyte at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_folder(path: Path) -> None:
    """A clear error naming the user's path when the folder it is to be written in does not exist."""
    parent = Path(path).parent
    if not parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: the folder {parent} does not exist")


def fsync_path(path: str | os.PathLike) -> None:
    """fsync a file or a folder by name: a folder's fsync makes the names created or renamed in it durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(path: str | os.PathLike) -> None:
    """``mkdir -p``, each folder it makes recorded durably in its parent."""
    path = Path(path)
    if path.is_dir():
        return
    make_dirs(path.parent)
    with contextlib.suppress(FileExistsError):
        path.mkdir()
        fsync_path(path.parent)


_reached: dict[str, int] = {}


def fault_point(name: str) -> None:
    """A test hook where a durable write can be cut: with ``VITS_EDGE_KILL_AT=NAME:N`` in the environment the
    process SIGKILLs itself the Nth time it reaches the point ``NAME`` (``N`` alone: the Nth point of any name).
    The points: ``write`` (the temporary holds its data, not yet synced), ``replace`` (synced, just before a
    rename), ``renamed`` (renamed, its folder not yet synced), ``append`` (before a line is appended to a
    log such as the batch job's manifest). Unset, as everywhere but in tests, it costs one lookup."""
    spec = os.environ.get("VITS_EDGE_KILL_AT")
    if not spec:
        return
    point, _, nth = spec.rpartition(":")
    if point and point != name:
        return
    key = point or "*"
    _reached[key] = _reached.get(key, 0) + 1
    if _reached[key] == int(nth):
        os.kill(os.getpid(), signal.SIGKILL)


def _locked(fd: int) -> bool:
    """Lock a new temporary for its writer's life; False when a writer cleaning up took it first (and removed it)."""
    fcntl.flock(fd, fcntl.LOCK_EX)
    return os.fstat(fd).st_nlink > 0


def remove_stale(path: str | os.PathLike) -> None:
    """Remove what killed writers of ``path`` left beside it: ``.NAME.*.partial`` files and folders whose lock is
    free (a live writer holds its own)."""
    path = Path(path)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.partial"):
        try:
            fd = os.open(stale, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                os.unlink(stale)
        except OSError:  # BlockingIOError: its writer is alive
            pass
        finally:
            os.close(fd)


def temporary_dir(path: str | os.PathLike) -> tuple[Path, int]:
    """A new locked temporary folder beside ``path`` (its stale ones removed first), and the descriptor that
    holds its lock: close it when the folder is renamed or removed."""
    path = Path(path)
    try:
        remove_stale(path)
        while True:
            tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
            fd = os.open(tmp, os.O_RDONLY)
            if _locked(fd):
                os.chmod(tmp, 0o777 & ~umask())  # as mkdir would make it, not mkdtemp's owner-only 0700
                return tmp, fd
            os.close(fd)
    except OSError as exc:
        raise WriteError.of(exc, path) from exc


class AtomicFile:
    """A binary file on a locked temporary name beside ``path``: ``commit()`` makes it ``path``, durably;
    ``abort()`` removes it. ``mkstemp`` creates it readable by its owner only; it gets ``0666 & ~umask`` as
    ``open()`` would, so a voice copied to a device, or a WAV served by another user, can be read. Errors are
    ``WriteError``s naming ``path``."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        check_folder(self.path)
        try:
            remove_stale(self.path)
            while True:
                fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".partial", dir=self.path.parent)
                if _locked(fd):
                    break
                os.close(fd)
            self.tmp = Path(tmp)
            os.fchmod(fd, 0o666 & ~umask())
            self.file: BinaryIO = os.fdopen(fd, "wb")
        except OSError as exc:
            raise WriteError.of(exc, self.path) from exc

    def commit(self) -> None:
        try:
            fault_point("write")
            self.file.flush()
            os.fsync(self.file.fileno())
            fault_point("replace")
            os.replace(self.tmp, self.path)
            self.file.close()  # (the lock goes with it)
            fault_point("renamed")
            fsync_path(self.path.parent)
        except OSError as exc:
            self.abort()
            raise WriteError.of(exc, self.path) from exc
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        with contextlib.suppress(OSError):  # (a full disk fails the flush of what is left: nothing to keep)
            self.file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """An ``AtomicFile`` as a block: ``path`` appears, complete and durable, only if the block succeeds. A full
    disk inside the block (a write's ENOSPC, which names no file) is a ``WriteError`` naming ``path``."""
    out = None
    try:
        # a SIGTERM or SIGINT while the temporary is made (``interruptible``) is raised once ``out`` holds it
        with deferred():
            out = AtomicFile(path)
        yield out.file
    except OSError as exc:
        if out is None:
            raise
        out.abort()
        if exc.errno in FULL and exc.filename in (None, str(out.tmp)):
            raise WriteError.of(exc, out.path) from exc
        raise
    except BaseException:
        if out is not None:
            out.abort()
        raise
    out.commit()

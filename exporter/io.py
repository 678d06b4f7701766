"""Writing outputs so that a failure, a kill or a power cut never leaves half a model behind."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from exporter.errors import ExportError
from runtime.files import FULL, WriteError, atomic_open, fault_point, fsync_path, make_dirs, temporary_dir


@contextlib.contextmanager
def atomic_dir(out_dir: Path, *, force: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``out_dir``; on success it becomes ``out_dir``, durably: every file
    and folder in it is fsynced before the rename, and the parent folder after it.

    On any exception the temporary folder is deleted and ``out_dir`` is left as it was; a killed process's
    temporary folders are removed by the next writer of ``out_dir`` (see runtime/files.py). An existing
    ``out_dir`` is refused unless ``force``; with ``force`` it is replaced only after the new one is complete
    (moved aside to ``.NAME.old`` for the moment between two renames: a kill there leaves it, and the next
    writer puts it back first). A full disk is a ``WriteError`` naming ``out_dir``.
    """
    out_dir = Path(out_dir)
    old = out_dir.with_name(f".{out_dir.name}.old")
    if old.is_dir() and not out_dir.exists():  # killed between the two renames of a --force: the folder it had
        os.replace(old, out_dir)
    shutil.rmtree(old, ignore_errors=True)
    if out_dir.exists() and not force:
        raise ExportError(f"{out_dir} already exists: choose another folder or pass --force to replace it.")
    try:
        make_dirs(out_dir.parent)
    except OSError as exc:
        raise WriteError.of(exc, out_dir) from exc
    tmp, lock = temporary_dir(out_dir)
    try:
        try:
            yield tmp
        except OSError as exc:
            if exc.errno not in FULL:
                raise
            name = str(exc.filename or "")
            raise WriteError.of(exc, out_dir / name[len(str(tmp)) + 1:] if name.startswith(str(tmp)) else out_dir) \
                from exc
        try:
            fault_point("write")
            for folder, _, files in os.walk(tmp, topdown=False):
                for name in files:
                    fsync_path(os.path.join(folder, name))
                fsync_path(folder)
            if out_dir.exists():
                fault_point("replace")
                os.replace(out_dir, old)
                fault_point("replace")
                os.replace(tmp, out_dir)
                shutil.rmtree(old, ignore_errors=True)
            else:
                fault_point("replace")
                os.replace(tmp, out_dir)
            fault_point("renamed")
            fsync_path(out_dir.parent)
        except OSError as exc:
            raise WriteError.of(exc, out_dir) from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.is_dir() and not out_dir.exists():  # failed between the two renames: the old folder goes back
            os.replace(old, out_dir)
        raise
    finally:
        os.close(lock)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder (runtime.files.atomic_open)."""
    with atomic_open(path) as f:
        f.write(data)


@contextlib.contextmanager
def staging(dst: Path) -> Iterator[Path]:
    """A locked temporary folder beside ``dst`` to build it in (``.NAME.*.partial``: a killed run's are removed by
    the next writer of ``dst``), removed at the end; ``publish`` a finished file from it."""
    tmp, lock = temporary_dir(dst)
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        os.close(lock)


def publish(src: Path, dst: Path) -> None:
    """The finished file ``src`` (in a ``staging`` folder beside ``dst``) becomes ``dst``, durably: synced, renamed,
    its folder synced. A full disk is a ``WriteError`` naming ``dst``."""
    try:
        fault_point("write")
        fsync_path(src)
        fault_point("replace")
        os.replace(src, dst)
        fault_point("renamed")
        fsync_path(Path(dst).parent)
    except OSError as exc:
        raise WriteError.of(exc, dst) from exc

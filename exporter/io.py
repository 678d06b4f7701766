"""Writing outputs so that a failure never leaves half a model behind."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from exporter.errors import ExportError
from runtime.files import atomic_open, umask


@contextlib.contextmanager
def atomic_dir(out_dir: Path, *, force: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``out_dir``; on success it becomes ``out_dir``.

    On any exception the temporary folder is deleted and ``out_dir`` is left as it was.
    An existing ``out_dir`` is refused unless ``force``; with ``force`` it is replaced only
    after the new one is complete.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not force:
        raise ExportError(f"{out_dir} already exists: choose another folder or pass --force to replace it.")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    os.chmod(tmp, 0o777 & ~umask())  # as mkdir would make it, not mkdtemp's owner-only 0700
    try:
        yield tmp
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder."""
    with atomic_open(path) as f:
        f.write(data)

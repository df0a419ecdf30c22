"""The one way the project writes a file: all of it under its name, or none of it.

The data goes to a temporary file beside the target, named for this process and thread and a random
token (two writers of the same name never share a temporary), is flushed to the disk (``fsync``),
then renamed over the target (``os.replace``, atomic on one filesystem) and the folder is synced so
the rename itself survives a crash. A reader, a crash or a kill at any moment sees the old file or
the new one, never a mix; a failed write leaves the old file and no temporary.
"""
from __future__ import annotations

import errno
import os
import secrets
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

TEMP_MARK = ".tmp-"   # temporaries are ".<name>.tmp-<pid>-<thread>-<token>"


def _fsync(path: Path, directory: bool = False) -> None:
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:   # a folder cannot be opened on some systems (Windows): nothing more to sync there
        if directory:
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:   # some filesystems refuse to sync a folder; the file itself is synced
            raise
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write (by any library: h5py, numpy, onnx, safetensors);
    when the block succeeds it is synced and moved onto ``path``, else removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}-{threading.get_ident()}-{secrets.token_hex(4)}")
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(path.parent, directory=True)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> Path:
    """``Path.write_text``, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def check_writable(path: str | Path) -> None:
    """Fail now, naming ``path``, if a file cannot be written there (before hours of work, not after).
    Creates nothing: a missing folder is judged by the nearest one that exists (made at the write)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; give a file name")
    existing = next(folder for folder in path.absolute().parents if folder.exists())
    if not existing.is_dir():
        raise NotADirectoryError(f"cannot write {path}: {existing} is a file, not a folder")
    try:
        if existing == path.absolute().parent:
            fd, probe = tempfile.mkstemp(prefix=f".{path.name}{TEMP_MARK}", dir=existing)
            os.close(fd)
            os.unlink(probe)
        elif not os.access(existing, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(existing))
    except OSError as exc:
        raise PermissionError(f"cannot write {path}: {exc.strerror or exc}") from None

"""Writing results so that nothing half-written is ever left: a temporary name, then an atomic rename."""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import IO, Callable, Iterator

import numpy as np


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """A hidden temporary path beside ``path`` (ending in ``.part`` + ``suffix``, for writers that choose the
    format by the name) for the block to write; on success it is renamed to ``path``, else removed (an OSError
    from the block then names ``path``)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part" + suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename in (None, tmp):  # a full disk's write names no file
            exc.filename = str(path)
        raise


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO]:
    """Open a hidden temporary file beside ``path``; on success rename it to ``path``, else remove it."""
    with atomic_path(path) as tmp, open(tmp, mode, **({} if "b" in mode else {"newline": ""})) as handle:
        yield handle


def write_segs(path: str | os.PathLike[str], segs: np.ndarray) -> None:
    """Save ``segs`` as a compressed .npz at ``path`` atomically."""
    with atomic_file(path) as handle:
        np.savez_compressed(handle, segs=segs)


def write_with(path: str | os.PathLike[str], writer: Callable[[IO], None], mode: str = "wb") -> None:
    """Run ``writer(handle)`` into a temporary file and rename it to ``path``."""
    with atomic_file(path, mode) as handle:
        writer(handle)


def check_writable_dir(folder: str | os.PathLike[str]) -> None:
    """Create ``folder`` if needed and prove it takes a file; raise OSError with the reason if not."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():  # mkdir would say only "File exists"
        raise NotADirectoryError(errno.ENOTDIR, f"{folder} is a file, not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".medsam-lite-write-test."):
        pass


def unwritable(folder: str | os.PathLike[str]) -> str | None:
    """``check_writable_dir`` as an answer: why ``folder`` cannot take a file (``why_not_written``'s words,
    without the name of the probe file), or None when it can (it is made if missing)."""
    try:
        check_writable_dir(folder)
    except OSError as exc:
        return why_not_written(exc)
    return None


STALE_AFTER_S = 3600  # a write under way takes seconds, an export about half a minute: older temporaries are dead


def remove_stale(folder: str | os.PathLike[str], pattern: str = ".*.part*") -> list[Path]:
    """Remove the temporaries (files or folders named by ``pattern``; default: ``atomic_path``'s) that a process
    killed outright (SIGKILL, the out-of-memory killer) left in ``folder``, those older than ``STALE_AFTER_S``;
    the paths removed."""
    removed, now = [], time.time()
    for path in Path(folder).glob(pattern):
        with contextlib.suppress(OSError):  # gone meanwhile, or not ours to remove: left as it is
            if now - path.lstat().st_mtime > STALE_AFTER_S:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
                removed.append(path)
    return removed


def disk_full(exc: OSError) -> bool:
    """No space left on the device, or the user's quota used up: the operator's to free, not a fault."""
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)


def why_not_written(exc: OSError) -> str:
    """Why a write failed, in words a user can act on: a full disk or quota by name, else the system's reason."""
    if exc.errno == errno.ENOSPC:
        return "no space left on device"
    if exc.errno == errno.EDQUOT:
        return "disk quota exceeded"
    return exc.strerror or str(exc)

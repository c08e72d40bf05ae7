"""Safe writes: atomic files, strict JSON, output folders checked before the work, and folder locks.

A file is written to a temporary file beside the target and renamed over it, so a reader sees
the old file or the new one, never half of one. New files get the user's umask (0644 by default).
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .errors import InvalidInputError

__all__ = ["atomic_path", "write_json", "write_bytes", "dumps_strict", "to_strict_json", "check_writable_dir",
           "check_free_space", "folder_lock", "file_mode", "describe_os_error"]

_MODE: int | None = None


def file_mode() -> int:
    """Permission bits a plain ``open(path, "w")`` would give a new file (0666 less the umask)."""
    global _MODE
    if _MODE is None:
        mask = os.umask(0)
        os.umask(mask)
        _MODE = 0o666 & ~mask
    return _MODE


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s directory; on success it replaces ``path``.

    On any exception the temporary file is removed and ``path`` is untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp_path, file_mode())  # mkstemp makes 0600
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def to_strict_json(obj: Any) -> Any:
    """``obj`` with NaN and infinities replaced by ``None`` (JSON has no such numbers) and NumPy values as Python's."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: to_strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_strict_json(v) for v in obj]
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    return to_strict_json(_default(obj))


def dumps_strict(obj: Any, **kwargs: Any) -> str:
    """JSON text that any JSON parser accepts: non-finite numbers become ``null``."""
    return json.dumps(to_strict_json(obj), allow_nan=False, **kwargs)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented, strict JSON (NaN/inf as null), atomically."""
    write_bytes(path, (dumps_strict(obj, indent=2) + "\n").encode())


def describe_os_error(e: OSError) -> str:
    """``strerror: filename`` of an OSError, one line."""
    what = e.strerror or type(e).__name__
    return f"{what}: {e.filename}" if e.filename else what


def check_writable_dir(folder: str | os.PathLike, *, what: str = "--out") -> Path:
    """Create ``folder`` (and parents) if needed and prove a file can be written there; one-line error if not."""
    folder = Path(folder)
    up = folder
    while not up.exists() and up.parent != up:
        up = up.parent
    if up.exists() and not up.is_dir():
        raise InvalidInputError(f"{what} {folder}: {up} is a file, not a folder; choose another path")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".kdistill-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise InvalidInputError(f"{what} {folder} is not a writable folder ({e.strerror or type(e).__name__}); "
                                "choose another one") from None
    return folder


def check_free_space(folder: str | os.PathLike, need_bytes: int, *, what: str = "--out") -> None:
    """Refuse before the work when ``folder``'s disk has less than ``need_bytes`` free."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return  # cannot tell (some network filesystems): the writes themselves will say
    if free < need_bytes:
        raise InvalidInputError(f"{what} {folder}: only {free / 2**20:.1f} MiB free on its disk, the run needs about "
                                f"{need_bytes / 2**20:.0f} MiB; free some space or choose another folder")


def _lock_file(target: Path) -> Path:
    return target.parent / f".{target.name}.kdistill-lock"


@contextlib.contextmanager
def folder_lock(target: str | os.PathLike, *, what: str = "--out") -> Iterator[None]:
    """Hold an exclusive lock on the folder ``target`` (a lock file beside it) for the block.

    A second process asking for the same folder gets a one-line :class:`InvalidInputError` at once
    instead of waiting. The lock dies with the process, so a killed run never leaves it stuck.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: no locking
        yield
        return
    target = Path(target)
    lock = _lock_file(target)
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, file_mode())
        except OSError as e:
            raise InvalidInputError(f"{what} {target}: cannot create its lock file ({describe_os_error(e)}); choose a "
                                    "folder whose parent is writable") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            try:
                pid = lock.read_text().strip() or "?"
            except OSError:
                pid = "?"
            raise InvalidInputError(f"{what} {target} is in use by another kdistill run (pid {pid}); wait for it to "
                                    "finish or choose another folder") from None
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder removed it between our open and flock: take the new one
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)
        os.close(fd)

"""Fetching one file over HTTP(S) with an md5 check and an atomic rename.

The file is streamed into a temporary file beside its destination, its md5 is
compared with the expected one, and only then is it moved into place with
``os.replace``; a failed or interrupted download never leaves a partial file
under the final name.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from ..errors import CorruptFileError, KDistillError

__all__ = ["md5_of", "fetch"]

_BLOCK = 1 << 20
_TIMEOUT_S = 60.0


def md5_of(path: str | os.PathLike[str]) -> str:
    """Hex md5 digest of a file, read in 1 MiB blocks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def _progress_bar(stack: ExitStack, label: str, total: int | None) -> Callable[[int], None]:
    """A rich progress bar entered on ``stack``; returns ``advance(nbytes)``."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    progress = stack.enter_context(
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            transient=False,
        )
    )
    task = progress.add_task(label, total=total)
    return lambda n: progress.advance(task, n)


def fetch(url: str, dest: str | os.PathLike[str], *, md5: str | None, progress: bool = False) -> Path:
    """Download ``url`` to ``dest`` unless a file with the right md5 is already there.

    Args:
      url: http(s) or file URL.
      dest: final path; its directory is created if needed.
      md5: expected hex digest; ``None`` skips the check (and always downloads).
      progress: show a rich progress bar on the terminal.

    Returns:
      ``dest`` as a Path.

    Raises:
      CorruptFileError: the downloaded bytes do not have the expected md5 (the
        temporary file is deleted, ``dest`` is left as it was).
      KDistillError: the server could not be reached or answered with an error.
    """
    dest = Path(dest)
    if md5 is not None and dest.is_file() and md5_of(dest) == md5:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with ExitStack() as stack:
            out = stack.enter_context(os.fdopen(fd, "wb"))
            try:
                response = stack.enter_context(urllib.request.urlopen(url, timeout=_TIMEOUT_S))
            except urllib.error.HTTPError as exc:
                raise KDistillError(
                    f"could not download {url}: the server answered HTTP {exc.code} {exc.reason}; "
                    f"check the URL, or copy the file by hand to {dest}"
                ) from exc
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                raise KDistillError(
                    f"could not download {url} ({reason}); check the internet connection, or "
                    f"copy the file by hand to {dest}"
                ) from exc
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            advance = _progress_bar(stack, dest.name, total) if progress else (lambda n: None)
            try:
                for block in iter(lambda: response.read(_BLOCK), b""):
                    out.write(block)
                    digest.update(block)
                    advance(len(block))
            except OSError as exc:
                raise KDistillError(
                    f"download of {url} broke off ({exc}); run the download again"
                ) from exc
        got = digest.hexdigest()
        if md5 is not None and got != md5:
            raise CorruptFileError(
                f"{url}: downloaded file has md5 {got}, expected {md5}; it was deleted, try "
                f"again later or copy the official file by hand to {dest}"
            )
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()
    return dest

"""Progress bars (rich) for long loops; silent unless asked for."""

from __future__ import annotations

import contextlib
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")

__all__ = ["progress_range", "track"]


def track(iterable: Iterable[T], *, total: int | None = None, description: str = "", enabled: bool = True) -> Iterator[T]:
    """Iterate with a rich progress bar on stderr when ``enabled`` (and a bar makes sense)."""
    if not enabled:
        yield from iterable
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        for item in iterable:
            yield item
            bar.advance(task)


def progress_range(start: int, stop: int, step: int, *, enabled: bool = False, description: str = "") -> Iterator[int]:
    """``range(start, stop, step)`` with a progress bar counting chunks."""
    r = range(start, stop, step)
    return track(r, total=len(r), description=description, enabled=enabled)


@contextlib.contextmanager
def status(message: str, *, enabled: bool = True):
    """A spinner with ``message`` while the block runs."""
    if not enabled:
        yield
        return
    from rich.console import Console

    with Console(stderr=True).status(message):
        yield

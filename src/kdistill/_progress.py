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


class _NoBar:
    def update(self, **fields) -> None:
        pass


@contextlib.contextmanager
def step_bar(total: int, *, description: str = "", completed: int = 0, enabled: bool = True):
    """A progress bar for optimisation loops; ``bar.update(loss=..., val=...)`` advances one step
    and shows the fields."""
    if not enabled:
        yield _NoBar()
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    progress = Progress(
        TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        console=Console(stderr=True), transient=True,
    )

    class _Bar:
        def update(self, **fields) -> None:
            info = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())
            progress.update(task, advance=1, info=info)

    with progress:
        task = progress.add_task(description, total=total, completed=completed, info="")
        yield _Bar()

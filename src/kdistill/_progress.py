"""Progress for long loops, silent unless asked for: a live rich bar on a terminal, plain lines on
stderr otherwise (a log file, a pipe, a cluster job), so logs show progress too."""

from __future__ import annotations

import contextlib
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")

__all__ = ["progress_range", "track"]


def _lines(iterable: Iterable[T], total: int | None, description: str, every: float) -> Iterator[T]:
    import sys
    import time

    start = last = time.perf_counter()
    done = 0
    for item in iterable:
        yield item
        done += 1
        now = time.perf_counter()
        if now - last >= every or (total is not None and done == total and now - start >= every):
            last = now
            of = f"/{total}" if total is not None else ""
            eta = (f"  eta {(total - done) * (now - start) / done:.0f}s" if total else "")
            print(f"{description} {done}{of}  elapsed {now - start:.0f}s{eta}", file=sys.stderr, flush=True)


def track(iterable: Iterable[T], *, total: int | None = None, description: str = "", enabled: bool = True,
          every: float = 10.0) -> Iterator[T]:
    """Iterate with a progress bar on stderr when ``enabled``: a rich bar on a terminal, otherwise a
    plain line every ``every`` seconds (nothing for loops shorter than that)."""
    import sys

    if not enabled:
        yield from iterable
        return
    if not sys.stderr.isatty():
        yield from _lines(iterable, total, description, every)
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("elapsed"),
        TimeElapsedColumn(),
        TextColumn("eta"),
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
    """A spinner with ``message`` while the block runs (on a terminal only: off a terminal stderr is
    kept for errors and the progress lines of long loops)."""
    import sys

    if not enabled or not sys.stderr.isatty():
        yield
        return
    from rich.console import Console

    with Console(stderr=True).status(message):
        yield


class _NoBar:
    def update(self, **fields) -> None:
        pass

    def note(self, step: int, **fields) -> None:
        pass


def _fields(fields: dict) -> str:
    """``loss 0.1234  val 81.8%``: validation accuracy in percent, as in the result tables."""
    return "  ".join(f"{k} {100 * v:.1f}%" if k == "val" else f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                     for k, v in fields.items())


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class _Rate:
    """Elapsed time and an ETA for a loop whose first step also compiles: the rate is measured from the end
    of the first step this process ran (so the first ETA is not inflated by compilation), and there is no
    ETA until a second step has run."""

    def __init__(self, total: int, completed: int):
        import time

        self._time = time.perf_counter
        self.total, self.done = total, completed
        self._start = self._time()
        self._first: tuple[float, int] | None = None  # (time, steps done) when the first step ended

    def step(self) -> None:
        self.done += 1
        if self._first is None:
            self._first = (self._time(), self.done)

    def text(self) -> str:
        now = self._time()
        out = f"elapsed {_clock(now - self._start)}"
        if self._first is not None and self.done > self._first[1] and now > self._first[0]:
            rate = (self.done - self._first[1]) / (now - self._first[0])
            out += f"  eta {_clock((self.total - self.done) / rate)}"
        elif self.done < self.total:
            out += "  eta (after the first step)"
        return out


class _LineBar:
    """Progress for logs (stderr not a terminal): a plain line every ``every`` seconds and at every
    validation, with step, loss, validation accuracy, elapsed time and an ETA."""

    def __init__(self, total: int, description: str, completed: int, every: float):
        import time

        self._time = time.perf_counter
        self.total, self.description, self.every = total, description, every
        self.rate = _Rate(total, completed)
        self._last = self._time()

    def update(self, **fields) -> None:
        import sys

        self.rate.step()
        now = self._time()
        if "val" not in fields and now - self._last < self.every and self.rate.done < self.total:
            return
        self._last = now
        print(f"{self.description} step {self.rate.done}/{self.total}  {_fields(fields)}  {self.rate.text()}",
              file=sys.stderr, flush=True)

    def note(self, step: int, **fields) -> None:
        """A line about ``step`` (e.g. the validation of the starting set, step 0) without advancing."""
        import sys

        print(f"{self.description} step {step}/{self.total}  {_fields(fields)}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def step_bar(total: int, *, description: str = "", completed: int = 0, enabled: bool = True, every: float = 10.0):
    """Progress for optimisation loops; ``bar.update(loss=..., val=...)`` advances one step.

    On a terminal: a live bar, with a line per validation left in the scrollback. Otherwise (a log
    file, a pipe, a cluster job): plain lines every ``every`` seconds and at each validation.
    ``bar.note(step, val=...)`` prints a line about a step without advancing (the starting set's validation).
    """
    import sys

    if not enabled:
        yield _NoBar()
        return
    if not sys.stderr.isatty():
        yield _LineBar(total, description, completed, every)
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn
    from rich.text import Text

    rate = _Rate(total, completed)

    class _Times(ProgressColumn):  # drawn at every refresh: the elapsed time runs on during a long step
        def render(self, task) -> Text:
            return Text(rate.text())

    progress = Progress(
        TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"), _Times(), console=Console(stderr=True), transient=True,
    )

    class _Bar:
        def update(self, **fields) -> None:
            rate.step()
            progress.update(task, advance=1, info=_fields(fields))
            if "val" in fields:  # stays in the scrollback above the bar
                progress.console.print(f"{description} step {rate.done}/{total}  {_fields(fields)}  {rate.text()}")

        def note(self, step: int, **fields) -> None:
            progress.console.print(f"{description} step {step}/{total}  {_fields(fields)}")

    with progress:
        task = progress.add_task(description, total=total, completed=completed, info="")
        yield _Bar()

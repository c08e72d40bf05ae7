"""What several commands share: one-line messages, --data-dir, --out, loading a dataset, the result table."""

from __future__ import annotations

import time
from pathlib import Path

import click

DATASET_HELP = "digits, mnist, fashion_mnist, cifar10, cifar100, svhn, or a path to an .npz of your own arrays"


def _one_line(s: str) -> str:
    return " ".join(s.split())


def _data_dir_option(f):
    return click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                        help="Where dataset files live (default: $KDISTILL_DATA, else ~/.cache/kdistill).")(f)


def _out_arg(value: str | None) -> Path | None:
    """--out as a Path; an empty string is refused (Path('') would be the current directory)."""
    from ..errors import InvalidInputError

    if value is None:
        return None
    if not value.strip():
        raise InvalidInputError("--out is empty; give a path such as runs/mnist-kip")
    return Path(value)


def _check_out(out: Path, force: bool) -> None:
    """Cheap checks of --out before any data is loaded (run_to_dir checks again under its lock)."""
    from ..runs import check_out_folder

    check_out_folder(out, force=force)


def _load_dataset(name: str, data_dir, download_: bool = False):
    from .._progress import status
    from ..data import load

    with status(f"loading {name}"):
        return load(name, data_dir=data_dir, download=download_)


def _timed_load(name, data_dir, download_: bool = False):
    """The dataset, and the seconds spent before loading it (``startup``: interpreter, imports, arguments)
    and loading it (``load_data``), for the summary's breakdown."""
    from .._machine import process_seconds

    startup = process_seconds()
    t = time.perf_counter()
    dataset = _load_dataset(name, data_dir, download_)
    timings = {"load_data": time.perf_counter() - t}
    if startup is not None:
        timings = {"startup": startup, **timings}
    return dataset, timings


def _print_table(rows: list[dict], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in rows[0]:
        table.add_column(col, justify="right" if col not in ("dataset", "method", "kernel") else "left")
    for r in rows:
        table.add_row(*[str(v) for v in r.values()])
    Console(width=max(Console().width, 130)).print(table)


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}%"


def summary_rows(summary: dict) -> list[dict]:
    """The short result table printed after a run."""
    sec = summary["seconds"]
    return [{
        "dataset": summary["dataset"],
        "method": summary["method"],
        "kernel": summary["kernel"],
        "ipc": summary["ipc"],
        "distilled acc": _pct(summary["test_accuracy"]) + (" (below random)" if summary.get("below_random") else ""),
        "random real acc": _pct((summary.get("baseline") or {}).get("test_accuracy")),
        "full-data acc": _pct(summary["full_test_accuracy"]),
        "distill s": f"{sec.get('distill', 0):.2f}",
        "total s": f"{sec.get('total', 0):.2f}",
    }]


def _parse_reg(value: str) -> float | str:
    from ..errors import InvalidInputError

    if value == "auto":
        return value
    try:
        return float(value)
    except ValueError:
        raise InvalidInputError(f"--reg must be 'auto' or a number, got {value!r}") from None

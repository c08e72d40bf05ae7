"""``kdistill download``, ``show``, ``demo`` and ``report``: files in, files out."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ._common import _check_out, _data_dir_option, _out_arg, _print_table, _timed_load, summary_rows


@click.command()
@click.argument("dataset")
@_data_dir_option
def download(dataset, data_dir):
    """Download a dataset's official files into --data-dir (needs internet; md5-checked)."""
    from .._atomic import check_writable_dir
    from ..data import download as _download
    from ..data import resolve_data_dir

    check_writable_dir(resolve_data_dir(data_dir), what="--data-dir")
    for p in _download(dataset, data_dir=data_dir, progress=True):
        click.echo(str(p))


@click.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False), required=True, callback=lambda c, p, v: _out_arg(v),
              help="PNG to write (a new file or an earlier PNG; never the distilled set itself).")
@click.option("--max-per-row", type=click.IntRange(1, 1000), default=20, show_default=True,
              help="Images per line; a class with more wraps onto further lines (every image is drawn).")
def show(file, out, max_per_row):
    """Draw a distilled set as a PNG grid, one row per class, in pixel space."""
    from .. import io
    from .._atomic import check_writable_dir
    from ..errors import InvalidInputError
    from ..report import image_grid

    if out.suffix.lower() != ".png":
        raise InvalidInputError(f"--out {out} must end in .png (show writes a PNG image)")
    if out.exists() and (out.resolve() in (file.resolve(), io.sidecar_path(file).resolve()) or out.is_dir()):
        raise InvalidInputError(f"--out {out} is the input or a folder; choose a new PNG path")
    if out.exists() and out.read_bytes()[:8] != b"\x89PNG\r\n\x1a\n":
        raise InvalidInputError(f"--out {out} exists and is not a PNG image; choose a new path (show only replaces "
                                "PNGs)")
    check_writable_dir(out.resolve().parent, what=f"--out {out}: its folder")
    ds = io.load(file)
    pixels = ds.to_pixels(ds.images)
    meta = ds.meta
    title = " ".join(str(meta[k]).split(":")[0] for k in ("dataset", "method", "kernel") if k in meta) or None
    ipc = meta.get("ipc") if isinstance(meta.get("ipc"), int) else None
    image_grid(pixels, ds.labels, out, class_names=meta.get("class_names"), max_per_row=max_per_row, title=title,
               ipc=ipc)
    click.echo(str(out))


DEMO = dict(dataset="mnist", method="analytic", ipc=1, kernel="fcnn")


def _check_demo_out(out: Path) -> None:
    """The demo replaces an earlier demo in --out, never another run."""
    from ..errors import InvalidInputError

    run_file = out / "run.json"
    if run_file.exists():
        try:
            doc = json.loads(run_file.read_text())
            cfg = doc["config"]
            is_demo = (doc["dataset"], cfg["method"], cfg["ipc"], cfg["kernel"]) == tuple(
                DEMO[k] for k in ("dataset", "method", "ipc", "kernel"))
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            is_demo = False
        if not is_demo:
            raise InvalidInputError(f"--out {out} holds another run, not an earlier demo; the demo replaces only its "
                                    "own: choose another --out")
    _check_out(out, force=True)


@click.command()
@click.option("--out", type=click.Path(file_okay=False), default="runs/demo", show_default=True,
              callback=lambda c, p, v: _out_arg(v),
              help="Output folder (an earlier demo there is replaced once the new one has succeeded).")
@_data_dir_option
def demo(out, data_dir):
    """The quick-start job: distil MNIST and print the result next to random real images and the full-data
    model."""
    from ..methods import RunConfig
    from ..runs import run_to_dir

    _check_demo_out(out)
    click.echo(f"kdistill demo: {DEMO['method']} method, {DEMO['kernel']} kernel, ipc {DEMO['ipc']} on "
               f"{DEMO['dataset']}")
    dataset, timings = _timed_load(DEMO["dataset"], data_dir)
    click.echo(f"loaded {dataset.name}: {dataset.x_train.shape[0]} train / {dataset.x_test.shape[0]} test "
               f"from {dataset.source}")
    config = RunConfig(method=DEMO["method"], ipc=DEMO["ipc"], kernel=DEMO["kernel"], options={"init": "noise"})
    _, summary = run_to_dir(out, dataset, config, dataset_ref=DEMO["dataset"], data_dir=data_dir, force=True,
                            progress=True, timings=timings)
    _print_table(summary_rows(summary), f"kdistill demo -> {out}")
    click.echo(f"weight cosine cos(W_S, W) = {summary['method_info']['weight_cosine']:.8f}; "
               f"images: {summary['figures']['distilled']}")


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
def report(run_dir):
    """Write RUN_DIR/report.html: distilled images, accuracies, timings and training curves in one file.
    A run writes it itself; this rewrites it (e.g. after copying or editing a run)."""
    from ..report import write_report

    click.echo(str(write_report(run_dir)))

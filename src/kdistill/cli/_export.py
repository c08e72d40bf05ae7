"""``kdistill export``: a distilled set in pixel space, for training scripts that do not use kdistill."""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import click
import numpy as np

from ._common import _out_arg

if TYPE_CHECKING:
    from ..io import DistilledSet

NAMES = ("images", "labels", "label_rows", "class_names")
"""The arrays an export holds: the keys of its ``.npz``, the files (``NAME.npy``) of its folder."""


def export_arrays(ds: DistilledSet, *, pixels: bool = True,
                  layout: str = "nhwc") -> tuple[dict[str, np.ndarray], str]:
    """The arrays of :data:`NAMES` for the distilled set ``ds`` and the layout they are in.

    ``images``: ``(m, h, w, c)`` (``layout="nhwc"``; ``c = 1`` for sets made from ``(n, h, w)`` arrays) or
    ``(m, c, h, w)`` (``"nchw"``); a flat set, made from ``(n, d)`` rows given to :func:`kdistill.distill`
    (``meta["input_shape"]`` of one number), as its ``(m, d)`` rows whatever the layout (returned as ``"flat"``). With ``pixels`` float32 in pixel space
    (:meth:`~kdistill.io.DistilledSet.to_pixels`, not clipped), else the stored images exactly (float32; float64
    for analytic sets). ``labels``: ``(m,)`` int64, the column of each label row's maximum (an index into
    ``class_names``). ``label_rows``: ``(m, k)``, the stored rows exactly (one-hot, centred or learned; float32,
    float64 for analytic sets). ``class_names``: ``(k,)`` unicode, the sidecar's ``class_names``, else its
    ``classes`` as text, else ``0 .. k-1``.
    """
    images = ds.to_pixels(ds.images).astype(np.float32) if pixels else np.asarray(ds.images)
    shape = ds.meta.get("input_shape")
    if shape is not None and len(shape) == 1:
        images, layout = images.reshape(images.shape[0], -1), "flat"
    elif layout == "nchw":
        images = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    names = ds.meta.get("class_names") or [str(c) for c in ds.classes]
    return {
        "images": images,
        "labels": np.argmax(ds.labels, axis=1).astype(np.int64),
        "label_rows": np.asarray(ds.labels),
        "class_names": np.array([str(n) for n in names], dtype=np.str_),
    }, layout


def _check_out(file: Path, out: Path, fmt: str, force: bool) -> None:
    """Refuse, before anything is written, an --out that would replace the input, another kind of file, a folder
    holding anything but an earlier export, or (without --force) an earlier export."""
    from .. import io as kio
    from ..errors import InvalidInputError

    if fmt == "npz" and out.suffix.lower() != ".npz":
        raise InvalidInputError(f"--out {out} must end in .npz (--format npz writes one file; --format npy writes a "
                                "folder of .npy files)")
    if fmt == "npy" and out.suffix.lower() in (".npz", ".npy"):
        raise InvalidInputError(f"--out {out}: --format npy writes a folder of .npy files; give a folder name such as "
                                f"{out.with_suffix('')}")
    if not os.path.lexists(out):
        return
    if out.resolve() in (file.resolve(), kio.sidecar_path(file).resolve()):
        raise InvalidInputError(f"--out {out} is the input; choose a new path")
    if fmt == "npz":
        if out.is_dir() or not out.is_file():
            raise InvalidInputError(f"--out {out} exists and is not a file; choose a new .npz path")
    else:
        if not out.is_dir() or out.is_symlink():
            raise InvalidInputError(f"--out {out} exists and is not a folder; choose a new folder")
        other = sorted(p.name for p in out.iterdir() if p.name not in {f"{n}.npy" for n in NAMES})
        if other:
            raise InvalidInputError(f"--out {out} holds files an export does not write ({', '.join(other[:3])}"
                                    f"{', ...' if len(other) > 3 else ''}); export only replaces an earlier export: "
                                    "choose a new folder")
        if not any(out.iterdir()):
            return  # an empty folder: filled, nothing replaced
    if not force:
        raise InvalidInputError(f"--out {out} exists; --force replaces it")


def _npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def _write_npz(out: Path, arrays: dict[str, np.ndarray]) -> list[Path]:
    from .._atomic import write_bytes

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    write_bytes(out, buf.getvalue())
    return [out]


def _write_folder(out: Path, arrays: dict[str, np.ndarray]) -> list[Path]:
    """The arrays as ``out/NAME.npy``, all or none: written into a new folder beside ``out``, which then takes
    its place (an earlier export is moved aside first and removed once the new one is in place)."""
    from .._atomic import write_bytes

    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    aside = None
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(stage, 0o777 & ~umask)  # what a plain mkdir gives (mkdtemp makes 0700)
        for name, a in arrays.items():
            write_bytes(stage / f"{name}.npy", _npy_bytes(a))
        if os.path.lexists(out):
            aside = out.parent / f".{out.name}.{os.getpid()}.old"
            os.rename(out, aside)
        try:
            os.rename(stage, out)
        except BaseException:
            if aside is not None:
                os.rename(aside, out)  # the earlier export is back whole
                aside = None
            raise
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
    return [out / f"{name}.npy" for name in arrays]


@click.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(), required=True, callback=lambda c, p, v: _out_arg(v),
              help="Where to write: an .npz file (--format npz), or a folder for the .npy files (--format npy).")
@click.option("--pixels/--no-pixels", default=True, show_default=True,
              help="Images in pixel space (float32, not clipped; what a network trains on), or as stored: in the "
                   "preprocessed space the kernel saw.")
@click.option("--format", "fmt", type=click.Choice(["npz", "npy"]), default="npz", show_default=True,
              help="npz: one file with the arrays images, labels, label_rows, class_names; npy: a folder with "
                   "images.npy, labels.npy, label_rows.npy, class_names.npy.")
@click.option("--layout", type=click.Choice(["nhwc", "nchw"]), default="nhwc", show_default=True,
              help="Axis order of images: nhwc (JAX, TensorFlow) or nchw (PyTorch). A set made from flat (n, d) rows "
                   "is written as (m, d) rows; nchw is refused for it.")
@click.option("--force", is_flag=True, help="Replace an earlier export at --out (never the input, never a folder "
                                            "that holds other files).")
def export(file, out, pixels, fmt, layout, force):
    """Write a distilled set as plain arrays that np.load reads without kdistill (and without pickle).

    images: the images, in pixel space unless --no-pixels; labels: int64 class indices (the argmax of each label
    row) into class_names; label_rows: the stored label rows as they are (one-hot, centred or learned soft
    labels); class_names: the class of each label column, as text. The file is written atomically (a folder
    all at once); an existing --out is replaced only with --force.
    """
    from .. import io as kio
    from ..data import Preprocessor
    from ..errors import InvalidInputError

    ds = kio.load(file)
    _check_out(file, out, fmt, force)
    arrays, used = export_arrays(ds, pixels=pixels, layout=layout)
    if used == "flat" and layout == "nchw":
        raise InvalidInputError(f"{file} holds flat rows (input shape {list(ds.meta['input_shape'])}), not images: "
                                "--layout nchw does not apply; leave it out to write (m, d) rows")
    written = _write_npz(out, arrays) if fmt == "npz" else _write_folder(out, arrays)
    images, rows = arrays["images"], arrays["label_rows"]
    kind = Preprocessor.from_arrays(ds.arrays).kind
    space = (("pixel space" + (" (zca: whitening undone, each image rescaled to [0, 1])" if kind == "zca" else ""))
             if pixels else f"preprocessed space ({kind})")
    click.echo(f"wrote {out}" + ("" if fmt == "npz" else f": {', '.join(p.name for p in written)}"))
    click.echo(f"images {tuple(images.shape)} {images.dtype} {used} in {space}, values {float(images.min()):.4g} .. "
               f"{float(images.max()):.4g}; labels {tuple(arrays['labels'].shape)} int64; label_rows "
               f"{tuple(rows.shape)} {rows.dtype}; class_names {len(arrays['class_names'])}")

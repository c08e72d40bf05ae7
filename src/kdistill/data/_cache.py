"""A cache of decoded dataset arrays: an official file is decoded once, not at every load.

Decoding a dataset's official files is slow: MNIST's ``mnist.pkl.gz`` takes about 1.2 s
(gunzip, unpickle, the ``k/256`` check), four IDX ``.gz`` files about 0.25 s, a CIFAR
archive or SVHN ``.mat`` more. After a source is decoded and checked,
:func:`cached_decode` saves what the decoder returned (images ``(n, h, w, c) uint8``,
labels ``(n,) int64``, before any conversion to float) in an uncompressed ``.npz``
and reads that back on later loads (MNIST: 55 MB, about 0.05 s).

Nothing in the cache is trusted:

- **Key.** A format version (:data:`CACHE_VERSION`), the dataset name, and for every
  source file its absolute path, size, ``mtime_ns``, ``ctime_ns`` and inode. The key's
  text is stored inside the file and must match exactly; a changed, replaced or touched
  source therefore misses and is decoded again.
- **Location.** ``<data_dir>/.cache/<name>-<hash of the paths>-<hash of the key>.npz``
  (see ``resolve_data_dir``); writing a new file removes the older ones of the same
  source, so there is one per source.
- **Reading.** Through :func:`~kdistill._npz.open_npz`, which checks every
  ``.npy`` header against the zip directory before decoding a byte; then the members
  must be exactly the expected ones, with the expected dtypes and shapes,
  :meth:`~kdistill._npz.NpzArchive.read` checks sizes and the zip CRC, and the
  labels must be class indices of the dataset.
- **Fallback.** Any problem with the cache (missing, corrupt, truncated, forged, wrong
  shapes, unreadable, a read-only folder, a full disk) means the source is decoded as
  if there were no cache, and a good cache file is written (atomically, with
  :func:`~kdistill._atomic.atomic_path`) over a bad one. A cache problem is never an
  error; errors in the source itself are raised by the decoder as before.
- **Off switch.** ``KDISTILL_NO_CACHE=1`` (any value but empty or ``0``): the cache is
  neither read nor written.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .._atomic import atomic_path
from .._npz import NpyHeader, open_npz

__all__ = ["CACHE_VERSION", "NO_CACHE_ENV", "CACHE_FOLDER", "DecodedArrays", "cache_enabled", "cached_decode"]

CACHE_VERSION = 1
"""Bumped whenever what a decoder returns changes; old files then miss and are replaced."""

NO_CACHE_ENV = "KDISTILL_NO_CACHE"
"""Environment variable: set to ``1`` to neither read nor write the cache."""

CACHE_FOLDER = ".cache"
"""The cache's folder inside the data directory."""

_ARRAYS = ("x_train", "y_train", "x_test", "y_test")
_STALE_TMP_S = 3600.0  # a temporary file this old was left by a killed writer


class DecodedArrays(NamedTuple):
    """What a source's decoder returns, and what the cache stores.

    Attributes:
      x_train: ``(n, h, w, c) uint8`` pixels.
      y_train: ``(n,) int64`` labels.
      x_test: ``(n_test, h, w, c) uint8`` pixels.
      y_test: ``(n_test,) int64`` labels.
      class_names: the class names when the files hold them (CIFAR), else ``None``.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...] | None = None


def cache_enabled() -> bool:
    """False when ``$KDISTILL_NO_CACHE`` is set to anything but empty or ``0``."""
    return os.environ.get(NO_CACHE_ENV, "").strip() in ("", "0")


def _digest(text: str, n: int) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:n]


def _key(name: str, files: Sequence[Path]) -> tuple[str, str]:
    """``(key, stem)``: the full key text and the file-name stem naming the source (its paths only)."""
    paths = [os.path.abspath(p) for p in files]
    lines = [f"kdistill decoded-dataset cache v{CACHE_VERSION}", f"dataset {name}"]
    for path in paths:
        st = os.stat(path)
        lines.append(f"file {path!r} size {st.st_size} mtime_ns {st.st_mtime_ns} ctime_ns {st.st_ctime_ns} "
                     f"ino {st.st_ino}")
    stem = f"{name}-{_digest(chr(0).join(paths), 12)}"
    return "\n".join(lines), stem


def _fits(specs: dict[str, tuple[tuple[int, ...], np.dtype]], image_shape: tuple[int, int, int],
          names: bool) -> bool:
    """Whether ``{key: (shape, dtype)}`` is exactly a cache file's layout: ``x_* (n, *image_shape) uint8``,
    ``y_* (n,) int64``, ``key (m,) uint8`` and, when ``names``, ``class_names (k,)`` unicode."""
    wanted = {*_ARRAYS, "key", *(("class_names",) if names else ())}
    if set(specs) != wanted:
        return False
    for split in ("train", "test"):
        (x_shape, x_dtype), (y_shape, y_dtype) = specs[f"x_{split}"], specs[f"y_{split}"]
        if x_dtype != np.uint8 or len(x_shape) != 4 or tuple(x_shape[1:]) != tuple(image_shape):
            return False
        if y_dtype != np.int64 or tuple(y_shape) != (x_shape[0],):
            return False
    key_shape, key_dtype = specs["key"]
    if key_dtype != np.uint8 or len(key_shape) != 1:
        return False
    if names:
        names_shape, names_dtype = specs["class_names"]
        if names_dtype.kind != "U" or len(names_shape) != 1:
            return False
    return specs["x_train"][0][0] > 0


def _header_specs(headers: dict[str, NpyHeader]) -> dict[str, tuple[tuple[int, ...], np.dtype]] | None:
    if any(h.fortran_order for h in headers.values()):
        return None
    return {k: (h.shape, h.dtype) for k, h in headers.items()}


def _labels_fit(arrays: dict[str, np.ndarray], num_classes: int) -> bool:
    return all(not y.size or (int(y.min()) >= 0 and int(y.max()) < num_classes)
               for y in (arrays["y_train"], arrays["y_test"]))


def _read(path: Path, key: str, image_shape: tuple[int, int, int], names: bool,
          num_classes: int | None) -> DecodedArrays | None:
    """The arrays in the cache file ``path`` if it is a good one for ``key``, else ``None`` (never raises)."""
    try:
        if not path.is_file():
            return None
        with open_npz(path, hint="it is a cache file; kdistill rebuilds it") as npz:
            specs = _header_specs(npz.headers)
            if specs is None or not _fits(specs, image_shape, names):
                return None
            if npz.read("key").tobytes() != key.encode("utf-8", "surrogateescape"):
                return None
            arrays = {k: npz.read(k) for k in _ARRAYS}
            class_names = tuple(str(v) for v in npz.read("class_names").tolist()) if names else None
        k = len(class_names) if class_names is not None else num_classes
        if k is not None and not _labels_fit(arrays, k):
            return None
    except Exception:  # noqa: BLE001 - any problem with the cache means: decode the source
        return None
    return DecodedArrays(**arrays, class_names=class_names)


def _write(path: Path, key: str, arrays: DecodedArrays) -> None:
    """Save ``arrays`` and ``key`` to ``path`` atomically, uncompressed (may raise OSError, ValueError)."""
    members = {k: np.ascontiguousarray(getattr(arrays, k)) for k in _ARRAYS}
    members["key"] = np.frombuffer(key.encode("utf-8", "surrogateescape"), dtype=np.uint8)
    if arrays.class_names is not None:
        members["class_names"] = np.array(arrays.class_names, dtype=str)
        if tuple(str(v) for v in members["class_names"].tolist()) != tuple(arrays.class_names):
            raise ValueError("class names do not survive a NumPy string array (trailing NULs)")
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **members)  # type: ignore[arg-type]


def _prune(folder: Path, stem: str, keep: Path) -> None:
    """Remove the other cache files of the same source (older keys) and old leftover temporary files."""
    now = time.time()
    for other in folder.glob(f"{stem}-*.npz"):
        if other != keep:
            with contextlib.suppress(OSError):
                other.unlink()
    for tmp in folder.glob(f".{stem}-*.tmp"):
        with contextlib.suppress(OSError):
            if now - tmp.stat().st_mtime > _STALE_TMP_S:
                tmp.unlink()


def cached_decode(
    folder: Path,
    *,
    name: str,
    files: Sequence[Path],
    decode: Callable[[], DecodedArrays],
    image_shape: tuple[int, int, int],
    names: bool = False,
    num_classes: int | None = None,
) -> DecodedArrays:
    """``decode()``, or the same arrays from the cache in ``folder`` when it holds a good copy.

    Args:
      folder: the cache folder (``<data_dir>/.cache``); created when a file is written.
      name: the dataset's name (part of the key and of the file name).
      files: every source file ``decode`` reads; their paths, sizes and times are the key.
      decode: reads and checks the source files; its errors propagate unchanged.
      image_shape: ``(h, w, c)`` every cached image must have.
      names: whether ``decode`` returns ``class_names`` (they are cached too).
      num_classes: labels read from the cache must lie in ``0..num_classes-1`` (with
        ``names``, ``len(class_names)``), as the decoder checks them.

    Returns:
      the :class:`DecodedArrays`, equal (same values, dtypes and shapes) whether read from
      the cache or decoded. A cache that is missing, damaged, stale or unwritable is never
      an error (see the module docstring); ``KDISTILL_NO_CACHE=1`` skips the cache.
    """
    if not cache_enabled():
        return decode()
    try:
        key, stem = _key(name, files)
    except OSError:
        return decode()  # a source file cannot be stat'ed: the decoder says what is wrong
    path = Path(folder) / f"{stem}-{_digest(key, 16)}.npz"
    hit = _read(path, key, image_shape, names, num_classes)
    if hit is not None:
        return hit
    arrays = decode()
    try:
        specs = {k: (getattr(arrays, k).shape, getattr(arrays, k).dtype) for k in _ARRAYS}
        specs["key"] = ((1,), np.dtype(np.uint8))
        if names:
            if arrays.class_names is None:
                return arrays
            specs["class_names"] = ((len(arrays.class_names),), np.dtype("U1"))
        # Write only a layout that _read accepts, and only when no source file changed while it was decoded.
        if _fits(specs, image_shape, names) and _key(name, files)[0] == key:
            _write(path, key, arrays)
            _prune(path.parent, stem, keep=path)
    except Exception:  # noqa: BLE001 - no cache (read-only folder, full disk, ...) is not an error
        pass
    return arrays

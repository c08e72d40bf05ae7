"""The :class:`Dataset` container and loading a user's own arrays from ``.npz``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DatasetNotFoundError, InvalidInputError
from .._npz import check_memory, open_npz

__all__ = ["Dataset", "load_arrays", "dataset_from_arrays", "pixels_to_unit", "check_labels", "check_dataset"]

_REQUIRED = ("x_train", "y_train", "x_test", "y_test")


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """A labelled image dataset split into train and test, ready for the numerical core.

    Attributes:
      name: short name (``"mnist"``, or the file stem for user arrays).
      x_train: ``(n, h, w, c) float32`` pixels in ``[0, 1]``.
      y_train: ``(n,) int64`` labels in ``[0, k)``.
      x_test: ``(n_test, h, w, c) float32`` pixels in ``[0, 1]``.
      y_test: ``(n_test,) int64`` labels in ``[0, k)``.
      class_names: ``k >= 2`` human-readable class names.
      source: where the data were loaded from (a path, ``"scikit-learn"``, ...).

    Construction checks the contract (:func:`check_dataset`): 4-D float images of one
    shape, finite; 1-D integer labels, one per image, in ``[0, k)``, at least two classes
    in ``y_train``; at least one training image. The test set may be empty (no test accuracy).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    source: str

    def __post_init__(self) -> None:
        check_dataset(self)

    @property
    def num_classes(self) -> int:
        """``k``, the number of classes (``len(class_names)``)."""
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(h, w, c)`` of every image."""
        h, w, c = self.x_train.shape[1:]
        return int(h), int(w), int(c)

    def __repr__(self) -> str:
        h, w, c = self.image_shape
        return (
            f"Dataset(name={self.name!r}, train={len(self.y_train)}, test={len(self.y_test)}, "
            f"image_shape=({h}, {w}, {c}), num_classes={self.num_classes}, source={self.source!r})"
        )


def _describe(a: Any) -> str:
    if isinstance(a, np.ndarray):
        return f"a {a.dtype} array of shape {a.shape}"
    return f"a {type(a).__name__}"


def _count_nonfinite(x: np.ndarray, *, rows: int = 4096) -> int:
    """Number of NaN/inf values in ``x``, counted in blocks of rows (no full-size temporary)."""
    return sum(int(x[i : i + rows].size - np.count_nonzero(np.isfinite(x[i : i + rows])))
               for i in range(0, x.shape[0], rows))


def check_dataset(ds: Dataset) -> None:
    """Raise InvalidInputError unless ``ds`` keeps the :class:`Dataset` contract (see there).

    Called by ``Dataset.__init__``; each message names the array and what is wrong with it.
    """
    where = f"Dataset {ds.name!r}"
    names = ds.class_names
    if not isinstance(names, tuple) or not all(isinstance(v, str) for v in names):
        raise InvalidInputError(f"{where}: class_names must be a tuple of strings, got {_describe(names)}")
    for split in ("train", "test"):
        x, y = getattr(ds, f"x_{split}"), getattr(ds, f"y_{split}")
        if not isinstance(x, np.ndarray) or x.ndim != 4 or x.dtype.kind != "f":
            raise InvalidInputError(
                f"{where}: x_{split} must be an (n, h, w, c) float array of pixels, got {_describe(x)}"
            )
        if not isinstance(y, np.ndarray) or y.ndim != 1 or y.dtype.kind not in "iu":
            raise InvalidInputError(
                f"{where}: y_{split} must be an (n,) integer array of class indices, got {_describe(y)}"
            )
        if x.shape[0] != y.shape[0]:
            raise InvalidInputError(
                f"{where}: x_{split} has {x.shape[0]} images but y_{split} has {y.shape[0]} labels; they must "
                "match one to one"
            )
    if ds.x_train.shape[0] == 0:
        raise InvalidInputError(f"{where}: x_train is empty; give at least one training image")
    if 0 in ds.x_train.shape[1:]:
        raise InvalidInputError(f"{where}: images of shape {ds.x_train.shape[1:]} (h, w, c) hold no pixels")
    if ds.x_train.shape[1:] != ds.x_test.shape[1:]:
        raise InvalidInputError(
            f"{where}: train images are {ds.x_train.shape[1:]} but test images are {ds.x_test.shape[1:]} "
            "(h, w, c); they must be the same"
        )
    k = len(names)
    for key in ("y_train", "y_test"):
        y = getattr(ds, key)
        if y.size and (int(y.min()) < 0 or int(y.max()) >= k):
            bad = int(y.min()) if int(y.min()) < 0 else int(y.max())
            raise InvalidInputError(
                f"{where}: {key} holds label {bad} but there are {k} classes (class_names); labels must be 0..{k - 1}"
            )
    counts = np.bincount(ds.y_train.astype(np.int64, copy=False), minlength=k)
    if k < 2 or np.count_nonzero(counts) < 2:
        only = int(np.argmax(counts)) if k else 0
        label = f"label {only}" + (f", {names[only]!r}" if k and names[only] != str(only) else "")
        raise InvalidInputError(f"{where}: only one class ({label}) in y_train; distillation needs at least 2 classes")
    for key in ("x_train", "x_test"):
        bad = _count_nonfinite(getattr(ds, key))
        if bad:
            raise InvalidInputError(
                f"{where}: {key} contains {bad} NaN or infinite values; remove or replace them first"
            )


def pixels_to_unit(x: np.ndarray, *, what: str) -> np.ndarray:
    """Turn image pixels into ``float32`` in ``[0, 1]``.

    ``uint8`` (or any integer array with values in ``0..255``) is divided by 255;
    floating arrays must already lie in ``[0, 1]`` and be finite. ``what`` names the
    array in error messages.
    """
    x = np.asarray(x)
    if x.dtype == np.uint8:
        out = x.astype(np.float32)
        out /= np.float32(255.0)
        return out
    if x.dtype == np.bool_ or not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise InvalidInputError(
            f"{what} has dtype {x.dtype}; give pixels as uint8 0..255 or float in [0, 1]"
        )
    if x.size == 0:
        return x.astype(np.float32)
    if np.issubdtype(x.dtype, np.integer):
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or hi > 255:
            raise InvalidInputError(
                f"{what} is an integer array with values in [{lo}, {hi}]; give pixels as 0..255 "
                "(uint8) or as floats in [0, 1]"
            )
        out = x.astype(np.float32)
        out /= np.float32(255.0)
        return out
    finite = np.isfinite(x)
    if not finite.all():
        bad = int(x.size - np.count_nonzero(finite))
        raise InvalidInputError(
            f"{what} contains {bad} NaN or infinite values; remove or replace them before loading"
        )
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise InvalidInputError(
            f"{what} has float values in [{lo:.4g}, {hi:.4g}]; float pixels must be in [0, 1] "
            "(divide 0..255 data by 255; kdistill standardises the data itself)"
        )
    return x.astype(np.float32)


def check_labels(y: np.ndarray, *, what: str, num_classes: int | None = None) -> np.ndarray:
    """Validate class labels and return them as ``(n,) int64``.

    Accepts ``(n,)`` or ``(n, 1)`` arrays of integers (floats are accepted only
    when every value is a whole number); negative labels, or labels ``>= num_classes``
    when that is given, raise InvalidInputError naming the array ``what``.
    """
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise InvalidInputError(
            f"{what} has shape {y.shape}; labels must be a 1-D array of class indices "
            "(not one-hot)"
        )
    if np.issubdtype(y.dtype, np.floating):
        if not np.all(np.isfinite(y)) or not np.array_equal(y, np.round(y)):
            raise InvalidInputError(
                f"{what} holds non-integer values; labels must be integer class indices 0..k-1"
            )
    elif not np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_:
        raise InvalidInputError(
            f"{what} has dtype {y.dtype}; labels must be integer class indices 0..k-1"
        )
    if y.size and y.dtype.kind in "uf" and float(y.max()) >= 2.0**53:
        raise InvalidInputError(
            f"{what} holds label {y.max().item():g}, far too large for a class index; labels must be class "
            "indices 0..k-1"
        )
    y = y.astype(np.int64)
    if y.size and y.min() < 0:
        raise InvalidInputError(
            f"{what} holds negative labels (min {int(y.min())}); labels must be class indices 0..k-1"
        )
    if num_classes is not None and y.size and y.max() >= num_classes:
        raise InvalidInputError(
            f"{what} holds label {int(y.max())} but there are only {num_classes} classes; "
            "labels must be class indices 0..k-1"
        )
    return y


def _images(x: np.ndarray, *, what: str) -> np.ndarray:
    """``(n, h, w)`` or ``(n, h, w, c)`` -> ``(n, h, w, c) float32`` in ``[0, 1]``."""
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise InvalidInputError(
            f"{what} has shape {x.shape}; images must be (n, h, w) or (n, h, w, c)"
        )
    return pixels_to_unit(x, what=what)


_SAVE_HINT = "save the dataset with numpy.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)"


def _hwc(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(shape[1:]) + (1,) if len(shape) == 3 else tuple(shape[1:])


def _check_specs(specs: Mapping[str, tuple[tuple[int, ...], np.dtype]], source: str) -> None:
    """Every check that needs only shapes and dtypes, so it runs on ``.npy`` headers before any
    data are decoded (and again on arrays given directly). ``specs``: ``{key: (shape, dtype)}``
    for the four required arrays and, when present, ``class_names``."""
    for key in ("x_train", "x_test"):
        shape, dtype = specs[key]
        if dtype.kind not in "iuf":
            raise InvalidInputError(
                f"{source}: {key} has dtype {dtype}; images must be real numbers: uint8 0..255 or float in [0, 1]"
            )
        if len(shape) not in (3, 4):
            raise InvalidInputError(
                f"{source}: {key} has shape {tuple(shape)}; images must be (n, h, w) or (n, h, w, c)"
            )
        if 0 in shape[1:]:
            raise InvalidInputError(
                f"{source}: {key} has shape {tuple(shape)}, images with no pixels; images must be (n, h, w) or "
                "(n, h, w, c) with h, w, c >= 1"
            )
    for key in ("y_train", "y_test"):
        shape, dtype = specs[key]
        if dtype.kind not in "iuf":
            raise InvalidInputError(
                f"{source}: {key} has dtype {dtype}; labels must be integer class indices 0..k-1"
            )
        if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
            raise InvalidInputError(
                f"{source}: {key} has shape {tuple(shape)}; labels must be a 1-D array of class indices "
                "(not one-hot)"
            )
    if "class_names" in specs:
        shape, dtype = specs["class_names"]
        if len(shape) != 1 or dtype.kind not in "US":
            raise InvalidInputError(
                f"{source}: class_names is {dtype} {tuple(shape)}; give a 1-D array of strings"
            )
    for split in ("train", "test"):
        n, m = specs[f"x_{split}"][0][0], specs[f"y_{split}"][0][0]
        if n != m:
            raise InvalidInputError(
                f"{source}: x_{split} has {n} images but y_{split} has {m} labels; they must match one to one"
            )
    if specs["x_train"][0][0] == 0:
        raise InvalidInputError(f"{source}: x_train is empty; give at least one training image")
    if specs["x_test"][0][0] == 0:
        raise InvalidInputError(
            f"{source}: x_test is empty; give at least one test image (kdistill measures the distilled set's "
            "accuracy on the test set)"
        )
    train, test = _hwc(specs["x_train"][0]), _hwc(specs["x_test"][0])
    if train != test:
        raise InvalidInputError(
            f"{source}: train images are {train} but test images are {test} (h, w, c); they must be the same"
        )


def _ranges(values: np.ndarray, *, limit: int = 3) -> str:
    """Sorted distinct ints -> ``"0..9, 99"`` (at most ``limit`` runs, then ``...``)."""
    runs: list[tuple[int, int]] = []
    for v in values.tolist():
        if runs and v == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], v)
        else:
            runs.append((v, v))
    text = [f"{a}" if a == b else (f"{a}, {b}" if b == a + 1 else f"{a}..{b}") for a, b in runs[:limit]]
    return ", ".join(text) + (", ..." if len(runs) > limit else "")


def _gaps(present: np.ndarray) -> list[tuple[int, int]]:
    """Runs ``(lo, hi)`` of labels in ``0..max`` missing from the sorted distinct ``present``."""
    out, prev = [], -1
    for v in present.tolist():
        if v > prev + 1:
            out.append((prev + 1, v - 1))
        prev = v
    return out


def _check_classes(y_train: np.ndarray, y_test: np.ndarray, names: tuple[str, ...] | None, source: str) -> int:
    """Labels must be ``0..k-1`` with every class in ``y_train``, ``k >= 2``, test labels among the
    training ones and one class name per class; returns ``k``. Each message names the real cause."""
    present = np.unique(y_train)
    if present.size < 2:
        raise InvalidInputError(
            f"{source}: only one class (label {int(present[0])}) in y_train; distillation needs at least 2 classes"
        )
    top = int(present[-1])
    if names is not None:
        for key, y in (("y_train", y_train), ("y_test", y_test)):
            if y.size and int(y.max()) >= len(names):
                raise InvalidInputError(
                    f"{source}: labels go up to {int(y.max())} but class_names has only {len(names)} entries "
                    f"({key} has label {int(y.max())}; labels must be 0..{len(names) - 1}); fix the stray labels "
                    "or give one name per class"
                )
    if present.size != top + 1:
        gaps = _gaps(present)
        first_lo = gaps[0][0]
        missing = sum(hi - lo + 1 for lo, hi in gaps)
        above = present[present > first_lo]
        if first_lo > 0 and missing > above.size:  # a few stray labels far above the real ones
            count = int(np.count_nonzero(np.isin(y_train, above)))
            raise InvalidInputError(
                f"{source}: y_train has label {_ranges(above)} on {count} image(s) but the other labels are "
                f"{_ranges(present[present < first_lo])} (labels must be 0..k-1 with every class present); fix "
                "or drop the stray labels"
            )
        runs = [f"{lo}" if lo == hi else f"{lo}..{hi}" for lo, hi in gaps[:3]] + (["..."] if len(gaps) > 3 else [])
        raise InvalidInputError(
            f"{source}: y_train skips label {', '.join(runs)} (labels must be 0..k-1 with every class present); "
            f"relabel the {present.size} classes as 0..{present.size - 1}"
        )
    if y_test.size and int(y_test.max()) > top:
        bad = int(y_test.max())
        count = int(np.count_nonzero(y_test > top))
        raise InvalidInputError(
            f"{source}: y_test has label {bad}, which never occurs in y_train (labels 0..{top}); a class needs "
            f"training images: drop the {count} test image(s) with labels above {top} or add training images of "
            "those classes"
        )
    if names is not None and len(names) != top + 1:
        raise InvalidInputError(
            f"{source}: class_names has {len(names)} names but the labels have {top + 1} classes (y_train uses "
            f"0..{top}); give one name per class"
        )
    return top + 1


def load_arrays(path: str | os.PathLike[str], *, name: str | None = None) -> Dataset:
    """Load a user's own dataset from an ``.npz`` file.

    The file holds ``x_train``, ``y_train``, ``x_test``, ``y_test`` and optionally
    ``class_names`` (a 1-D string array). Images may be ``(n, h, w)`` or
    ``(n, h, w, c)``, ``uint8`` 0..255 or float in ``[0, 1]``; labels are integer
    class indices ``0..k-1``, not remapped, with every class present in ``y_train``
    and ``k >= 2``; ``k = len(class_names)`` when given, else ``max label + 1``
    (names default to ``"0"..``). The test set may not be empty.

    Shapes, dtypes, the sizes each array header declares and the memory the load needs
    are checked from the ``.npy`` headers before any data are decoded; nothing is unpickled.

    Raises:
      DatasetNotFoundError: the file does not exist.
      CorruptFileError / UnsafeFileError: not a readable npz, a header that lies about its
        size / holds pickled objects.
      InvalidInputError: a missing array, NaN/inf, mismatched shapes, bad labels, too big.
    """
    path = Path(path)
    if not path.exists():
        raise DatasetNotFoundError(
            f"{path}: no such file; give the path of an .npz holding x_train, y_train, x_test, y_test"
        )
    source = str(path)
    wanted = (*_REQUIRED, "class_names")
    with open_npz(path, hint=_SAVE_HINT) as npz:
        headers = npz.headers
        missing = [k for k in _REQUIRED if k not in headers]
        if missing:
            raise InvalidInputError(
                f"{source}: missing array(s) {', '.join(missing)} (found: {', '.join(sorted(headers)) or 'none'}); "
                "the file needs x_train, y_train, x_test, y_test"
            )
        _check_specs({k: (h.shape, h.dtype) for k, h in headers.items() if k in wanted}, source)
        need = sum(headers[k].nbytes for k in wanted if k in headers)
        need += sum(5 * headers[k].size + 8 * headers[k.replace("x", "y")].size for k in ("x_train", "x_test"))
        check_memory(path, need, what="the arrays, their float32 and int64 copies")
        arrays = {k: npz.read(k) for k in wanted if k in headers}
    return dataset_from_arrays(arrays, name=name or path.stem, source=source)


def dataset_from_arrays(arrays: Mapping[str, np.ndarray], *, name: str, source: str) -> Dataset:
    """Validate a mapping with the four arrays (and maybe ``class_names``) into a Dataset."""
    missing = [k for k in _REQUIRED if k not in arrays]
    if missing:
        raise InvalidInputError(
            f"{source}: missing array(s) {', '.join(missing)} (found: {', '.join(sorted(arrays)) or 'none'}); "
            "the file needs x_train, y_train, x_test, y_test"
        )
    given: dict[str, np.ndarray] = {}
    for key in (*_REQUIRED, "class_names"):
        if key in arrays:
            try:
                given[key] = np.asarray(arrays[key])
            except (TypeError, ValueError) as e:
                raise InvalidInputError(f"{source}: {key} is not an array ({e})") from None
    _check_specs({k: (a.shape, a.dtype) for k, a in given.items()}, source)
    x_train = _images(given["x_train"], what=f"{source}: x_train")
    x_test = _images(given["x_test"], what=f"{source}: x_test")
    y_train = check_labels(given["y_train"], what=f"{source}: y_train")
    y_test = check_labels(given["y_test"], what=f"{source}: y_test")
    names = None
    if "class_names" in given:
        names = tuple(
            v.decode("utf-8", errors="replace") if isinstance(v, bytes) else str(v)
            for v in given["class_names"].tolist()
        )
    k = _check_classes(y_train, y_test, names, source)
    return Dataset(
        name=name,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        class_names=names if names is not None else tuple(str(i) for i in range(k)),
        source=source,
    )

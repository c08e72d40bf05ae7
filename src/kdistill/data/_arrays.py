"""The :class:`Dataset` container and loading a user's own arrays from ``.npz``."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CorruptFileError, DatasetNotFoundError, InvalidInputError, UnsafeFileError

__all__ = ["Dataset", "load_arrays", "dataset_from_arrays", "pixels_to_unit", "check_labels"]

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
      class_names: ``k`` human-readable class names.
      source: where the data were loaded from (a path, ``"scikit-learn"``, ...).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    source: str

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


def pixels_to_unit(x: np.ndarray, *, what: str) -> np.ndarray:
    """Turn image pixels into ``float32`` in ``[0, 1]``.

    ``uint8`` (or any integer array with values in ``0..255``) is divided by 255;
    floating arrays must already lie in ``[0, 1]`` and be finite. ``what`` names the
    array in error messages.
    """
    x = np.asarray(x)
    if x.dtype == np.uint8:
        return (x.astype(np.float32) / np.float32(255.0)).astype(np.float32)
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
        return (x.astype(np.float32) / np.float32(255.0)).astype(np.float32)
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


def load_arrays(path: str | os.PathLike[str], *, name: str | None = None) -> Dataset:
    """Load a user's own dataset from an ``.npz`` file.

    The file holds ``x_train``, ``y_train``, ``x_test``, ``y_test`` and optionally
    ``class_names`` (a 1-D string array). Images may be ``(n, h, w)`` or
    ``(n, h, w, c)``, ``uint8`` 0..255 or float in ``[0, 1]``; labels are integer
    class indices in ``[0, k)``, not remapped. ``k = len(class_names)`` when given,
    else ``max label + 1`` over train and test (names default to ``"0"..``).
    The file is read with ``allow_pickle=False``.

    Raises:
      DatasetNotFoundError: the file does not exist.
      CorruptFileError / UnsafeFileError: not a readable npz / holds pickled objects.
      InvalidInputError: a missing array, NaN/inf, mismatched shapes, bad labels.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(
            f"{path}: no such file; give the path of an .npz holding x_train, y_train, x_test, y_test"
        )
    with open(path, "rb") as fh:
        magic = fh.read(6)
    if magic == b"\x93NUMPY":
        raise InvalidInputError(
            f"{path}: is a single .npy array, not an .npz; save the dataset with "
            "numpy.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)"
        )
    if magic[:4] != b"PK\x03\x04":
        raise CorruptFileError(
            f"{path}: is not an .npz file (no zip header); save the dataset with "
            "numpy.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)"
        )
    arrays: dict[str, np.ndarray] = {}
    try:
        with np.load(path, allow_pickle=False) as npz:
            for key in npz.files:
                arrays[key] = npz[key]
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise CorruptFileError(
            f"{path}: cannot read it as an .npz file ({exc}); save it again with numpy.savez"
        ) from exc
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise UnsafeFileError(
                f"{path}: holds pickled Python objects, which kdistill will not load; save plain "
                "numeric arrays (and class_names as a string array) with numpy.savez"
            ) from exc
        raise CorruptFileError(f"{path}: cannot read it as an .npz file ({exc})") from exc
    return dataset_from_arrays(arrays, name=name or path.stem, source=str(path))


def dataset_from_arrays(arrays: Mapping[str, np.ndarray], *, name: str, source: str) -> Dataset:
    """Validate a mapping with the four arrays (and maybe ``class_names``) into a Dataset."""
    missing = [k for k in _REQUIRED if k not in arrays]
    if missing:
        raise InvalidInputError(
            f"{source}: missing array(s) {', '.join(missing)} (found: {', '.join(sorted(arrays)) or 'none'}); "
            "the file needs x_train, y_train, x_test, y_test"
        )
    x_train = _images(arrays["x_train"], what=f"{source}: x_train")
    x_test = _images(arrays["x_test"], what=f"{source}: x_test")
    y_train = check_labels(arrays["y_train"], what=f"{source}: y_train")
    y_test = check_labels(arrays["y_test"], what=f"{source}: y_test")
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if x.shape[0] != y.shape[0]:
            raise InvalidInputError(
                f"{source}: x_{split} has {x.shape[0]} images but y_{split} has {y.shape[0]} labels; "
                "they must match one to one"
            )
    if x_train.shape[0] == 0:
        raise InvalidInputError(f"{source}: x_train is empty; give at least one training image")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise InvalidInputError(
            f"{source}: train images are {x_train.shape[1:]} but test images are {x_test.shape[1:]} "
            "(h, w, c); they must be the same"
        )
    max_label = int(max(y_train.max(initial=0), y_test.max(initial=0)))
    if "class_names" in arrays:
        raw = np.asarray(arrays["class_names"])
        if raw.ndim != 1 or not (raw.dtype.kind in "US"):
            raise InvalidInputError(
                f"{source}: class_names is {raw.dtype} {raw.shape}; give a 1-D array of strings"
            )
        names = tuple(v.decode() if isinstance(v, bytes) else str(v) for v in raw.tolist())
        if max_label >= len(names):
            raise InvalidInputError(
                f"{source}: labels go up to {max_label} but class_names has only {len(names)} "
                "entries; give one name per class"
            )
    else:
        names = tuple(str(i) for i in range(max_label + 1))
    return Dataset(
        name=name,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        class_names=names,
        source=source,
    )

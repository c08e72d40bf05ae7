"""Distilled-set files: ``.npz`` with ``images`` (m, h, w, c) and ``labels`` (m, k), plus a JSON sidecar.

The npz keys are those of KIP's released sets, so those files load too (their
sidecar is simply missing). Preprocessing arrays needed to map images back to
pixel space are stored in the same npz under ``prep_*`` keys. The sidecar
``<stem>.json`` holds dataset, method, kernel spec, ipc, seed, preprocessing
and timings. Files are written atomically and read with ``allow_pickle=False``.
"""

from __future__ import annotations

import dataclasses
import io
import json
import zipfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ._atomic import atomic_path, write_json
from .errors import CorruptFileError, InvalidInputError

__all__ = ["DistilledSet", "save", "load", "sidecar_path"]


@dataclasses.dataclass(frozen=True)
class DistilledSet:
    """A distilled set.

    Attributes:
      images: (m, h, w, c) float32, in the preprocessed space the model used.
      labels: (m, k) float32 targets (one-hot, mean-centred, or learned).
      meta: JSON-able metadata (the sidecar).
      arrays: extra arrays kept in the npz (``prep_*`` preprocessing state).
      summary: the run's summary when the set was just made (not stored in the file).
    """

    images: np.ndarray
    labels: np.ndarray
    meta: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    arrays: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)
    summary: Mapping[str, Any] | None = dataclasses.field(default=None, compare=False, repr=False)

    def __post_init__(self):
        _validate(self.images, self.labels, "distilled set")

    @property
    def num_classes(self) -> int:
        return int(self.labels.shape[1])

    @property
    def classes(self) -> list:
        """The class each label column stands for (``meta["classes"]``, else ``0..k-1``)."""
        return list(self.meta.get("classes", range(self.num_classes)))

    def class_labels(self) -> np.ndarray:
        """``(m,)`` the class of each image: ``classes[argmax(labels)]``."""
        return np.asarray(self.classes)[np.argmax(self.labels, axis=1)]

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])

    def to_pixels(self, images: np.ndarray) -> np.ndarray:
        """Map ``(m, h, w, c)`` images in this set's preprocessed space back to pixel space (not clipped):
        exact for ``none`` and ``standardize``; for ``zca`` whitening is undone and each image rescaled, as
        layer norm is not invertible. Stays ``(m, h, w, c)`` (what figures draw)."""
        from .data import Preprocessor

        return Preprocessor.from_arrays(self.arrays).to_pixels(images, clip=False)

    def pixels(self) -> np.ndarray:
        """The images in the input's pixel space (:meth:`to_pixels`), in the input's own layout
        (``meta["input_shape"]``, e.g. ``(m, d)`` for flat rows given to :func:`kdistill.distill`)."""
        pixels = self.to_pixels(self.images)
        shape = self.meta.get("input_shape")
        if shape is not None and tuple(shape) != tuple(pixels.shape[1:]):
            pixels = pixels.reshape(pixels.shape[0], *shape)
        return pixels

    def save(self, path: str | Path) -> Path:
        """Write this set to ``path`` (.npz) and its JSON sidecar, atomically; see :func:`save`."""
        return save(path, self)


def _validate(images: np.ndarray, labels: np.ndarray, where: str) -> None:
    if images.ndim != 4:
        raise InvalidInputError(f"{where}: images must be (m, h, w, c), got shape {images.shape}")
    if labels.ndim != 2:
        raise InvalidInputError(f"{where}: labels must be (m, k), got shape {labels.shape}")
    if images.shape[0] != labels.shape[0]:
        raise InvalidInputError(f"{where}: {images.shape[0]} images but {labels.shape[0]} label rows")
    for name, a in (("images", images), ("labels", labels)):
        if not np.all(np.isfinite(a)):
            raise InvalidInputError(f"{where}: {name} contain NaN or inf")


def sidecar_path(path: str | Path) -> Path:
    """``run/distilled.npz -> run/distilled.json``."""
    return Path(path).with_suffix(".json")


def save(path: str | Path, ds: DistilledSet) -> Path:
    """Write ``ds`` to ``path`` (.npz) and its sidecar, each atomically. Returns the npz path."""
    path = Path(path)
    if path.suffix != ".npz":
        raise InvalidInputError(f"distilled sets are saved as .npz, got {path.name!r}")
    bad = [k for k in ds.arrays if k in ("images", "labels")]
    if bad:
        raise InvalidInputError(f"extra arrays may not be named {bad}")
    buf = io.BytesIO()
    np.savez(
        buf,
        images=np.asarray(ds.images, dtype=np.float32),
        labels=np.asarray(ds.labels, dtype=np.float32),
        **{k: np.asarray(v) for k, v in ds.arrays.items()},
    )
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())
    write_json(sidecar_path(path), dict(ds.meta))
    return path


def load(path: str | Path) -> DistilledSet:
    """Read a distilled-set npz (and its sidecar, when present).

    Raises :class:`CorruptFileError` for truncated/corrupt files or files that
    would need pickle, :class:`InvalidInputError` for wrong shapes or NaN.
    """
    path = Path(path)
    if not path.exists():
        raise InvalidInputError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            missing = {"images", "labels"} - keys
            if missing:
                raise CorruptFileError(
                    f"{path}: not a distilled-set file (missing {sorted(missing)}; has {sorted(keys)})"
                )
            images = np.asarray(z["images"], dtype=np.float32)
            labels = np.asarray(z["labels"], dtype=np.float32)
            arrays = {k: np.asarray(z[k]) for k in keys - {"images", "labels"}}
    except CorruptFileError:
        raise
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise CorruptFileError(f"{path}: holds object arrays that need pickle; refusing to load it") from None
        raise CorruptFileError(f"{path}: corrupt or truncated npz file ({e})") from None
    except (zipfile.BadZipFile, EOFError, OSError, KeyError) as e:
        raise CorruptFileError(f"{path}: corrupt or truncated npz file ({type(e).__name__}: {e})") from None
    if labels.ndim == 1:
        raise InvalidInputError(f"{path}: labels are 1-D; expected (m, k) one-hot or soft labels")
    if images.ndim == 3:
        images = images[..., None]
    _validate(images, labels, str(path))
    meta: dict[str, Any] = {}
    side = sidecar_path(path)
    if side.exists():
        try:
            meta = json.loads(side.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CorruptFileError(f"{side}: sidecar is not valid JSON ({e}); fix or delete it") from None
    return DistilledSet(images=images, labels=labels, meta=meta, arrays=arrays)

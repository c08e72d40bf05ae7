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
import math
import os
import stat
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ._atomic import atomic_path, write_json
from ._npz import check_memory, open_npz
from .errors import CorruptFileError, InvalidInputError

__all__ = ["DistilledSet", "save", "load", "sidecar_path", "check_sidecar"]

_SAVE_HINT = "make it again with kdistill distill, or save it with kdistill.io.save"
_MAX_SIDECAR = 16 << 20  # bytes; a sidecar is a few kilobytes of metadata


@dataclasses.dataclass(frozen=True)
class DistilledSet:
    """A distilled set.

    Attributes:
      images: (m, h, w, c) float32, in the preprocessed space the model used; float64 when the set needs it
        (the closed-form method: its images reproduce the model only to ~1e-4 once rounded to float32).
      labels: (m, k) float32 targets (one-hot, mean-centred, or learned); float64 with float64 images.
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
        for name in ("meta", "arrays"):
            if not isinstance(getattr(self, name), Mapping):
                raise InvalidInputError(
                    f"distilled set: {name} must be a mapping, got {type(getattr(self, name)).__name__}"
                )

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


def _check_shapes(images_shape: tuple[int, ...], images_dtype: np.dtype, labels_shape: tuple[int, ...],
                  labels_dtype: np.dtype, where: str) -> None:
    """Checks that need only shapes and dtypes (run on the ``.npy`` headers before decoding):
    images ``(m, h, w, c)`` real numbers with ``m >= 1`` and ``h, w, c >= 1``; labels ``(m, k)`` real
    numbers with ``k >= 1``."""
    for name, dtype in (("images", images_dtype), ("labels", labels_dtype)):
        if dtype.kind not in "iuf":
            raise InvalidInputError(
                f"{where}: {name} have dtype {dtype}; a distilled set holds real numbers (float32)"
            )
    if len(images_shape) != 4:
        raise InvalidInputError(f"{where}: images must be (m, h, w, c), got shape {tuple(images_shape)}")
    if len(labels_shape) == 1:
        raise InvalidInputError(f"{where}: labels are 1-D; expected (m, k) one-hot or soft labels")
    if len(labels_shape) != 2:
        raise InvalidInputError(f"{where}: labels must be (m, k), got shape {tuple(labels_shape)}")
    if images_shape[0] == 0:
        raise InvalidInputError(
            f"{where}: holds no images (images have shape {tuple(images_shape)}); a distilled set needs at least "
            "one image"
        )
    if 0 in images_shape[1:]:
        raise InvalidInputError(f"{where}: images of shape {tuple(images_shape)} hold no pixels")
    if images_shape[0] != labels_shape[0]:
        raise InvalidInputError(f"{where}: {images_shape[0]} images but {labels_shape[0]} label rows")
    if labels_shape[1] == 0:
        raise InvalidInputError(f"{where}: labels have shape {tuple(labels_shape)}, no class columns")


def stored_dtype(a: Any) -> type:
    """The float type an array is stored and loaded in: float64 stays float64, anything else is float32."""
    return np.float64 if np.asarray(a).dtype == np.float64 else np.float32


def _validate(images: Any, labels: Any, where: str) -> None:
    images, labels = np.asarray(images), np.asarray(labels)
    _check_shapes(images.shape, images.dtype, labels.shape, labels.dtype, where)
    top = float(np.finfo(np.float32).max)
    for name, a in (("images", images), ("labels", labels)):
        if not np.all(np.isfinite(a)):
            raise InvalidInputError(f"{where}: {name} contain NaN or inf")
        if a.dtype.kind == "f" and a.dtype.itemsize > 4 and float(np.max(np.abs(a))) > top:
            # float64 sets are stored as float64, but no image or label needs more than float32's range
            raise InvalidInputError(f"{where}: {name} hold values beyond the float32 range (|x| > 3.4e38)")


def _problem(field: str, value: Any, expected: str) -> str:
    shown = json.dumps(value)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    return f"field {field!r} must be {expected}, got {shown}"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _sidecar_problem(meta: Any, num_classes: int, image_shape: tuple[int, ...]) -> str | None:
    """What is wrong with a sidecar's structure, or None. Unknown fields are allowed; the known
    ones must have the types the rest of kdistill reads them as."""
    if not isinstance(meta, dict):
        return f"is a JSON {type(meta).__name__.replace('dict', 'object')}, not an object of fields"
    for field in ("dataset", "method", "kernel", "created", "precision"):
        if field in meta and not isinstance(meta[field], str):
            return _problem(field, meta[field], "a string")
    for field, low in (("ipc", 1), ("seed", None), ("num_classes", 1)):
        if field in meta and not (_is_int(meta[field]) and (low is None or meta[field] >= low)):
            return _problem(field, meta[field], "an integer" + ("" if low is None else f" >= {low}"))
    if "num_classes" in meta and meta["num_classes"] != num_classes:
        return _problem("num_classes", meta["num_classes"], f"{num_classes} (the labels' columns)")
    if "reg" in meta and not (_is_number(meta["reg"]) and meta["reg"] >= 0):
        return _problem("reg", meta["reg"], "a finite number >= 0")
    if "lam" in meta and meta["lam"] is not None and not (_is_number(meta["lam"]) and meta["lam"] >= 0):
        return _problem("lam", meta["lam"], "a finite number >= 0 or null")
    if "class_names" in meta:
        v = meta["class_names"]
        if not (isinstance(v, list) and len(v) == num_classes and all(isinstance(n, str) for n in v)):
            return _problem("class_names", v, f"a list of {num_classes} strings (one per label column)")
    if "classes" in meta:
        v = meta["classes"]
        if not (isinstance(v, list) and len(v) == num_classes
                and all(isinstance(c, (str, int, float)) for c in v)):
            return _problem("classes", v, f"a list of {num_classes} strings or numbers (one per label column)")
    if "image_shape" in meta:
        v = meta["image_shape"]
        if not (isinstance(v, list) and all(_is_int(s) for s in v) and tuple(v) == tuple(image_shape)):
            return _problem("image_shape", v, f"{list(image_shape)} (the images' h, w, c)")
    if "input_shape" in meta:
        v = meta["input_shape"]
        if not (isinstance(v, list) and v and all(_is_int(s) and s > 0 for s in v)
                and math.prod(v) == math.prod(image_shape)):
            return _problem("input_shape", v, f"a list of positive integers whose product is {math.prod(image_shape)}")
    if "preprocess" in meta:
        v = meta["preprocess"]
        if not (isinstance(v, dict) and isinstance(v.get("kind", ""), str)):
            return _problem("preprocess", v, 'an object such as {"kind": "standardize"}')
    if "seconds" in meta:
        v = meta["seconds"]
        if not (isinstance(v, dict) and all(_is_number(t) for t in v.values())):
            return _problem("seconds", v, "an object of numbers")
    return None


def check_sidecar(meta: Any, *, num_classes: int, image_shape: tuple[int, ...], where: str) -> None:
    """Raise CorruptFileError unless ``meta`` (a parsed sidecar) has the structure kdistill reads:
    an object whose known fields (``dataset``, ``kernel``, ``ipc``, ``reg``, ``lam``, ``class_names``,
    ``classes``, ``image_shape``, ``input_shape``, ``preprocess``, ...) have the right types and agree
    with the set's ``num_classes`` and ``image_shape`` ``(h, w, c)``. ``where`` names the sidecar."""
    problem = _sidecar_problem(meta, num_classes, image_shape)
    if problem is not None:
        raise CorruptFileError(f"{where}: sidecar {problem}; fix or delete it")


def _read_sidecar(side: Path, num_classes: int, image_shape: tuple[int, ...]) -> dict[str, Any]:
    try:
        st = os.stat(side)
    except OSError as e:
        raise CorruptFileError(f"{side}: sidecar cannot be read ({e.strerror or e}); fix or delete it") from None
    if not stat.S_ISREG(st.st_mode):
        raise CorruptFileError(f"{side}: sidecar is not a regular file; delete it or replace it with the JSON file")
    if st.st_size > _MAX_SIDECAR:
        raise CorruptFileError(f"{side}: sidecar is {st.st_size} bytes, far too large for metadata; fix or delete it")
    try:
        meta = json.loads(side.read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError, ValueError) as e:
        reason = "nested too deeply" if isinstance(e, RecursionError) else " ".join(str(e).split())
        raise CorruptFileError(f"{side}: sidecar is not valid JSON ({reason}); fix or delete it") from None
    except OSError as e:
        raise CorruptFileError(f"{side}: sidecar cannot be read ({e.strerror or e}); fix or delete it") from None
    check_sidecar(meta, num_classes=num_classes, image_shape=image_shape, where=str(side))
    return meta


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
    objects = [k for k, v in ds.arrays.items() if np.asarray(v).dtype.hasobject]
    if objects:
        raise InvalidInputError(
            f"extra arrays {objects} hold Python objects, which would be pickled and could not be loaded again; "
            "store numbers or strings"
        )
    buf = io.BytesIO()
    np.savez(
        buf,
        images=np.asarray(ds.images, dtype=stored_dtype(ds.images)),
        labels=np.asarray(ds.labels, dtype=stored_dtype(ds.labels)),
        **{k: np.asarray(v) for k, v in ds.arrays.items()},
    )
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())
    write_json(sidecar_path(path), dict(ds.meta))
    return path


def load(path: str | Path) -> DistilledSet:
    """Read a distilled-set npz (and its sidecar, when present).

    Every ``.npy`` header is checked first (the bytes it declares against the file, dtypes,
    shapes, the memory needed); only then are the arrays decoded, without pickle. Stored
    preprocessing must fit the images, and the sidecar must have the structure kdistill reads.

    Raises :class:`CorruptFileError` for truncated/corrupt/forged files, files that would need
    pickle (:class:`~kdistill.errors.UnsafeFileError`) or a malformed sidecar;
    :class:`InvalidInputError` for a missing file, wrong shapes or dtypes, no images, NaN/inf,
    or a file too large for this machine's memory.
    """
    path = Path(path)
    if not path.exists():
        raise InvalidInputError(f"{path}: no such file")
    where = str(path)
    with open_npz(path, hint=_SAVE_HINT) as npz:
        headers = npz.headers
        missing = {"images", "labels"} - set(headers)
        if missing:
            raise CorruptFileError(
                f"{path}: not a distilled-set file (missing {sorted(missing)}; has {sorted(headers)})"
            )
        im, lab = headers["images"], headers["labels"]
        images_shape = im.shape + (1,) if len(im.shape) == 3 else im.shape
        _check_shapes(images_shape, im.dtype, lab.shape, lab.dtype, where)
        for key, h in headers.items():
            if key.startswith("prep_") and h.dtype.kind not in ("US" if key == "prep_kind" else "iuf"):
                raise CorruptFileError(f"{path}: stored preprocessing array {key!r} has dtype {h.dtype}; {_SAVE_HINT}")
        need = sum(h.nbytes for h in headers.values()) + 4 * (im.size + lab.size)
        check_memory(path, need, what="its arrays and the copies of images and labels")
        raw = {key: npz.read(key) for key in headers}
    with np.errstate(over="ignore", invalid="ignore"):
        images = raw.pop("images")
        images = images.astype(stored_dtype(images), copy=False).reshape(images_shape)
        labels = raw.pop("labels")
        labels = labels.astype(stored_dtype(labels), copy=False)
    for name, a in (("images", images), ("labels", labels)):
        if not np.all(np.isfinite(a)):
            raise InvalidInputError(f"{where}: {name} contain NaN or inf (or values beyond the float32 range)")
    _validate(images, labels, where)
    if any(key.startswith("prep_") for key in raw):
        from .data import Preprocessor

        try:
            Preprocessor.from_arrays(raw).check_fits(images.shape[1:])
        except InvalidInputError as e:
            raise CorruptFileError(f"{path}: {e}; {_SAVE_HINT}") from None
    meta: dict[str, Any] = {}
    side = sidecar_path(path)
    if os.path.lexists(side):
        meta = _read_sidecar(side, int(labels.shape[1]), tuple(images.shape[1:]))
    return DistilledSet(images=images, labels=labels, meta=meta, arrays=raw)

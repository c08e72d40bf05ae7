"""Reading untrusted ``.npz`` files: every header is checked before a byte of data is decoded.

An ``.npz`` is a zip archive of ``.npy`` members. ``numpy.load`` trusts each member's
header: a 2 MB file whose header declares 31 million images makes it allocate tens of
gigabytes before anything can be checked. :func:`open_npz` instead reads only the
``.npy`` headers (magic, shape, dtype, fortran order; numpy's ``.npy`` format,
``numpy.lib.format``), compares the bytes each header promises with the member's
uncompressed size recorded in the zip directory, and refuses object arrays (which
would need pickle). Callers then check shapes, dtypes and the memory a load needs
(:func:`check_memory`) and decode only the members they want with
:meth:`NpzArchive.read`, which never allocates more than the checked header allows.
"""

from __future__ import annotations

import ast
import math
import os
import stat
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np

from ._machine import format_bytes, memory_bytes
from .errors import CorruptFileError, InvalidInputError, UnsafeFileError

__all__ = ["NpyHeader", "NpzArchive", "open_npz", "read_npz", "check_memory",
           "NOT_NPZ"]

NOT_NPZ = "not an .npz file (a zip archive of .npy arrays)"
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a member first, or an empty archive's directory
_MAX_HEADER = 10_000  # bytes; numpy's own limit (numpy.lib.format.read_array max_header_size)
_MAX_MEMBERS = 4096  # a dataset or distilled set holds a handful of arrays
_DEFLATE_MAX_RATIO = 1100  # deflate cannot expand more than about 1032:1
_CHUNK = 1 << 24  # bytes decoded per read
_HEADER_LENGTH = {(1, 0): ("<H", "latin1"), (2, 0): ("<I", "latin1"), (3, 0): ("<I", "utf8")}


@dataclass(frozen=True)
class NpyHeader:
    """What one ``.npy`` member declares, read without decoding its data.

    Attributes:
      key: the array's name (the member name without ``.npy``).
      shape: the declared shape.
      dtype: the declared dtype.
      fortran_order: whether the data are stored column-major.
      offset: bytes of magic and header before the data.
    """

    key: str
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    offset: int

    @property
    def size(self) -> int:
        """Number of elements (a Python int: no overflow for forged shapes)."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes of data the header promises: ``size * itemsize``."""
        return self.size * self.dtype.itemsize

    def describe(self) -> str:
        """``"shape (31000000, 28, 28) uint8"``, for messages."""
        return f"shape {self.shape} {self.dtype}"


def check_memory(path: str | os.PathLike[str], need: int, *, what: str) -> None:
    """Refuse to load ``path`` when it needs more memory than this machine has free (``memory_bytes``).

    ``need`` counts the decoded arrays and the copies the loader makes; ``what`` says
    what they are (``"x_train (60000, 28, 28) uint8 and its float32 copy, ..."``).
    """
    limit = memory_bytes()
    if limit is not None and need > limit:
        raise InvalidInputError(
            f"{path}: loading it needs about {format_bytes(need)} of memory ({what}) but this machine has "
            f"{format_bytes(limit)}; use a smaller file or a machine with more memory"
        )


class _Bad(Exception):
    """A member is malformed; the message is completed with the file and the hint."""


def _read_exact(fp, n: int, what: str) -> bytes:
    data = fp.read(n)
    if len(data) != n:
        raise _Bad(f"is truncated inside its {what}")
    return data


def _read_header(fp, key: str, member_size: int) -> NpyHeader:
    """Parse a ``.npy`` header from ``fp`` (positioned at the member's start)."""
    if member_size < len(_NPY_MAGIC) + 2:
        raise _Bad(f"is not a .npy array ({member_size} bytes, too short for a header)")
    magic = _read_exact(fp, len(_NPY_MAGIC) + 2, "magic string")
    if magic[: len(_NPY_MAGIC)] != _NPY_MAGIC:
        raise _Bad("is not a .npy array (no NUMPY magic string)")
    version = (magic[-2], magic[-1])
    if version not in _HEADER_LENGTH:
        raise _Bad(f"has .npy format version {version[0]}.{version[1]}, which no numpy writes")
    length_format, encoding = _HEADER_LENGTH[version]
    (length,) = struct.unpack(length_format, _read_exact(fp, struct.calcsize(length_format), "header length"))
    if length > _MAX_HEADER:
        raise _Bad(f"has a {length}-byte header (numpy writes at most {_MAX_HEADER})")
    offset = len(magic) + struct.calcsize(length_format) + length
    if offset > member_size:
        raise _Bad(f"is truncated inside its header ({member_size} bytes in all, header needs {offset})")
    text = _read_exact(fp, length, "header")
    try:
        d = ast.literal_eval(text.decode(encoding))
    except (SyntaxError, ValueError, UnicodeDecodeError, MemoryError, RecursionError, TypeError):
        raise _Bad("has an unreadable .npy header") from None
    if not isinstance(d, dict) or set(d) != {"descr", "fortran_order", "shape"}:
        raise _Bad("has a malformed .npy header (not a dict of descr, fortran_order, shape)")
    shape = d["shape"]
    if not isinstance(shape, tuple) or not all(type(s) is int and s >= 0 for s in shape):
        raise _Bad(f"declares an impossible shape {shape!r}")
    if not isinstance(d["fortran_order"], bool):
        raise _Bad(f"has a malformed .npy header (fortran_order {d['fortran_order']!r})")
    try:
        dtype = np.lib.format.descr_to_dtype(d["descr"])
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, RecursionError):
        raise _Bad(f"declares an unknown dtype {d['descr']!r}") from None
    return NpyHeader(key=key, shape=shape, dtype=dtype, fortran_order=d["fortran_order"], offset=offset)


def _check_member_sizes(info: zipfile.ZipInfo, archive_size: int) -> None:
    """The zip directory's own sizes must be possible before they are trusted."""
    if info.flag_bits & 0x1:
        raise _Bad("is encrypted")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise _Bad(f"uses zip compression method {info.compress_type} (numpy.savez writes stored or deflated)")
    if info.header_offset + info.compress_size > archive_size:
        raise _Bad(f"claims {format_bytes(info.compress_size)} of data but the file ends before that (truncated)")
    if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
        raise _Bad(f"claims {info.file_size} bytes stored in {info.compress_size} bytes (a forged zip directory)")
    if (info.compress_type == zipfile.ZIP_DEFLATED
            and info.file_size > _DEFLATE_MAX_RATIO * info.compress_size + (1 << 20)):
        raise _Bad(f"claims {format_bytes(info.file_size)} uncompressed from {format_bytes(info.compress_size)}, "
                   "more than deflate can produce (a forged zip directory)")


class NpzArchive:
    """An open ``.npz`` whose ``.npy`` headers have been read and checked; see :func:`open_npz`.

    Attributes:
      path: the file.
      headers: ``{key: NpyHeader}`` for every ``.npy`` member, in archive order.
    """

    def __init__(self, path: Path, zf: zipfile.ZipFile, headers: dict[str, NpyHeader],
                 infos: dict[str, zipfile.ZipInfo], hint: str):
        self.path = path
        self.headers = headers
        self._zf = zf
        self._infos = infos
        self._hint = hint

    def __enter__(self) -> NpzArchive:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._zf.close()

    def _corrupt(self, key: str, reason: str) -> CorruptFileError:
        return CorruptFileError(f"{self.path}: array {key!r} {reason}; {self._hint}")

    def read(self, key: str) -> np.ndarray:
        """Decode one member into an array of exactly its checked header's shape and dtype.

        The data are streamed into a preallocated array (no second copy); the zip's CRC is
        verified at the end. Raises CorruptFileError when the member is shorter than its
        header says, its CRC does not match, or the header changed since it was checked.
        """
        expected = self.headers[key]
        if expected.dtype.hasobject:  # pragma: no cover - refused by open_npz
            raise UnsafeFileError(f"{self.path}: array {key!r} holds Python objects that need pickle; refusing")
        info = self._infos[key]
        try:
            with self._zf.open(info) as fp:
                header = _read_header(fp, key, info.file_size)
                if header != expected:
                    raise _Bad("changed while it was being read")
                out = np.empty(header.size, dtype=header.dtype)
                view = memoryview(out.view(np.uint8).reshape(-1)) if header.nbytes else memoryview(b"")
                pos = 0
                while pos < header.nbytes:
                    chunk = fp.read(min(_CHUNK, header.nbytes - pos))
                    if not chunk:
                        raise _Bad(f"is truncated: {format_bytes(pos)} of {format_bytes(header.nbytes)} of data")
                    view[pos : pos + len(chunk)] = chunk
                    pos += len(chunk)
                if fp.read(1):  # also reaches the end of the member, where zipfile checks the CRC
                    raise _Bad("holds more data than its header declares")
        except _Bad as e:
            raise self._corrupt(key, str(e)) from None
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError, NotImplementedError,
                ValueError) as e:
            raise self._corrupt(key, f"cannot be decoded ({type(e).__name__}: {e})") from None
        return out.reshape(header.shape, order="F" if header.fortran_order else "C")


def open_npz(path: str | os.PathLike[str], *, hint: str) -> NpzArchive:
    """Open ``path`` as an ``.npz`` and read every ``.npy`` member's header; decode nothing.

    Checks, in order: ``path`` is a regular file (not a folder, device or pipe); it starts
    like a zip archive (else it is a single ``.npy`` or not an ``.npz`` at all); the zip
    directory is readable and its sizes possible; each ``.npy`` header is well formed,
    declares a dtype numpy knows and exactly as many bytes as the member holds; no member
    is an object array (those need pickle). Members whose names do not end in ``.npy``
    are ignored. ``hint`` ends every message (what to do, e.g. how to save the file again).

    Raises:
      InvalidInputError: ``path`` is a folder. CorruptFileError: anything else malformed.
      UnsafeFileError: an object array.
    The caller must check that ``path`` exists (the error for that differs between callers).
    """
    path = Path(path)
    try:
        st = os.stat(path)
    except OSError as e:
        raise CorruptFileError(f"{path}: cannot be read ({e.strerror or e}); {hint}") from None
    if stat.S_ISDIR(st.st_mode):
        raise InvalidInputError(f"{path}: is a folder, not an .npz file; give the path of the .npz file itself")
    if not stat.S_ISREG(st.st_mode):
        raise CorruptFileError(f"{path}: is {NOT_NPZ} but a device, pipe or socket; {hint}")
    try:
        with open(path, "rb") as fh:
            magic = fh.read(8)
    except OSError as e:
        raise CorruptFileError(f"{path}: cannot be read ({e.strerror or e}); {hint}") from None
    if magic[:6] == _NPY_MAGIC:
        raise CorruptFileError(f"{path}: is a single .npy array, {NOT_NPZ}; {hint}")
    if magic[:4] not in _ZIP_MAGICS:
        what = "empty" if not magic else "no zip header"
        raise CorruptFileError(f"{path}: is {NOT_NPZ} ({what}); {hint}")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError,
            struct.error) as e:
        raise CorruptFileError(
            f"{path}: is a damaged or truncated .npz (zip archive unreadable: {e}); {hint}") from None
    try:
        infos = {i.filename[: -len(".npy")]: i for i in zf.infolist() if i.filename.endswith(".npy")}
        if len(zf.infolist()) > _MAX_MEMBERS:
            raise CorruptFileError(f"{path}: holds {len(zf.infolist())} zip members (more than {_MAX_MEMBERS}); "
                                   f"an .npz of a dataset holds a handful of arrays; {hint}")
        headers: dict[str, NpyHeader] = {}
        for key, info in infos.items():
            try:
                _check_member_sizes(info, st.st_size)
                with zf.open(info) as fp:
                    header = _read_header(fp, key, info.file_size)
            except _Bad as e:
                raise CorruptFileError(f"{path}: array {key!r} {e}; {hint}") from None
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError, NotImplementedError,
                    ValueError, struct.error) as e:
                raise CorruptFileError(
                    f"{path}: array {key!r} cannot be read ({type(e).__name__}: {e}); {hint}") from None
            if header.dtype.hasobject:
                raise UnsafeFileError(
                    f"{path}: array {key!r} holds Python objects that need pickle, which kdistill will not "
                    f"load; {hint}")
            data = info.file_size - header.offset
            if header.nbytes != data:
                raise CorruptFileError(
                    f"{path}: array {key!r} declares {header.describe()} ({format_bytes(header.nbytes)}) but "
                    f"the file holds {format_bytes(data)} of data for it: truncated or forged; {hint}")
            headers[key] = header
    except BaseException:
        zf.close()
        raise
    return NpzArchive(path, zf, headers, infos, hint)


def read_npz(path: str | os.PathLike[str], *, hint: str) -> dict[str, np.ndarray]:
    """Every ``.npy`` member of ``path`` as ``{key: array}``, like ``dict(numpy.load(path))`` but safe on
    untrusted files: :func:`open_npz` checks the headers, :func:`check_memory` the total, then each
    member is decoded. For files whose arrays need no checks of their own (checkpoints); callers that
    know what shapes to expect should use :func:`open_npz` and check the headers first."""
    with open_npz(path, hint=hint) as npz:
        check_memory(path, sum(h.nbytes for h in npz.headers.values()), what="its arrays")
        return {key: npz.read(key) for key in npz.headers}

"""Exceptions raised by kdistill.

Every error a user can cause derives from :class:`KDistillError`; its message is
one line that says what is wrong and what to do. The CLI prints that line and
exits with status 2.
"""

from __future__ import annotations

__all__ = [
    "KDistillError",
    "InvalidInputError",
    "DatasetNotFoundError",
    "CorruptFileError",
    "UnsafeFileError",
    "SpecError",
    "DistributedError",
]


class KDistillError(Exception):
    """Base class of every error that comes from bad input rather than a bug."""


class InvalidInputError(KDistillError, ValueError):
    """Arrays or settings that cannot be used: wrong shape, NaN/inf, impossible request."""


class DatasetNotFoundError(KDistillError, FileNotFoundError):
    """A dataset's files are not where we looked."""


class CorruptFileError(KDistillError, ValueError):
    """A file exists but is truncated, has the wrong checksum or a malformed header."""


class UnsafeFileError(CorruptFileError):
    """A pickle that asks to run code or to build an object we do not allow."""


class SpecError(KDistillError, ValueError):
    """An unknown kernel/method name or a bad parameter in a spec string."""


class DistributedError(KDistillError, RuntimeError):
    """A Dask cluster that cannot be used: unreachable scheduler, no workers, another kdistill version."""

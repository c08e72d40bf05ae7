"""Numerical precision as a setting of a run, never a process-wide switch.

JAX computes in float32 unless 64-bit types are enabled. kdistill never flips
``jax.config`` for the process: every entry point (a run, ``kdistill.distill``, the
estimators, the CLI) enters :func:`precision_scope` for the duration of the call, and
the caller's setting is restored on exit (``jax.enable_x64`` is a context manager).
Ridge solves run on the host in float64 NumPy whatever the precision.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import jax

from .errors import InvalidInputError

__all__ = ["PRECISIONS", "check_precision", "precision_scope"]

PRECISIONS: tuple[str, ...] = ("float64", "float32")
"""Precisions a computation runs in. A run's setting may also be ``"auto"``: the method's own
(float64 for every method except those registered with another, such as rfad's float32)."""


def check_precision(precision: str, *, auto: bool = False) -> str:
    """Return ``precision`` if it is one of :data:`PRECISIONS` (or ``"auto"`` when ``auto``), else raise a
    one-line error."""
    allowed = PRECISIONS + (("auto",) if auto else ())
    if precision not in allowed:
        raise InvalidInputError(f"precision must be one of {', '.join(allowed)}, got {precision!r}")
    return precision


@contextlib.contextmanager
def precision_scope(precision: str) -> Iterator[None]:
    """Kernels, features and gradients inside the block run in ``precision``.

    >>> import jax, jax.numpy as jnp
    >>> with precision_scope("float64"):
    ...     jnp.zeros(1).dtype.name
    'float64'
    """
    with jax.enable_x64(check_precision(precision) == "float64"):
        yield

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
"""Accepted precision settings; float64 is the default of every entry point."""


def check_precision(precision: str) -> str:
    """Return ``precision`` if it is one of :data:`PRECISIONS`, else raise a one-line error."""
    if precision not in PRECISIONS:
        raise InvalidInputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
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

"""Kernel ridge regression in the dual: fit, predict, accuracy.

f(x) = K(x, X_S) (K_SS + lam I)^-1 Y_S, with lam = reg * tr(K_SS) / m (KIP's
convention, arXiv:2011.00050). Linear algebra runs on the host in float64
(SciPy), whatever the kernel's dtype, so results do not depend on whether
``jax_enable_x64`` is on.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Literal

import numpy as np
import scipy.linalg

from ..parallel import Executor, get_executor
from .._machine import check_memory
from .._typing import Array, KernelFn
from ..errors import InvalidInputError

__all__ = [
    "DualModel",
    "Solution",
    "absolute_reg",
    "solve",
    "fit",
    "predict",
    "kernel_matrix",
    "accuracy",
    "check_finite",
    "MAX_REG",
]


@dataclasses.dataclass(frozen=True)
class Solution:
    """``alpha = (K + lam I)^-1 Y``; ``method`` is ``"cholesky"`` or ``"eigh"`` (the fallback)."""

    alpha: np.ndarray  # (m, k) float64
    lam: float
    method: Literal["cholesky", "eigh"]


@dataclasses.dataclass(frozen=True)
class DualModel:
    """A fitted dual KRR model.

    Attributes:
      x_support: (m, h, w, c) support images.
      alpha: (m, k) float64 dual coefficients.
      reg: relative regulariser; lam = reg * tr(K_SS) / m.
      lam: absolute ridge.
      method: how the system was solved.
    """

    x_support: np.ndarray
    alpha: np.ndarray
    reg: float
    lam: float
    method: str


def check_finite(name: str, x: Array) -> None:
    """Raise :class:`InvalidInputError` if ``x`` holds NaN or inf."""
    a = np.asarray(x)
    if a.dtype.kind in "fc" and not np.all(np.isfinite(a)):
        bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
        raise InvalidInputError(f"{name} contains {bad} NaN/inf value(s); clean or drop them before fitting")


MAX_REG = 1e6
"""Largest relative ridge accepted: beyond it every prediction is ~0 and an accuracy means nothing."""


def absolute_reg(trace: float, m: int, reg: float) -> float:
    """``lam = reg * trace / m``: the ridge relative to the mean eigenvalue of K."""
    if reg < 0 or not np.isfinite(reg):
        raise InvalidInputError(f"reg must be a finite number >= 0, got {reg}")
    return float(reg) * float(trace) / max(int(m), 1)


def solve(k_ss: Array, y: Array, *, reg: float = 1e-6, lam: float | None = None) -> Solution:
    """Solve ``(K + lam I) alpha = Y`` with ``lam = reg * tr(K) / m``.

    Args:
      k_ss: (m, m) symmetric PSD kernel matrix.
      y: (m, k) targets.
      reg: relative regulariser.
      lam: absolute ridge; when given it is used as is and ``reg`` is ignored.

    Cholesky first. If it fails (K + lam I not numerically positive definite,
    e.g. duplicate points with reg = 0), falls back to a symmetric
    eigendecomposition: eigenvalues below ``m * eps * max`` are treated as zero
    and the minimum-norm (pseudo-inverse) solution is returned, with a
    RuntimeWarning.
    """
    k = np.asarray(k_ss, dtype=np.float64)
    yy = np.asarray(y, dtype=np.float64)
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise InvalidInputError(f"kernel matrix must be square (m, m), got shape {k.shape}")
    if yy.ndim == 1:
        yy = yy[:, None]
    if yy.shape[0] != k.shape[0]:
        raise InvalidInputError(f"targets have {yy.shape[0]} rows but the kernel matrix has {k.shape[0]}")
    if not np.all(np.isfinite(k)):
        bad = int(k.size - np.count_nonzero(np.isfinite(k)))
        raise InvalidInputError(
            f"the kernel matrix has {bad} NaN/inf value(s) although its inputs are finite: the kernel overflowed "
            "(images far outside the usual scale, or a large kernel parameter such as gamma or w_std); rescale the "
            "images (e.g. --preprocess standardize) or choose smaller kernel parameters")
    check_finite("targets", yy)
    m = k.shape[0]
    if lam is None:
        lam = absolute_reg(np.trace(k), m, reg)
    elif not (lam >= 0 and np.isfinite(lam)):
        raise InvalidInputError(f"lam must be a finite number >= 0, got {lam}")
    lam = float(lam)
    a = k + lam * np.eye(m)
    try:
        c = scipy.linalg.cho_factor(a, lower=True, check_finite=False)
        alpha = scipy.linalg.cho_solve(c, yy, check_finite=False)
        if np.all(np.isfinite(alpha)):
            return Solution(alpha, lam, "cholesky")
    except np.linalg.LinAlgError:
        pass
    if lam > 0:  # at lam = 0 the pseudo-inverse is the definition (the minimum-norm interpolant), not a fallback
        warnings.warn(
            f"K + lam*I (m={m}, lam={lam:.3g}) is not positive definite; using the eigendecomposition "
            "pseudo-inverse instead (raise reg to avoid this)",
            RuntimeWarning,
            stacklevel=2,
        )
    e, q = np.linalg.eigh((a + a.T) / 2)
    cutoff = m * np.finfo(np.float64).eps * max(float(np.abs(e).max()), 1e-300)
    inv = np.where(e > cutoff, 1.0 / np.where(e > cutoff, e, 1.0), 0.0)
    alpha = q @ (inv[:, None] * (q.T @ yy))
    return Solution(alpha, lam, "eigh")


def _kernel_block(x1, x2, kernel):
    return np.asarray(kernel(x1, x2), dtype=np.float64)


def kernel_matrix(
    kernel: KernelFn, x1: Array, x2: Array, *, block_size: int = 2048, executor: Executor | None = None,
    progress: bool = False,
) -> np.ndarray:
    """``K(x1, x2)`` as a float64 NumPy array, computed in row blocks of ``x1`` by ``executor``.

    Args:
      kernel: ``k(a, b) -> (na, nb)``.
      x1: (n1, h, w, c); x2: (n2, h, w, c).
    Returns: (n1, n2) float64.
    """
    x1 = np.asarray(x1)
    x2 = np.asarray(x2)
    if x1.shape[1:] != x2.shape[1:]:
        raise InvalidInputError(f"image shapes differ: {x1.shape[1:]} vs {x2.shape[1:]}")
    if x1.shape[0] == 0:
        return np.empty((0, x2.shape[0]), dtype=np.float64)
    check_memory(8 * x1.shape[0] * x2.shape[0], f"a {x1.shape[0]} x {x2.shape[0]} kernel matrix",
                 "use fewer images, or a kernel with explicit features (primal ridge)")
    return get_executor(executor).map(_kernel_block, x1, broadcast=(x2, kernel), block_size=block_size,
                                      progress=progress, description="kernel blocks")


def fit(kernel: KernelFn, x: Array, y: Array, *, reg: float = 1e-6, lam: float | None = None,
        executor: Executor | None = None) -> DualModel:
    """Fit dual KRR on support images ``x: (m, h, w, c)`` and targets ``y: (m, k)``.

    The ridge is ``lam = reg * tr(K_SS) / m``, or ``lam`` itself when given (absolute).
    """
    x = np.asarray(x)
    y = np.asarray(y)
    check_finite("support images", x)
    if y.shape[0] != x.shape[0]:
        raise InvalidInputError(f"{x.shape[0]} images but {y.shape[0]} label rows; they must match")
    sol = solve(kernel_matrix(kernel, x, x, executor=executor), y, reg=reg, lam=lam)
    return DualModel(x_support=x, alpha=sol.alpha, reg=float(reg), lam=sol.lam, method=sol.method)


def _predict_block(x, x_support, alpha, kernel):
    return np.asarray(kernel(x, x_support), dtype=np.float64) @ alpha


def predict(kernel: KernelFn, model: DualModel, x: Array, *, block_size: int = 2048,
            executor: Executor | None = None, progress: bool = False) -> np.ndarray:
    """Predictions ``K(x, X_S) alpha``: ``x: (n, h, w, c) -> (n, k)`` float64, in row blocks by ``executor``."""
    x = np.asarray(x)
    if x.shape[1:] != model.x_support.shape[1:]:
        raise InvalidInputError(
            f"images of shape {x.shape[1:]} do not match the support images' {model.x_support.shape[1:]}"
        )
    if x.shape[0] == 0:
        return np.empty((0, model.alpha.shape[1]), dtype=np.float64)
    return get_executor(executor).map(_predict_block, x, broadcast=(model.x_support, model.alpha, kernel),
                                      block_size=block_size, progress=progress, description="predictions")


def accuracy(predictions: Array, labels: Array) -> float:
    """Fraction of rows whose argmax equals the integer label (labels: (n,) ints or (n, k) targets)."""
    p = np.asarray(predictions)
    t = np.asarray(labels)
    if t.ndim == 2:
        t = t.argmax(axis=1)
    if p.shape[0] != t.shape[0]:
        raise InvalidInputError(f"{p.shape[0]} predictions but {t.shape[0]} labels")
    if p.shape[0] == 0:
        raise InvalidInputError("no test images to measure accuracy on; give a non-empty test set")
    if not np.all(np.isfinite(p)):
        raise InvalidInputError("the model's predictions contain NaN/inf (the kernel or the ridge overflowed); "
                                "rescale the images, choose a smaller reg or smaller kernel parameters")
    return float(np.mean(p.argmax(axis=1) == t))

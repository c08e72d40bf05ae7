"""Label Solve (Nguyen et al., arXiv:2011.00050): optimal support labels for fixed support images.

    Y_S* = argmin_{Y_S} || Y_T - K_TS A^-1 Y_S ||^2,   A = K_SS + lam I,
i.e. least squares in B = A^-1 Y_S with normal equations (K_ST K_TS) B = K_ST Y_T,
accumulated over chunks of targets (memory O(m^2 + chunk * m)), then Y_S = A B.
"""

from __future__ import annotations

import numpy as np

from .. import krr
from .._progress import progress_range
from .._typing import KernelFn

__all__ = ["label_solve", "label_loss"]


def label_solve(
    kernel: KernelFn,
    x_support: np.ndarray,
    x_target: np.ndarray,
    y_target: np.ndarray,
    *,
    reg: float = 1e-6,
    chunk_size: int = 2048,
    progress: bool = False,
) -> np.ndarray:
    """Optimal labels ``(m, k)`` for ``x_support: (m, h, w, c)`` against targets ``(n, h, w, c), (n, k)``.

    ``reg`` is relative: lam = reg * tr(K_SS) / m. The normal equations are solved
    by a symmetric eigendecomposition, with directions below ``m * eps * max`` dropped
    (the minimum-norm solution when K_ST K_TS is singular).
    """
    x_support = np.asarray(x_support)
    m = x_support.shape[0]
    y_target = np.asarray(y_target, dtype=np.float64)
    gram = np.zeros((m, m))
    cross = np.zeros((m, y_target.shape[1]))
    for s in progress_range(0, x_target.shape[0], chunk_size, enabled=progress, description="label solve"):
        k_ts = krr.kernel_matrix(kernel, x_target[s : s + chunk_size], x_support)
        gram += k_ts.T @ k_ts
        cross += k_ts.T @ y_target[s : s + chunk_size]
    e, q = np.linalg.eigh((gram + gram.T) / 2)
    keep = e > m * np.finfo(np.float64).eps * max(float(e.max()), 1e-300)
    b = q[:, keep] @ ((q[:, keep].T @ cross) / e[keep, None])
    k_ss = krr.kernel_matrix(kernel, x_support, x_support)
    lam = krr.absolute_reg(np.trace(k_ss), m, reg)
    return (k_ss + lam * np.eye(m)) @ b


def label_loss(kernel: KernelFn, x_support, y_support, x_target, y_target, *, reg: float = 1e-6) -> float:
    """``1/2 mean_i || y_i - K(x_i, X_S) (K_SS + lam I)^-1 Y_S ||^2`` over all targets (float64, NumPy)."""
    model = krr.fit(kernel, x_support, y_support, reg=reg)
    r = np.asarray(y_target, dtype=np.float64) - krr.predict(kernel, model, x_target)
    return 0.5 * float(np.mean(np.sum(r * r, axis=1)))

"""Ridge regression in the primal, for kernels with an explicit feature map.

W = (G + lam I_p)^-1 C with G = sum_i phi(x_i) phi(x_i)^T (p, p) and
C = sum_i phi(x_i) y_i^T (p, k). Both are sums over samples, so they are
accumulated chunk by chunk: memory is O(p^2 + chunk * p), independent of n.
lam = reg * tr(G) / n, the same convention as the dual (tr G = tr K).
W is stored as (p, k) so that predictions are phi(x) @ W.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.linalg

from ..parallel import Executor, get_executor
from .._typing import Array, FeatureFn
from ..errors import InvalidInputError
from ._dual import absolute_reg, check_finite

__all__ = ["GramStats", "PrimalModel", "accumulate", "gram_stats", "solve_primal", "fit_primal", "predict_primal", "features_of"]


@dataclasses.dataclass(frozen=True)
class GramStats:
    """Sufficient statistics of ridge regression on ``n`` samples.

    gram: (p, p) float64, sum of phi phi^T. cross: (p, k) float64, sum of phi y^T.
    """

    gram: np.ndarray
    cross: np.ndarray
    n: int

    def __add__(self, other: "GramStats") -> "GramStats":
        return GramStats(self.gram + other.gram, self.cross + other.cross, self.n + other.n)


def _sum_into(a: GramStats, b: GramStats) -> GramStats:
    """``a + b`` written into ``a``'s arrays (the same numbers as ``+``): the reduce of a map whose blocks
    are fresh arrays nobody else holds, so a (p, p) Gram is not allocated again for every block."""
    if not (a.gram.flags.writeable and a.cross.flags.writeable):  # e.g. arrays received from a Dask worker
        return a + b
    np.add(a.gram, b.gram, out=a.gram)
    np.add(a.cross, b.cross, out=a.cross)
    return GramStats(a.gram, a.cross, a.n + b.n)


@dataclasses.dataclass(frozen=True)
class PrimalModel:
    """A fitted primal ridge model: ``w: (p, k)`` float64, ``reg`` relative, ``lam`` absolute."""

    w: np.ndarray
    reg: float
    lam: float


def features_of(features: FeatureFn, x: Array) -> np.ndarray:
    """``phi(x)`` as float64 NumPy: ``(n, h, w, c) -> (n, p)``."""
    return np.asarray(features(x), dtype=np.float64)


def gram_stats(phi: np.ndarray, y: np.ndarray) -> GramStats:
    """Statistics of one block of features ``phi: (n, p)`` and targets ``y: (n, k)``.

    The Gram block runs in the features' own dtype (float32 features use
    float32 BLAS, twice as fast), the cross term in float64; the result is float64, and sums across blocks
    (``+``) are float64, so rounding does not grow with n.
    """
    phi = np.asarray(phi)
    if phi.dtype not in (np.float32, np.float64):
        phi = phi.astype(np.float64)
    # the cross term is cheap (p x k): keep it in float64 so sums of centred labels stay centred
    cross = phi.T.astype(np.float64) @ np.asarray(y, dtype=np.float64)
    return GramStats((phi.T @ phi).astype(np.float64), cross, phi.shape[0])


def _stats_block(x, y, features):
    phi = np.asarray(features(x))
    check_finite("features", phi)
    return gram_stats(phi, y)


def accumulate(
    features: FeatureFn,
    x: Array,
    y: Array,
    *,
    chunk_size: int = 4096,
    progress: bool = False,
    description: str = "Gram matrix",
    executor: Executor | None = None,
) -> GramStats:
    """Accumulate :class:`GramStats` over ``x: (n, h, w, c)``, ``y: (n, k)`` in chunks (a map-reduce
    by ``executor``)."""
    x = np.asarray(x)
    y = np.asarray(y)
    if x.shape[0] != y.shape[0]:
        raise InvalidInputError(f"{x.shape[0]} images but {y.shape[0]} target rows; they must match")
    if x.shape[0] == 0:
        raise InvalidInputError("no training samples")
    return get_executor(executor).map(_stats_block, x, y, broadcast=(features,), block_size=chunk_size,
                                      reduce=_sum_into, progress=progress, description=description)


def solve_primal(stats: GramStats, *, reg: float) -> PrimalModel:
    """``W = (G + lam I)^-1 C`` by Cholesky, with an eigendecomposition fallback when singular."""
    p = stats.gram.shape[0]
    lam = absolute_reg(np.trace(stats.gram), stats.n, reg)
    a = stats.gram + lam * np.eye(p)
    try:
        c = scipy.linalg.cho_factor(a, lower=True, check_finite=False)
        w = scipy.linalg.cho_solve(c, stats.cross, check_finite=False)
        if np.all(np.isfinite(w)):
            return PrimalModel(w, float(reg), lam)
    except np.linalg.LinAlgError:
        pass
    e, q = np.linalg.eigh((a + a.T) / 2)
    cutoff = p * np.finfo(np.float64).eps * max(float(np.abs(e).max()), 1e-300)
    inv = np.where(e > cutoff, 1.0 / np.where(e > cutoff, e, 1.0), 0.0)
    return PrimalModel(q @ (inv[:, None] * (q.T @ stats.cross)), float(reg), lam)


def fit_primal(
    features: FeatureFn, x: Array, y: Array, *, reg: float, chunk_size: int = 4096, progress: bool = False,
    executor: Executor | None = None,
) -> PrimalModel:
    """Primal ridge on ``x: (n, h, w, c)``, targets ``y: (n, k)``; see the module docstring."""
    stats = accumulate(features, x, y, chunk_size=chunk_size, progress=progress, executor=executor)
    return solve_primal(stats, reg=reg)


def _primal_block(x, w, features):
    return features_of(features, x) @ w


def predict_primal(features: FeatureFn, model: PrimalModel, x: Array, *, chunk_size: int = 4096,
                   executor: Executor | None = None) -> np.ndarray:
    """``phi(x) @ W``: ``(n, h, w, c) -> (n, k)`` float64, in row blocks by ``executor``."""
    x = np.asarray(x)
    if x.shape[0] == 0:
        return np.empty((0, model.w.shape[1]), dtype=np.float64)
    return get_executor(executor).map(_primal_block, x, broadcast=(model.w, features), block_size=chunk_size)

"""Choosing the ridge on a held-out split with one eigendecomposition for the whole grid.

Primal: G_fit = Q diag(e) Q^T once; for every lam on the grid the validation
predictions are (Phi_val Q) diag(1 / (e + lam)) (Q^T C_fit), a (n_val, p) x (p, k)
product. Dual: K_fit = Q diag(e) Q^T once; predictions K_val,fit Q diag(1/(e+lam)) Q^T Y.
The grid is relative (lam = reg * tr / n), so it transfers between datasets.
The chosen reg is the one with the best validation accuracy (ties: lower MSE).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from ..parallel import Executor
from .._progress import status
from .._typing import Array, FeatureFn, KernelFn
from ..errors import InvalidInputError
from ._dual import absolute_reg, check_finite, kernel_matrix
from ._primal import GramStats, PrimalModel, accumulate, features_of, gram_stats, solve_primal

__all__ = ["DEFAULT_GRID", "DEFAULT_VAL_SIZE", "effective_val_size", "RegSelection", "split_indices", "held_out_indices", "select_primal", "select_dual", "select_support",
           "fit_primal_selected"]

DEFAULT_GRID: tuple[float, ...] = tuple(float(f"{v:.6g}") for v in 10.0 ** np.arange(-8, 2.25, 0.5))
"""Relative ridge values tried by default: half-decades 1e-8, 3.16e-8, 1e-7, ..., 100 (21 values; one
eigendecomposition serves them all, so a finer grid costs only (n_val, p) x (p, k) products)."""


@dataclasses.dataclass(frozen=True)
class RegSelection:
    """Result of a grid search. ``val_accuracy[i]`` and ``val_mse[i]`` belong to ``grid[i]``."""

    reg: float
    grid: tuple[float, ...]
    val_accuracy: tuple[float, ...]
    val_mse: tuple[float, ...]
    n_fit: int
    n_val: int

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def split_indices(n: int, val_fraction: float, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random (fit, val) index split with ``round(n * val_fraction)`` (at least 1) validation rows."""
    if not 0.0 < val_fraction < 1.0:
        raise InvalidInputError(f"val_fraction must be in (0, 1), got {val_fraction}")
    n_val = max(1, int(round(n * val_fraction)))
    if n_val >= n:
        raise InvalidInputError(f"cannot hold out {n_val} of {n} samples for validation; use more data")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


DEFAULT_VAL_SIZE = 5000
"""Held-out training images for choosing a ridge or validating an iterative method (``--val-size``)."""


def effective_val_size(val_size: int, n: int) -> int:
    """Held-out images actually used: ``val_size``, at most a fifth of the ``n`` training images."""
    return min(int(val_size), n // 5)


def held_out_indices(n: int, size: int, *, seed: int, exclude: Sequence[int] | np.ndarray = ()) -> np.ndarray:
    """``min(size, available)`` sorted random indices of ``range(n)`` outside ``exclude``: the held-out
    training images on which a support set's ridge is chosen (``select_support``)."""
    pool = np.setdiff1d(np.arange(n), np.asarray(exclude, dtype=int))
    if pool.size == 0:
        pool = np.arange(n)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(pool, size=min(size, pool.size), replace=False))


def _grid(grid: Sequence[float]) -> tuple[float, ...]:
    g = tuple(float(v) for v in grid)
    if not g or any(not np.isfinite(v) or v < 0 for v in g):
        raise InvalidInputError(f"reg grid must be non-empty, finite and >= 0, got {grid}")
    return g


def _scan(a_val: np.ndarray, b: np.ndarray, e: np.ndarray, lams: list[float], y_val: np.ndarray):
    """Validation accuracy and MSE of ``a_val diag(1/(e+lam)) b`` for each lam."""
    labels = y_val.argmax(axis=1)
    accs, mses = [], []
    e = np.maximum(e, 0.0)
    for lam in lams:
        d = e + lam
        inv = np.where(d > 0, 1.0 / np.where(d > 0, d, 1.0), 0.0)
        pred = a_val @ (inv[:, None] * b)
        accs.append(float(np.mean(pred.argmax(axis=1) == labels)))
        mses.append(float(np.mean((pred - y_val) ** 2)))
    return accs, mses


def _pick(grid, accs, mses) -> float:
    best = max(range(len(grid)), key=lambda i: (accs[i], -mses[i]))
    return grid[best]


def select_primal(
    stats_fit: GramStats, phi_val: np.ndarray, y_val: np.ndarray, *, grid: Sequence[float] = DEFAULT_GRID
) -> RegSelection:
    """Grid search in the primal from fit-split statistics and validation features ``phi_val: (n_val, p)``."""
    g = _grid(grid)
    e, q = np.linalg.eigh(stats_fit.gram)
    a_val = np.asarray(phi_val, dtype=np.float64) @ q
    b = q.T @ stats_fit.cross
    tr = float(np.trace(stats_fit.gram))
    lams = [absolute_reg(tr, stats_fit.n, r) for r in g]
    accs, mses = _scan(a_val, b, e, lams, np.asarray(y_val, dtype=np.float64))
    return RegSelection(_pick(g, accs, mses), g, tuple(accs), tuple(mses), stats_fit.n, int(phi_val.shape[0]))


def select_dual(
    kernel: KernelFn,
    x: Array,
    y: Array,
    *,
    grid: Sequence[float] = DEFAULT_GRID,
    val_fraction: float = 0.05,
    seed: int = 0,
    executor: Executor | None = None,
) -> RegSelection:
    """Grid search for dual KRR on ``x: (n, h, w, c)``, targets ``y: (n, k)``: one ``eigh`` of K_fit."""
    x = np.asarray(x)
    y = np.asarray(y, dtype=np.float64)
    check_finite("images", x)
    g = _grid(grid)
    fit_idx, val_idx = split_indices(x.shape[0], val_fraction, seed=seed)
    k_fit = kernel_matrix(kernel, x[fit_idx], x[fit_idx], executor=executor)
    k_val = kernel_matrix(kernel, x[val_idx], x[fit_idx], executor=executor)
    e, q = np.linalg.eigh((k_fit + k_fit.T) / 2)
    tr = float(np.trace(k_fit))
    lams = [absolute_reg(tr, len(fit_idx), r) for r in g]
    accs, mses = _scan(k_val @ q, q.T @ y[fit_idx], e, lams, y[val_idx])
    return RegSelection(_pick(g, accs, mses), g, tuple(accs), tuple(mses), len(fit_idx), len(val_idx))


def select_support(
    kernel: KernelFn,
    x_support: Array,
    y_support: Array,
    x_val: Array,
    y_val: Array,
    *,
    grid: Sequence[float] = DEFAULT_GRID,
    executor: Executor | None = None,
) -> RegSelection:
    """Ridge for KRR trained on a (distilled) support set, chosen on separate validation data.

    ``x_support: (m, h, w, c)``, ``y_support: (m, k)``, ``x_val: (v, h, w, c)``, ``y_val: (v, k)``;
    one ``eigh`` of K_SS serves the whole grid.
    """
    g = _grid(grid)
    check_finite("support images", x_support)
    k_ss = kernel_matrix(kernel, x_support, x_support, executor=executor)
    k_vs = kernel_matrix(kernel, x_val, x_support, executor=executor)
    e, q = np.linalg.eigh((k_ss + k_ss.T) / 2)
    m = k_ss.shape[0]
    lams = [absolute_reg(float(np.trace(k_ss)), m, r) for r in g]
    accs, mses = _scan(k_vs @ q, q.T @ np.asarray(y_support, dtype=np.float64), e, lams,
                       np.asarray(y_val, dtype=np.float64))
    return RegSelection(_pick(g, accs, mses), g, tuple(accs), tuple(mses), m, int(k_vs.shape[0]))


def fit_primal_selected(
    features: FeatureFn,
    x: Array,
    y: Array,
    *,
    grid: Sequence[float] = DEFAULT_GRID,
    val_fraction: float = 0.05,
    seed: int = 0,
    chunk_size: int = 4096,
    progress: bool = False,
    executor: Executor | None = None,
) -> tuple[PrimalModel, RegSelection]:
    """Choose reg on a held-out split, then refit on all of ``x``.

    One pass over all of ``x`` in its own order (no copy of the fit split) gives G_all; the held-out
    rows' features give G_val, and G_fit = G_all - G_val (float64). The whole search costs one pass over
    the data, the held-out features once more, and one ``eigh`` of a (p, p) matrix.
    """
    x = np.asarray(x)
    y = np.asarray(y, dtype=np.float64)
    fit_idx, val_idx = split_indices(x.shape[0], val_fraction, seed=seed)
    stats_all = accumulate(features, x, y, chunk_size=chunk_size, progress=progress, description="Gram matrix",
                           executor=executor)
    phi_val = features_of(features, x[val_idx])
    check_finite("features", phi_val)
    stats_val = gram_stats(phi_val, y[val_idx])
    stats_fit = GramStats(stats_all.gram - stats_val.gram, stats_all.cross - stats_val.cross,
                          stats_all.n - stats_val.n)
    with status("choosing the ridge on the held-out split", enabled=progress):
        sel = select_primal(stats_fit, phi_val, y[val_idx], grid=grid)
    return solve_primal(stats_all, reg=sel.reg), sel

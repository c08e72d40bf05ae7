"""Distil-Boost's initialisations (Tukan, Maalouf & Osadchy, arXiv:2307.08086): coresets of each class.

Three selections of ``ipc`` real images per class, each an ``init`` for every iterative method
(``--init``) and, with no learning, the method ``coreset`` (``--method coreset --init NAME``):

- ``kcenter``: greedy farthest-first traversal (the K-center baseline the paper argues against):
  start at the image nearest the class mean, then repeatedly add the image farthest from those chosen.
  Deterministic for images of at most 256 pixels; above that the distances are taken on a random
  projection drawn from the key. Cost O(n ipc p).
- ``kmeans-coreset``: the lightweight K-means coreset (Bachem, Lucic & Krause, KDD 2018): draw with
  probability ``q(x) = 1/(2 n_c) + d(x, mean)^2 / (2 sum d^2)`` (``d``: distance to the class mean), for
  non-kernel methods. Cost O(n p).
- ``gaussian-coreset``: sensitivity sampling for the Gaussian kernel density of the class, for kernel
  (NTK/NNGP) methods, whose kernels the paper relates to a Gaussian kernel. A point's sensitivity
  ``sup_x k(p, x) / sum_q k(q, x)`` is at least its value at ``x = p``, ``1 / rho(p)`` with
  ``rho(p) = sum_q k(p, q)`` the unnormalised density at ``p`` (``k(p, p) = 1``); we sample with
  ``q(p) = 1/(2 n_c) + s(p) / (2 sum s)``, ``s = 1 / rho``, so images in sparse parts of the class are
  favoured and dense parts still get their share. ``rho`` comes from 512 random Fourier features of the
  Gaussian kernel (``rho(p) ~ z(p) . sum_q z(q)``), so the cost is O(n p D), linear in n. Bandwidth:
  ``k(p, q) = exp(-||p - q||^2 / (2 sigma^2))`` with ``2 sigma^2`` the median squared distance between
  500 random pairs of the class (the median heuristic).

Our own choices where the paper's text was not available to us: the selections run per class
(balanced sets, as every method here needs), draw without replacement (distinct images) and drop the
coreset weights (a distilled set has none); distances are taken on a Gaussian random projection to
256 dimensions when images have more pixels (Johnson-Lindenstrauss), seeded from the run's key.
"""

from __future__ import annotations

import numpy as np

from ..data import one_hot
from ..errors import InvalidInputError
from ._registry import Option, register_method
from .iterative import INITS, numpy_seed
from ._types import Context, MethodOutput

__all__ = ["kcenter_indices", "kmeans_coreset_indices", "gaussian_coreset_indices", "coreset_init",
           "COVERAGE_DIM"]

COVERAGE_DIM = 256  # dimensions distances are computed in (random projection above that)
_RFF_FEATURES = 512
_MEDIAN_PAIRS = 500


def _flat(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rows of ``x`` as float64 vectors, randomly projected to COVERAGE_DIM dimensions when longer."""
    f = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    if f.shape[1] > COVERAGE_DIM:
        g = rng.standard_normal((f.shape[1], COVERAGE_DIM)) / np.sqrt(COVERAGE_DIM)
        f = f @ g
    return f


def _sq_dist_to(f: np.ndarray, point: np.ndarray) -> np.ndarray:
    return np.sum((f - point) ** 2, axis=1)


def kcenter_indices(f: np.ndarray, m: int) -> np.ndarray:
    """Greedy farthest-first traversal of the rows of ``f``: ``m`` indices, the first nearest the mean."""
    chosen = [int(np.argmin(_sq_dist_to(f, f.mean(axis=0))))]
    nearest = _sq_dist_to(f, f[chosen[0]])
    nearest[chosen[0]] = -1.0  # never chosen twice, even among duplicate images
    for _ in range(1, m):
        nxt = int(np.argmax(nearest))
        chosen.append(nxt)
        nearest = np.minimum(nearest, _sq_dist_to(f, f[nxt]))
        nearest[chosen] = -1.0
    return np.asarray(chosen)


def _draw(q: np.ndarray, m: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``m`` distinct indices drawn with probabilities ``q`` and their coreset weights ``1 / (m q)``."""
    q = q / q.sum()
    idx = rng.choice(len(q), size=m, replace=False, p=q)
    return idx, 1.0 / (m * q[idx])


def kmeans_coreset_indices(f: np.ndarray, m: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Lightweight K-means coreset of the rows of ``f``: ``m`` indices and their weights."""
    d2 = _sq_dist_to(f, f.mean(axis=0))
    n = len(f)
    total = d2.sum()
    # a class whose images are all identical (or all zero) has no spread: the uniform half is the whole law
    spread = d2 / total if total > 0 and np.isfinite(total) else np.full(n, 1.0 / n)
    return _draw(0.5 / n + 0.5 * spread, m, rng)


def gaussian_bandwidth(f: np.ndarray, rng: np.random.Generator) -> float:
    """``2 sigma^2``: the median squared distance between random pairs of rows (the median heuristic)."""
    n = len(f)
    if n < 2:
        return 1.0
    a = rng.integers(0, n, _MEDIAN_PAIRS)
    b = (a + rng.integers(1, n, _MEDIAN_PAIRS)) % n  # never a pair with itself
    med = float(np.median(np.sum((f[a] - f[b]) ** 2, axis=1)))
    return med if med > 0 else 1.0


def kernel_density(f: np.ndarray, two_sigma2: float, rng: np.random.Generator) -> np.ndarray:
    """``rho(p) = sum_q exp(-||p - q||^2 / (2 sigma^2))`` over the rows, from random Fourier features
    (clipped below at 1, its exact value's lower bound ``k(p, p)``)."""
    w = rng.standard_normal((f.shape[1], _RFF_FEATURES)) * np.sqrt(2.0 / two_sigma2)
    b = rng.uniform(0, 2 * np.pi, _RFF_FEATURES)
    z = np.sqrt(2.0 / _RFF_FEATURES) * np.cos(f @ w + b)
    return np.maximum(z @ z.sum(axis=0), 1.0)


def gaussian_coreset_indices(f: np.ndarray, m: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Sensitivity sampling for the Gaussian kernel density of the rows of ``f``: ``m`` indices, weights."""
    rho = kernel_density(f, gaussian_bandwidth(f, rng), rng)
    s = 1.0 / rho
    n = len(f)
    return _draw(0.5 / n + 0.5 * s / s.sum(), m, rng)


_SELECT = {
    "kcenter": lambda f, m, rng: kcenter_indices(f, m),
    "kmeans-coreset": lambda f, m, rng: kmeans_coreset_indices(f, m, rng)[0],
    "gaussian-coreset": lambda f, m, rng: gaussian_coreset_indices(f, m, rng)[0],
}


def coreset_init(name: str):
    """The init ``name`` (one of ``kcenter``, ``kmeans-coreset``, ``gaussian-coreset``): per class,
    ``ipc`` real images, laid out class by class, with one-hot labels."""
    select = _SELECT[name]

    def init(x, labels, *, kernel=None, num_classes, ipc, key):
        rng = np.random.default_rng([numpy_seed(key), 0x636F7265])  # "core"
        f = _flat(x, rng)
        labels = np.asarray(labels)
        parts = []
        for c in range(num_classes):
            members = np.flatnonzero(labels == c)
            if members.size < ipc:
                raise InvalidInputError(f"class {c} has {members.size} images in the pool, fewer than ipc={ipc}")
            parts.append(members[np.asarray(select(f[members], ipc, rng))])
        idx = np.concatenate(parts)
        return np.asarray(x[idx]), one_hot(labels[idx], num_classes, dtype=np.float64)

    init.__name__ = name.replace("-", "_") + "_init"
    init.__doc__ = f"``{name}`` per class (see :mod:`kdistill.methods._coreset`)."
    return init


for _name in _SELECT:
    INITS[_name] = coreset_init(_name)


@register_method("coreset", doc="real images chosen per class by a coreset (Distil-Boost's initialisations), no "
                 "learning; any kernel", options=[
                     Option("init", str, "gaussian-coreset", "how the images are chosen",
                            choices=("gaussian-coreset", "kmeans-coreset", "kcenter", "real"))])
def _run_coreset(ctx: Context, opts: dict) -> MethodOutput:
    import jax

    init = INITS[opts["init"]]
    images, labels = init(ctx.x_train, ctx.labels, kernel=ctx.kernel, num_classes=ctx.num_classes,
                          ipc=ctx.config.ipc, key=jax.random.key(ctx.config.seed))
    return MethodOutput(np.asarray(images), np.asarray(labels), {"init": opts["init"]})

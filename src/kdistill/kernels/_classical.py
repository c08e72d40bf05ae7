"""Classical kernels: linear and Gaussian (RBF)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ._spec import Kernel, Param, register

__all__ = ["flatten", "host_flatten", "linear", "rbf", "sq_distances"]


def flatten(x: jax.Array) -> jax.Array:
    """``x: (n, h, w, c) -> (n, h*w*c)``; integer images become floats (the default float type)."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    return x.reshape(x.shape[0], -1)


def host_flatten(x: np.ndarray, dtype) -> np.ndarray:
    """``(n, h, w, c) -> (n, h*w*c)`` as a ``dtype`` NumPy array (a view when nothing changes)."""
    return np.asarray(x).reshape(x.shape[0], -1).astype(dtype, copy=False)


def sq_distances(f1: jax.Array, f2: jax.Array) -> jax.Array:
    """Squared Euclidean distances ``(n1, p), (n2, p) -> (n1, n2)``, clipped at 0."""
    d = (
        jnp.sum(f1 * f1, axis=1)[:, None]
        + jnp.sum(f2 * f2, axis=1)[None, :]
        - 2.0 * f1 @ f2.T
    )
    return jnp.maximum(d, 0.0)


def _unflatten(f, image_shape: tuple[int, ...]) -> np.ndarray:
    f = np.asarray(f, dtype=np.float64)
    return f.reshape((f.shape[0], *image_shape))


@register("linear", doc="k(x, y) = <x, y> on flattened pixels (linear ridge regression)", aliases=("identity",))
def linear() -> Kernel:
    def fn(x1, x2):
        return flatten(x1) @ flatten(x2).T

    return Kernel("linear", (), fn, features=flatten, inverse=_unflatten, host_features=host_flatten)


@register(
    "rbf",
    params={"gamma": Param(float, 0.0, "width; k = exp(-gamma ||x - y||^2); 0 means 1 / (h*w*c)",
                           min=0.0, max=1e6)},
    doc="Gaussian kernel exp(-gamma ||x - y||^2) on flattened pixels",
)
def rbf(*, gamma: float = 0.0) -> Kernel:
    """Gaussian kernel; ``gamma`` in [0, 1e6] (0: 1 / d, d = h*w*c; the usual values on standardised
    images are near 1 / d, far below the bound)."""

    def fn(x1, x2):
        f1, f2 = flatten(x1), flatten(x2)
        g = gamma if gamma > 0 else 1.0 / f1.shape[1]
        return jnp.exp(-g * sq_distances(f1, f2))

    return Kernel("rbf", (("gamma", gamma),), fn)

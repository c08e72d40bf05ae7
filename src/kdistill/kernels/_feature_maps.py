"""Explicit, invertible feature maps for closed-form distillation (Chen, Huang & Weng, NeurIPS 2024).

Each is registered as a kernel ``k(x1, x2) = phi(x1) . phi(x2)`` with ``features``
and ``inverse`` set, so ridge regression can run in the primal and a target
feature matrix can be mapped back to images.

- ``fcnn``: phi(x) = LeakyReLU(A_L ... LeakyReLU(A_1 x)), A_1 (p x d), A_l (p x p), iid
  N(0, w_std^2 / fan_in) entries, slope 0.1; p = d by default (square: invertible with
  probability 1), ``width`` sets p (p < d: onto; p > d: injective, not onto).
- ``rff``: random Fourier features phi(x) = sqrt(2/p) cos(A x + b), p = d,
  A ~ N(0, 2 gamma), b ~ U[0, 2 pi) (approximates exp(-gamma ||x - y||^2)).
  Its inverse exists only inside the range of phi (|sqrt(p/2) f_i| <= 1);
  outside it the coordinates are clipped and the round trip is not exact. Of the
  many preimages (cos is periodic and even) it returns the one with the smallest
  pre-activations |A x| coordinate by coordinate.

Each map also has a NumPy implementation (``host_features``) used on NumPy inputs, and
its inverse runs on the host in float64.

Weights are drawn from NumPy's ``default_rng(seed)`` (PCG64) and the input dimension,
so the same spec always gives the same map (a JAX draw would compile a program
first: half a second of a closed-form run).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ._classical import flatten, host_flatten
from ..errors import InvalidInputError
from ._spec import MAX_SEED, Kernel, Param, check_bytes, check_scale, register

__all__ = ["fcnn", "rff", "leaky_relu", "leaky_relu_inverse", "WEIGHTS_DRAW"]

WEIGHTS_DRAW = "numpy-default_rng"
"""How fcnn's and rff's weights are drawn, recorded in every distilled set's sidecar (``kernel_weights``):
closed-form images fit one draw only, so a set made when the weights came from ``jax.random`` (before
this key existed) is refused rather than evaluated against other weights. Both kernels say so in
``Kernel.weights_draw``."""


def leaky_relu(z, slope):
    return jnp.where(z > 0, z, slope * z)


def leaky_relu_inverse(z, slope):
    return jnp.where(z > 0, z, z / slope)


def _host_leaky_relu(h: np.ndarray, slope: float) -> np.ndarray:
    """LeakyReLU in place on a NumPy array: max(z, slope z) for 0 < slope <= 1 (15x faster than a masked
    multiply)."""
    return np.maximum(h, h * h.dtype.type(slope), out=h)


def _fcnn_shapes(d: int, depth: int, width: int) -> list[tuple[int, int]]:
    """Weight shapes: (p, d) then (p, p), with p = width (0: d)."""
    p = width or d
    return [(p, d)] + [(p, p)] * (depth - 1)


@functools.lru_cache(maxsize=8)
def _fcnn_draw(seed: int, d: int, depth: int, width: int = 0) -> tuple[np.ndarray, ...]:
    """Standard normal matrices from NumPy's ``default_rng(seed)`` (no JAX program to compile: half a second of
    a closed-form run), drawn in float32 whatever the precision, so float32 and float64 inputs see the same
    map."""
    rng = np.random.default_rng(seed)
    return tuple(rng.standard_normal(shape, dtype=np.float32) for shape in _fcnn_shapes(d, depth, width))


def _fcnn_weights(seed: int, d: int, depth: int, w_std: float, dtype, width: int = 0) -> list[jax.Array]:
    return [(w_std / np.sqrt(a.shape[1]) * jnp.asarray(a)).astype(dtype) for a in _fcnn_draw(seed, d, depth, width)]


@functools.lru_cache(maxsize=8)
def _fcnn_weights_host(seed: int, d: int, depth: int, w_std: float, width: int = 0) -> tuple[np.ndarray, ...]:
    """The same weights as :func:`_fcnn_weights`, as float64 NumPy arrays (drawn once per process)."""
    return tuple(w_std / np.sqrt(a.shape[1]) * np.asarray(a, dtype=np.float64)
                 for a in _fcnn_draw(seed, d, depth, width))


@functools.lru_cache(maxsize=8)
def _fcnn_weights_host_t(seed: int, d: int, depth: int, w_std: float, width: int, dtype: str
                         ) -> tuple[np.ndarray, ...]:
    """The transposed weights in ``dtype``, contiguous, for ``h @ a.T`` (cast once, not per batch)."""
    return tuple(np.ascontiguousarray(a.T, dtype=dtype) for a in _fcnn_weights_host(seed, d, depth, w_std, width))


def _check_square_weights(family: str, d: int, count: int, dtype, settings: str) -> None:
    """Refuse ``count`` random ``(d, d)`` matrices (drawn in float32, used in ``dtype``) beyond MAX_BYTES."""
    nbytes = count * d * d * (4 + jnp.dtype(dtype).itemsize)
    what = f"random {d} x {d} weights{' per layer' if count > 1 else ''} for inputs of {d} = h*w*c features{settings}"
    check_bytes(family, nbytes, what, "depth or the image size" if count > 1 else "the image size")


def _linear_kernel_of(features):
    def fn(x1, x2):
        return features(x1) @ features(x2).T

    return fn


@register(
    "fcnn",
    params={
        # d x d weights per layer (d = h*w*c): 32 layers are ~3.6 GB on CIFAR in float64
        "depth": Param(int, 1, "number of LeakyReLU layers", min=1, max=32),
        # the inverse divides by the slope: below 1e-4 it amplifies rounding errors by > 1e4 per layer
        "slope": Param(float, 0.1, "LeakyReLU negative slope", min=1e-4, max=1.0),
        "w_std": Param(float, float(np.sqrt(2.0)), "weight scale: A_ij ~ N(0, w_std^2 / fan_in)", min=0.01,
                       max=10.0),
        "seed": Param(int, 0, "seed of the random weights", min=0, max=MAX_SEED),
        "width": Param(int, 0, "features p; 0: p = d = h*w*c (square, invertible); p < d is onto, p > d is not",
                       min=0, max=16384),
    },
    doc="linear kernel on random LeakyReLU features, invertible at width d (Chen et al. 2024)",
)
def fcnn(*, depth: int = 1, slope: float = 0.1, w_std: float = float(np.sqrt(2.0)), seed: int = 0,
         width: int = 0) -> Kernel:
    """phi(x) = LeakyReLU(A_L ... LeakyReLU(A_1 x)), A_1: (p, d), A_l: (p, p).

    At p = d every layer is a bijection: ``inverse`` is exact. At p < d the first layer has full row rank: the
    map is onto and ``inverse`` returns the minimum-norm preimage. At p > d the map is injective but not onto
    (Chen et al. Sec. 5.2): ``inverse`` returns the layer-by-layer least-squares preimage, and the closed-form
    method says how far its images fall from the targets.
    """
    # a layer multiplies the feature variance by w_std^2 (1 + slope^2) / 2
    check_scale("fcnn", gain=w_std**2 * (1 + slope**2) / 2, layers=depth,
                settings=f"w_std={w_std!r}, slope={slope!r} with depth={depth}")
    settings = f" with depth={depth}" + (f", width={width}" if width else "")

    def check(d: int, dtype) -> None:
        p = width or d
        _check_square_weights("fcnn", max(p, d), depth, dtype, settings)

    def features(x):
        h = flatten(x)
        check(h.shape[1], h.dtype)
        for a in _fcnn_weights(seed, h.shape[1], depth, w_std, h.dtype, width):
            h = leaky_relu(h @ a.T, slope)
        return h

    def host_features(x, dtype):
        h = host_flatten(x, dtype)
        check(h.shape[1], dtype)
        for a_t in _fcnn_weights_host_t(seed, h.shape[1], depth, w_std, width, np.dtype(dtype).name):
            h = _host_leaky_relu(h @ a_t, slope)
        return h

    def inverse(f, image_shape):
        h = np.array(f, dtype=np.float64)
        d = int(np.prod(image_shape))
        if h.shape[1] != (width or d):
            raise InvalidInputError(f"fcnn inverse: features have {h.shape[1]} columns, expected {width or d}")
        check(d, h.dtype)
        for a in reversed(_fcnn_weights_host(seed, d, depth, w_std, width)):
            h = np.minimum(h, h / slope)  # inverse LeakyReLU: f / slope where f < 0 (slope <= 1)
            if a.shape[0] == a.shape[1]:
                h = np.linalg.solve(a, h.T).T
            else:  # least squares (p > d) or minimum norm (p < d)
                h = np.linalg.lstsq(a, h.T, rcond=None)[0].T
        return h.reshape((h.shape[0], *image_shape))

    params = (("depth", depth), ("slope", slope), ("w_std", w_std), ("seed", seed), ("width", width))
    return Kernel("fcnn", params, _linear_kernel_of(features), features=features, inverse=inverse,
                  host_features=host_features, weights_draw=WEIGHTS_DRAW)


@functools.lru_cache(maxsize=8)
def _rff_draw(seed: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Standard normal frequencies (d, d) and phases in [0, 2 pi), drawn in float32 whatever the precision, from
    NumPy's ``default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((d, d), dtype=np.float32)
    return a, rng.uniform(0.0, 2 * np.pi, size=d).astype(np.float32)


def _rff_scale(d: int, gamma: float) -> float:
    return float(np.sqrt(2.0 * (gamma if gamma > 0 else 1.0 / d)))


def _rff_weights(seed: int, d: int, gamma: float, dtype):
    a, b = _rff_draw(seed, d)
    return jnp.asarray(a).astype(dtype) * _rff_scale(d, gamma), jnp.asarray(b).astype(dtype)


@functools.lru_cache(maxsize=8)
def _rff_weights_host(seed: int, d: int, gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """The same frequencies and phases as :func:`_rff_weights`, as float64 NumPy arrays."""
    a, b = _rff_draw(seed, d)
    return np.asarray(a, dtype=np.float64) * _rff_scale(d, gamma), np.asarray(b, dtype=np.float64)


@functools.lru_cache(maxsize=8)
def _rff_weights_host_t(seed: int, d: int, gamma: float, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """A^T (contiguous) and b in ``dtype``, for ``h @ A^T + b`` (cast once, not per batch)."""
    a, b = _rff_weights_host(seed, d, gamma)
    return np.ascontiguousarray(a.T, dtype=dtype), b.astype(dtype)


@register(
    "rff",
    params={
        "gamma": Param(float, 0.0, "RBF width the features approximate; 0 means 1 / d", min=0.0, max=1e6),
        "seed": Param(int, 0, "seed of the random frequencies and phases", min=0, max=MAX_SEED),
    },
    doc="linear kernel on d random Fourier features sqrt(2/d) cos(Ax + b) (approximates rbf)",
)
def rff(*, gamma: float = 0.0, seed: int = 0) -> Kernel:
    def features(x):
        h = flatten(x)
        _check_square_weights("rff", h.shape[1], 1, h.dtype, "")
        a, b = _rff_weights(seed, h.shape[1], gamma, h.dtype)
        return jnp.sqrt(2.0 / h.shape[1]) * jnp.cos(h @ a.T + b)

    def host_features(x, dtype):
        h = host_flatten(x, dtype)
        _check_square_weights("rff", h.shape[1], 1, dtype, "")
        a_t, b = _rff_weights_host_t(seed, h.shape[1], gamma, np.dtype(dtype).name)
        z = h @ a_t
        z += b
        np.cos(z, out=z)
        z *= dtype(np.sqrt(2.0 / h.shape[1]))
        return z

    def inverse(f, image_shape):
        f = np.asarray(f, dtype=np.float64)
        p = f.shape[1]
        _check_square_weights("rff", p, 1, f.dtype, "")
        a, b = _rff_weights_host(seed, p, gamma)
        angle = np.arccos(np.clip(f * np.sqrt(p / 2.0), -1.0, 1.0))  # outside [-1, 1] no preimage exists
        # cos(t) = c has the solutions t = +-arccos(c) + 2 pi j: take the one nearest b, so the pre-activations
        # A x = t - b are as small as the map allows (images ~6x smaller than the principal branch's)
        best = None
        for t in (angle, -angle):
            t = t + 2 * np.pi * np.round((b - t) / (2 * np.pi))
            best = t if best is None else np.where(np.abs(t - b) < np.abs(best - b), t, best)
        x = np.linalg.solve(a, (best - b).T).T
        return x.reshape((x.shape[0], *image_shape))

    return Kernel("rff", (("gamma", gamma), ("seed", seed)), _linear_kernel_of(features), features=features,
                  inverse=inverse, host_features=host_features, feature_bound=_rff_bound, weights_draw=WEIGHTS_DRAW)


def _rff_bound(p: int) -> float:
    """rff's features are ``sqrt(2/p) cos(.)``: no coordinate leaves ``[-sqrt(2/p), sqrt(2/p)]``."""
    return float(np.sqrt(2.0 / p))

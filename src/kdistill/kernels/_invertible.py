"""Three more explicit feature maps with exact inverses, for closed-form distillation
(Chen, Huang & Weng, NeurIPS 2024, arXiv:2410.17606). Like ``fcnn`` and ``rff`` each is
registered as the kernel ``k(x1, x2) = phi(x1) . phi(x2)`` with ``features`` (JAX),
``host_features`` (the same maths in NumPy) and ``inverse`` (float64 NumPy).

- ``inn``: an invertible network built from affine coupling layers (RealNVP, arXiv:1605.08803),
  p = d. Layer l permutes the d coordinates with a fixed random permutation, splits them into
  halves ``(a, b)`` (``a``: the first ``d // 2``) and sets
  ``b <- b * exp(s(a)) + t(a)``, ``s(a) = scale * tanh(S u)``, ``t(a) = T u``,
  ``u = tanh(A a + c)`` (one hidden layer of ``width`` units shared by the two heads);
  ``a`` passes unchanged. Given the output, ``a`` is read off, ``s(a)`` and ``t(a)``
  recomputed and ``b = (b' - t(a)) exp(-s(a))``: a bijection of R^d, hence onto, with
  ``exp(s)`` in ``[e^-scale, e^scale]`` so no layer is badly conditioned.
- ``cnn``: a convolutional map that is a bijection of R^d (p = d), hence onto. The image is
  rearranged by space-to-depth with factor ``patch`` (a permutation of the pixels: block
  ``(i, j)`` of ``patch x patch`` pixels becomes one pixel with ``c' = patch^2 c`` channels,
  ordered ``(row in block, column in block, channel)``), then ``depth`` times: a circular
  (periodic, stride 1, 'same') convolution with ``kernel x kernel`` taps and ``c' -> c'``
  channels, then LeakyReLU(slope). Why it is onto: the centre tap is a random orthogonal
  ``c' x c'`` matrix Q and the other taps E_o are random with spectral norms summing to
  ``r = offcentre < 1``. A circular convolution is diagonalised by the 2-D DFT: at frequency w
  it multiplies the channel vector by ``H(w) = Q + sum_o E_o exp(i w.o)``, and
  ``||sum_o E_o exp(i w.o)|| <= r < 1 = sigma_min(Q)``, so every H(w) is invertible with
  ``1 - r <= sigma(H(w)) <= 1 + r`` (condition number at most ``(1 + r) / (1 - r)``, also when
  the taps wrap around a small image). Each convolution is therefore a bijection, LeakyReLU
  with slope > 0 is one, and so is their composition. The inverse runs on the host: undo the
  LeakyReLU, FFT2 each channel, solve the ``c' x c'`` system at every frequency, inverse FFT
  (real part), ..., undo space-to-depth. Needs h and w divisible by ``patch``.
- ``deep-linear``: ``phi(x) = W_L ... W_1 x = M x``, ``W_1: (p, d)`` with N(0, 1/d) entries,
  ``W_l: (p, p)`` with N(0, 1/p) for l >= 2 (``width=0``: p = d). For p > d the map is
  injective but not onto: its range is the d-dimensional column space of M. ``inverse(f)`` is
  the least-squares preimage ``M^+ f`` (exact for f in range(M), else the preimage of f's
  orthogonal projection onto it). :func:`deep_linear_matrix` (the kernel's ``linear_matrix``) gives
  M, so a caller can test whether target features lie in range(M) and project them onto it.

Weights are drawn in float32 from ``jax.random.key(seed)`` and the input size, so float32 and
float64 inputs see the same map and the same spec always gives the same map; the host path
and the inverse use a cached float64 copy.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import InvalidInputError, SpecError
from ._classical import flatten, host_flatten
from ._feature_maps import _host_leaky_relu, _linear_kernel_of, leaky_relu
from ._spec import MAX_SEED, Kernel, Param, check_bytes, from_spec, register

__all__ = ["inn", "cnn", "deep_linear", "deep_linear_matrix"]

# Images per block on the host path of cnn: bounds the temporaries of the shifted copies.
_HOST_BLOCK = 1024


def _frozen(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Mark cached arrays read-only, so no caller can change a cached map."""
    for a in arrays:
        a.flags.writeable = False
    return arrays


def _rows(f, what: str, p: int | None = None) -> np.ndarray:
    """``f: (n, p)`` as a float64 NumPy copy, with a one-line error for other shapes."""
    f = np.array(f, dtype=np.float64)
    if f.ndim != 2 or (p is not None and f.shape[1] != p):
        want = "(n, p)" if p is None else f"(n, {p})"
        raise InvalidInputError(f"kernel {what!r}: inverse expects features {want}, got shape {f.shape}")
    return f


# --------------------------------------------------------------------------------------------
# inn: affine coupling layers


def _halves(d: int) -> tuple[int, int]:
    if d < 2:
        raise InvalidInputError(f"kernel 'inn': needs at least 2 features (h*w*c >= 2) to split, got {d}")
    return d // 2, d - d // 2


def _inn_draw(seed: int, d: int, depth: int, width: int) -> list[tuple[jax.Array, ...]]:
    """Per layer, standard normal float32 A (width, da), c (width,), S (db, width), T (db, width), cut
    from one draw per layer (fewer random-number programs to compile); float32 whatever the precision."""
    da, db = _halves(d)
    sizes = np.cumsum([width * da, width, db * width])
    layers = []
    for key in _inn_keys(seed, depth):
        z = jax.random.normal(jax.random.fold_in(key, 1), (width * (da + 1 + 2 * db),), dtype=jnp.float32)
        a, c, s, t = jnp.split(z, sizes)
        layers.append((a.reshape(width, da), c, s.reshape(db, width), t.reshape(db, width)))
    return layers


def _inn_keys(seed: int, depth: int) -> jax.Array:
    return jax.random.split(jax.random.key(seed), depth)


@functools.lru_cache(maxsize=8)
def _inn_perms(seed: int, d: int, depth: int) -> tuple[np.ndarray, ...]:
    """Per layer, the permutation (d,) of the coordinates: the order of d uniform float32 draws, as NumPy int32
    whatever the precision (drawn eagerly, also while ``features`` is being traced: constant indices compile
    to a plain gather)."""
    with jax.ensure_compile_time_eval():
        keys = jax.random.split(jax.random.fold_in(jax.random.key(seed), 0), depth)
        u = [np.asarray(jax.random.uniform(k, (d,), dtype=jnp.float32)) for k in keys]
    return _frozen(*(np.argsort(v, kind="stable").astype(np.int32) for v in u))


def _inn_scales(d: int, width: int) -> tuple[float, float, float, float]:
    """Multipliers of A, c, S, T: unit-variance pre-activations for standardised inputs."""
    return 1.0 / np.sqrt(d // 2), 1.0, 1.0 / np.sqrt(width), 1.0 / np.sqrt(width)


def _inn_weights(seed: int, d: int, depth: int, width: int, dtype) -> list[tuple[Any, ...]]:
    scales = _inn_scales(d, width)
    return [(perm, *((m * w).astype(dtype) for m, w in zip(scales, ws)))
            for perm, ws in zip(_inn_perms(seed, d, depth), _inn_draw(seed, d, depth, width))]


@functools.lru_cache(maxsize=8)
def _inn_weights_host(seed: int, d: int, depth: int, width: int) -> tuple[tuple[np.ndarray, ...], ...]:
    """The same permutations and weights as :func:`_inn_weights`, float64 NumPy (drawn once per process)."""
    scales = _inn_scales(d, width)
    return tuple((perm, *_frozen(*(m * np.asarray(w, dtype=np.float64) for m, w in zip(scales, ws))))
                 for perm, ws in zip(_inn_perms(seed, d, depth), _inn_draw(seed, d, depth, width)))


def _check_inn(d: int, depth: int, width: int, dtype) -> None:
    da, db = _halves(d)
    numbers = depth * width * (da + 1 + 2 * db)
    check_bytes("inn", numbers * (4 + np.dtype(dtype).itemsize) + depth * d * 8,
                f"random coupling networks of depth={depth}, width={width} for inputs of {d} = h*w*c features",
                "width, depth or the image size")


@register(
    "inn",
    params={
        "depth": Param(int, 4, "number of affine coupling layers", min=1, max=32),
        "width": Param(int, 128, "hidden units of each layer's coupling network", min=1, max=4096),
        # |s| <= scale: each layer scales a coordinate by at most e^scale; 32 layers at 2 stay far
        # from float32's range (e^64 ~ 6e27)
        "scale": Param(float, 0.5, "log-scale bound: s = scale * tanh(...)", min=0.0, max=2.0),
        "seed": Param(int, 0, "seed of the random permutations and networks", min=0, max=MAX_SEED),
    },
    doc="linear kernel on a random invertible coupling network (normalizing flow), p = d",
)
def inn(*, depth: int = 4, width: int = 128, scale: float = 0.5, seed: int = 0) -> Kernel:
    """``phi: (n, h, w, c) -> (n, d)``, d = h*w*c, a bijection of R^d; see the module docstring."""

    def features(x):
        h = flatten(x)
        d = h.shape[1]
        _check_inn(d, depth, width, h.dtype)
        da = d // 2
        for perm, a1, c1, s2, t2 in _inn_weights(seed, d, depth, width, h.dtype):
            h = jnp.take(h, perm, axis=1)
            a, b = h[:, :da], h[:, da:]
            u = jnp.tanh(a @ a1.T + c1)
            h = jnp.concatenate([a, b * jnp.exp(scale * jnp.tanh(u @ s2.T)) + u @ t2.T], axis=1)
        return h

    def host_features(x, dtype):
        h = host_flatten(x, dtype)
        d = h.shape[1]
        _check_inn(d, depth, width, dtype)
        da = d // 2
        for perm, *ws in _inn_weights_host(seed, d, depth, width):
            a1, c1, s2, t2 = (w.astype(dtype, copy=False) for w in ws)
            h = h[:, perm]
            a, b = h[:, :da], h[:, da:]
            u = np.tanh(a @ a1.T + c1)
            b *= np.exp(dtype(scale) * np.tanh(u @ s2.T))
            b += u @ t2.T
        return h

    def inverse(f, image_shape):
        h = _rows(f, "inn", int(np.prod(image_shape)))
        d = h.shape[1]
        _check_inn(d, depth, width, h.dtype)
        da = d // 2
        for perm, a1, c1, s2, t2 in reversed(_inn_weights_host(seed, d, depth, width)):
            a, b = h[:, :da], h[:, da:]
            u = np.tanh(a @ a1.T + c1)
            b -= u @ t2.T
            b *= np.exp(-scale * np.tanh(u @ s2.T))
            out = np.empty_like(h)
            out[:, perm] = h  # the forward layer took h[:, perm]
            h = out
        return h.reshape((h.shape[0], *image_shape))

    params = (("depth", depth), ("width", width), ("scale", scale), ("seed", seed))
    return Kernel("inn", params, _linear_kernel_of(features), features=features, inverse=inverse,
                  host_features=host_features)


# --------------------------------------------------------------------------------------------
# cnn: circular convolutions with a dominant orthogonal centre tap


def _to_depth(x, patch: int):
    """Space-to-depth ``(n, h, w, c) -> (n, h/patch, w/patch, patch^2 c)`` (NumPy or JAX)."""
    n, h, w, c = x.shape
    x = x.reshape(n, h // patch, patch, w // patch, patch, c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(n, h // patch, w // patch, patch * patch * c)


def _from_depth(z, patch: int, c: int):
    """Inverse of :func:`_to_depth`: ``(n, h', w', patch^2 c) -> (n, h' patch, w' patch, c)``."""
    n, h, w, _ = z.shape
    z = z.reshape(n, h, w, patch, patch, c)
    return z.transpose(0, 1, 3, 2, 4, 5).reshape(n, h * patch, w * patch, c)


def _cnn_grid(image_shape, patch: int) -> tuple[int, int, int]:
    """``(h', w', c')`` after space-to-depth, with one-line errors for shapes it cannot take."""
    if len(image_shape) != 3:
        raise InvalidInputError(f"kernel 'cnn': expects images (n, h, w, c), got image shape {tuple(image_shape)}")
    h, w, c = image_shape
    if h % patch or w % patch:
        raise SpecError(f"kernel 'cnn': patch={patch} does not divide the {h}x{w} images; "
                        f"use a patch that divides both h and w (patch=1 always does)")
    return h // patch, w // patch, patch * patch * c


def _cnn_draw(seed: int, channels: int, depth: int, kernel: int) -> np.ndarray:
    """Standard normal float32 draws ``(depth, kernel^2, c', c')``, one per tap (row-major window order), from
    one flat draw (one small random-number program per size). Evaluated eagerly, also while ``features`` is
    being traced: the taps are normalised on the host."""
    with jax.ensure_compile_time_eval():
        z = jax.random.normal(jax.random.key(seed), (depth * kernel * kernel * channels * channels,), jnp.float32)
        return np.asarray(z).reshape(depth, kernel * kernel, channels, channels)


@functools.lru_cache(maxsize=8)
def _cnn_taps(seed: int, channels: int, depth: int, kernel: int, offcentre: float) -> np.ndarray:
    """Taps ``(depth, kernel, kernel, c', c')`` float64: ``taps[l, a, b]`` (out, in) multiplies the input at
    offset ``(a - r, b - r)``, r = kernel // 2. Centre: the orthogonal factor of a QR of its draw (signs
    fixed by R's diagonal); off-centre: their draws, scaled so their spectral norms sum to ``offcentre``."""
    draws = _cnn_draw(seed, channels, depth, kernel).astype(np.float64)
    centre = (kernel // 2) * kernel + kernel // 2
    others = [i for i in range(kernel * kernel) if i != centre]
    taps = np.zeros_like(draws)
    for layer in range(depth):
        q, rr = np.linalg.qr(draws[layer, centre])
        taps[layer, centre] = q * np.where(np.diag(rr) < 0, -1.0, 1.0)
        if others:
            e = draws[layer, others]
            taps[layer, others] = offcentre / np.linalg.norm(e, ord=2, axis=(1, 2)).sum() * e
    return _frozen(taps.reshape(depth, kernel, kernel, channels, channels))[0]


@functools.lru_cache(maxsize=8)
def _cnn_inverse_response(seed: int, channels: int, depth: int, kernel: int, offcentre: float,
                          grid: tuple[int, int]) -> np.ndarray:
    """``H(w)^-1`` per layer and frequency, ``(depth, h', w', c', c')`` complex128, where
    ``H(w) = sum_{a,b} taps[a, b] exp(2 pi i (w_y (a - r) / h' + w_x (b - r) / w'))`` multiplies
    ``fft2`` of the layer's input (NumPy's sign convention) to give ``fft2`` of its output."""
    taps = _cnn_taps(seed, channels, depth, kernel, offcentre)
    offsets = np.arange(kernel) - kernel // 2
    py = np.exp(2j * np.pi * np.outer(np.arange(grid[0]), offsets) / grid[0])  # (h', kernel)
    px = np.exp(2j * np.pi * np.outer(np.arange(grid[1]), offsets) / grid[1])  # (w', kernel)
    response = np.einsum("ya,xb,labij->lyxij", py, px, taps)
    return _frozen(np.linalg.inv(response))[0]


def _check_cnn(grid: tuple[int, int, int], depth: int, kernel: int, dtype) -> None:
    h, w, c = grid
    nbytes = depth * kernel * kernel * c * c * (4 + 8 + np.dtype(dtype).itemsize) + depth * h * w * c * c * 32
    check_bytes("cnn", nbytes, f"convolution taps and their inverses for depth={depth}, kernel={kernel} "
                f"on {h}x{w} images of {c} channels after space-to-depth", "patch, depth, kernel or the image size")


def _conv_jax(z, taps):
    """Circular 'same' cross-correlation ``out[i, j] = sum_{a,b} taps[a, b] @ z[i + a - r, j + b - r]``."""
    r = taps.shape[0] // 2
    padded = jnp.pad(z, ((0, 0), (r, r), (r, r), (0, 0)), mode="wrap")  # wraps repeatedly if r > h
    return jax.lax.conv_general_dilated(padded, taps.transpose(0, 1, 3, 2), window_strides=(1, 1), padding="VALID",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _conv_host(z: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """:func:`_conv_jax` in NumPy, as a sum of circularly shifted copies."""
    r = taps.shape[0] // 2
    out = np.zeros_like(z)
    for a in range(taps.shape[0]):
        for b in range(taps.shape[1]):
            out += np.roll(z, (r - a, r - b), axis=(1, 2)) @ taps[a, b].T
    return out


@register(
    "cnn",
    params={
        "depth": Param(int, 2, "number of convolution + LeakyReLU layers", min=1, max=8),
        "kernel": Param(int, 3, "odd size of the square convolution window", min=1, max=7),
        "patch": Param(int, 2, "space-to-depth factor (h and w must be divisible by it); 1: none", min=1, max=4),
        # the inverse divides by the slope: below 1e-4 it amplifies rounding errors by > 1e4 per layer
        "slope": Param(float, 0.1, "LeakyReLU negative slope", min=1e-4, max=1.0),
        "offcentre": Param(float, 0.5, "sum r of the off-centre taps' spectral norms; cond <= (1+r)/(1-r)",
                           min=0.0, max=0.95),
        "seed": Param(int, 0, "seed of the random taps", min=0, max=MAX_SEED),
    },
    doc="linear kernel on an onto circular-convolution LeakyReLU network (bijective, p = d)",
)
def cnn(*, depth: int = 2, kernel: int = 3, patch: int = 2, slope: float = 0.1, offcentre: float = 0.5,
        seed: int = 0) -> Kernel:
    """``phi: (n, h, w, c) -> (n, d)``, d = h*w*c, features in the order ``(h', w', c')`` of the
    space-to-depth grid; a bijection of R^d, see the module docstring."""
    if kernel % 2 == 0:
        raise SpecError(f"kernel 'cnn': kernel={kernel} is even; use an odd integer in 1 .. 7")

    def taps_for(grid, dtype):
        _check_cnn(grid, depth, kernel, dtype)
        return _cnn_taps(seed, grid[2], depth, kernel, offcentre)

    def features(x):
        x = jnp.asarray(x)
        grid = _cnn_grid(x.shape[1:], patch)
        z = _to_depth(x, patch)
        for taps in taps_for(grid, z.dtype):
            z = leaky_relu(_conv_jax(z, jnp.asarray(taps, dtype=z.dtype)), slope)
        return flatten(z)

    def host_features(x, dtype):
        x = np.asarray(x)
        grid = _cnn_grid(x.shape[1:], patch)
        taps = taps_for(grid, dtype).astype(dtype, copy=False)
        out = np.empty((x.shape[0], int(np.prod(grid))), dtype=dtype)
        for start in range(0, x.shape[0], _HOST_BLOCK):
            z = _to_depth(x[start:start + _HOST_BLOCK].astype(dtype, copy=False), patch)
            for layer in taps:
                z = _host_leaky_relu(_conv_host(z, layer), slope)
            out[start:start + _HOST_BLOCK] = z.reshape(z.shape[0], -1)
        return out

    def inverse(f, image_shape):
        grid = _cnn_grid(tuple(image_shape), patch)
        f = _rows(f, "cnn", int(np.prod(grid)))
        taps_for(grid, f.dtype)
        inv = _cnn_inverse_response(seed, grid[2], depth, kernel, offcentre, grid[:2])
        z = f.reshape(f.shape[0], *grid)
        for layer in reversed(range(depth)):
            z = np.minimum(z, z / slope)  # inverse LeakyReLU (0 < slope <= 1)
            spectrum = np.fft.fft2(z, axes=(1, 2))
            z = np.fft.ifft2(np.einsum("yxij,nyxj->nyxi", inv[layer], spectrum), axes=(1, 2)).real.copy()
        return _from_depth(z, patch, image_shape[2])

    params = (("depth", depth), ("kernel", kernel), ("patch", patch), ("slope", slope), ("offcentre", offcentre),
              ("seed", seed))
    return Kernel("cnn", params, _linear_kernel_of(features), features=features, inverse=inverse,
                  host_features=host_features)


# --------------------------------------------------------------------------------------------
# deep-linear: a product of random matrices


def _deep_linear_draw(seed: int, d: int, p: int, depth: int) -> list[jax.Array]:
    """Standard normal float32 matrices: (p, d), then depth - 1 of (p, p) (flat draws, reshaped)."""
    keys = jax.random.split(jax.random.key(seed), depth)
    cols = [d] + [p] * (depth - 1)
    return [jax.random.normal(k, (p * n,), dtype=jnp.float32).reshape(p, n) for k, n in zip(keys, cols)]


def _deep_linear_weights(seed: int, d: int, p: int, depth: int, dtype) -> list[jax.Array]:
    return [(a / np.sqrt(a.shape[1])).astype(dtype) for a in _deep_linear_draw(seed, d, p, depth)]


@functools.lru_cache(maxsize=4)
def _deep_linear_host(seed: int, d: int, p: int, depth: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``M = W_L ... W_1`` (p, d) in float64 from the same draws, and its thin SVD ``M = U diag(s) V^T``
    (U (p, d), s (d,), V^T (d, d)) for the least-squares preimage."""
    m = None
    for a in _deep_linear_draw(seed, d, p, depth):
        w = np.asarray(a, dtype=np.float64) / np.sqrt(a.shape[1])
        m = w if m is None else w @ m
    u, s, vt = np.linalg.svd(m, full_matrices=False)
    return _frozen(m, u, s, vt)


def _deep_linear_width(d: int, width: int) -> int:
    return d if width == 0 else width


def _check_deep_linear(d: int, p: int, depth: int, dtype) -> None:
    weights = p * d + (depth - 1) * p * p
    check_bytes("deep-linear", weights * (4 + np.dtype(dtype).itemsize) + 2 * p * d * 8 + d * d * 8,
                f"random weights of depth={depth}, width={p} for inputs of {d} = h*w*c features",
                "width, depth or the image size")


@register(
    "deep-linear",
    params={
        "depth": Param(int, 2, "number of random linear layers", min=1, max=16),
        "width": Param(int, 0, "output width p; 0 means p = d (square layers)", min=0, max=16384),
        "seed": Param(int, 0, "seed of the random matrices", min=0, max=MAX_SEED),
    },
    doc="linear kernel on a product of random matrices W_L...W_1 x (onto only for width <= d)",
)
def deep_linear(*, depth: int = 2, width: int = 0, seed: int = 0) -> Kernel:
    """``phi(x) = M x: (n, h, w, c) -> (n, p)``; see the module docstring and :func:`deep_linear_matrix`."""

    def features(x):
        h = flatten(x)
        d = h.shape[1]
        p = _deep_linear_width(d, width)
        _check_deep_linear(d, p, depth, h.dtype)
        for a in _deep_linear_weights(seed, d, p, depth, h.dtype):
            h = h @ a.T
        return h

    def host_features(x, dtype):
        h = host_flatten(x, dtype)
        d = h.shape[1]
        p = _deep_linear_width(d, width)
        _check_deep_linear(d, p, depth, dtype)
        m = _deep_linear_host(seed, d, p, depth)[0]
        return h @ m.T.astype(dtype, copy=False)

    def inverse(f, image_shape):
        d = int(np.prod(image_shape))
        p = _deep_linear_width(d, width)
        f = _rows(f, "deep-linear", p)
        _check_deep_linear(d, p, depth, f.dtype)
        _, u, s, vt = _deep_linear_host(seed, d, p, depth)
        x = ((f @ u) / s) @ vt  # rows of M^+ f, M^+ = V diag(1/s) U^T
        return x.reshape((x.shape[0], *image_shape))

    def linear_matrix(d: int) -> np.ndarray:
        p = _deep_linear_width(d, width)
        _check_deep_linear(d, p, depth, np.float64)
        return _deep_linear_host(seed, d, p, depth)[0]

    return Kernel("deep-linear", (("depth", depth), ("width", width), ("seed", seed)), _linear_kernel_of(features),
                  features=features, inverse=inverse, host_features=host_features, linear_matrix=linear_matrix)


def deep_linear_matrix(kernel: Kernel | str, d: int) -> np.ndarray:
    """The matrix ``M = W_L ... W_1: (p, d)`` float64 of a ``deep-linear`` kernel on inputs of ``d = h*w*c``
    features, with ``kernel.features(x) == flatten(x) @ M.T`` (to rounding).

    Its column space is the map's range: features ``f: (m, p)`` are reachable when
    ``f - f @ Q @ Q.T`` vanishes for an orthonormal basis Q of it (``Q = numpy.linalg.qr(M)[0]``),
    and ``f @ Q @ Q.T`` is their orthogonal projection onto it. Read-only (shared with the kernel's cache).
    The same as ``kernel.linear_matrix(d)``, for a spec string too.

    >>> m = deep_linear_matrix("deep-linear:width=12", 4)
    >>> m.shape
    (12, 4)
    """
    kernel = from_spec(kernel)
    if kernel.linear_matrix is None:
        raise InvalidInputError(f"deep_linear_matrix needs a 'deep-linear' kernel, got {kernel.spec!r}")
    if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1:
        raise InvalidInputError(f"deep_linear_matrix: d must be a positive integer, got {d!r}")
    return kernel.linear_matrix(int(d))

"""Exact infinite-width ConvNet kernels: ``convnet-ntk`` and ``convnet-nngp``.

Architecture (the KIP "ConvNet", neural-tangents ``stax`` with parameterization
``'ntk'``; arXiv:2011.00050, arXiv:1912.02803):

    Conv3x3(SAME), ReLU, [Conv3x3(SAME), ReLU, AvgPool 2x2 (stride 2, VALID)] * depth, Flatten, Dense

The kernel tracks the full pixel-pair covariance. For images x, x' with pixels
i, j, write S(i, j) for the NNGP and T(i, j) for the NTK of one layer's
pre-activations. Starting from S_0(i, j) = <x_i, x'_j> / C and T_0 = 0:

- Conv (weights iid across filter offsets, so only *equal* offsets on both sides
  survive; zeros outside the image):
  S <- W_std^2 / 9 * sum_{d in {-1,0,1}^2} S(i + d, j + d) + b_std^2,
  T <- W_std^2 / 9 * sum_d T(i + d, j + d) + S.
  The first Conv acts on a rank-C input covariance, so it is one matrix product
  of 3x3 patch vectors: S_1(i, j) = W_std^2 / (9 C) <p_i, p'_j> + b_std^2.
- ReLU, entrywise with the per-pixel variances q(i) = S(x, x)(i, i):
  S <- sqrt(q_i q'_j) J1(rho), T <- T J0(rho) (see :mod:`._arccos`).
- AvgPool 2x2: average S and T over the 2x2 x 2x2 blocks of pixel pairs.
- Flatten + Dense: nngp = W_std^2 mean_i S(i, i) + b_std^2, ntk = W_std^2 mean_i T(i, i) + nngp.

Cost and memory are O((hw)^2) per pair of images. The work is done in tiles of
image pairs whose working set is about ``block_mb`` MiB (``lax.map`` over tiles,
each tile rematerialised in the backward pass), so peak memory does not grow
with the number of images. The per-pixel variances of every layer come from a
first pass over the single images (same recursion, NNGP only).
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax

from ..errors import InvalidInputError, SpecError
from ._arccos import compute_dtype, relu_layer
from ._fc import SQRT2, check_common
from ._spec import Kernel, Param, register

__all__ = ["convnet_kernel", "convnet_ntk", "convnet_nngp", "patches3x3"]

# Live full-resolution arrays per image pair in one tile during the backward pass
# (forward values kept for the vjp plus cotangents); sets the tile size from block_mb.
_LIVE_ARRAYS = 12


def patches3x3(x: jax.Array) -> jax.Array:
    """3x3 SAME (zero-padded) patches: ``(n, h, w, c) -> (n, h, w, 9c)``."""
    n, h, w, c = x.shape
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    return jnp.concatenate([xp[:, a : a + h, b : b + w, :] for a in range(3) for b in range(3)], axis=-1)


def _shift_sum(s: jax.Array, ax1: int, ax2: int) -> jax.Array:
    """``out[.., i, .., j, ..] = sum_{d=-1,0,1} s[.., i+d, .., j+d, ..]`` (zero outside), axes ax1 < ax2."""
    n = s.shape[ax1]
    pad = [(0, 0, 0)] * s.ndim
    pad[ax1] = pad[ax2] = (1, 1, 0)
    p = lax.pad(s, jnp.zeros((), s.dtype), pad)
    out = None
    for d in range(3):
        part = lax.slice_in_dim(lax.slice_in_dim(p, d, d + n, axis=ax1), d, d + n, axis=ax2)
        out = part if out is None else out + part
    return out


def _conv_cov(s: jax.Array) -> jax.Array:
    """Sum over equal 3x3 offsets on both images of a ``(A, H, W, B, H, W)`` covariance tile."""
    return _shift_sum(_shift_sum(s, 1, 4), 2, 5)


def _pool_cov(s: jax.Array) -> jax.Array:
    """2x2 stride-2 VALID average pool of a ``(A, H, W, B, H, W)`` tile on both images."""
    a, h, w, b = s.shape[:4]
    h2, w2 = h // 2, w // 2
    s = s[:, : 2 * h2, : 2 * w2, :, : 2 * h2, : 2 * w2]
    s = s.reshape(a, h2, 2, w2, 2, b, h2, 2, w2, 2)
    return jnp.sum(s, axis=(2, 4, 7, 9)) / 16.0


def _diag(s: jax.Array) -> jax.Array:
    """Pixel diagonal of a ``(A, H, W, B, H, W)`` tile: ``(A, B, H*W)``."""
    a, h, w, b = s.shape[:4]
    return jnp.diagonal(s.reshape(a, h * w, b, h * w), axis1=1, axis2=3)


def _sqrt_var(q: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.maximum(q, jnp.finfo(q.dtype).tiny))


def _network(
    p1: jax.Array,
    p2: jax.Array,
    variances: Callable[[int, jax.Array], tuple[jax.Array, jax.Array]],
    *,
    with_ntk: bool,
    depth: int,
    w_std: float,
    b_std: float,
) -> tuple[jax.Array, jax.Array | None]:
    """Propagate one tile of image pairs through the network.

    ``p1: (A, H, W, 9C)``, ``p2: (B, H, W, 9C)`` are patch vectors;
    ``variances(layer, nngp_tile)`` returns the square roots of the per-pixel
    variances ``(A, H, W), (B, H, W)`` that ReLU number ``layer`` needs.
    Returns the ``(A, B)`` readout NNGP and NTK (``None`` unless ``with_ntk``).
    """
    w2, b2 = w_std**2, b_std**2
    c = p1.shape[-1]
    nngp = jnp.einsum("ahwk,bijk->ahwbij", p1, p2) * (w2 / c) + b2
    ntk = nngp if with_ntk else None
    for layer in range(depth + 1):
        if layer > 0:
            nngp_new = (w2 / 9.0) * _conv_cov(nngp) + b2
            ntk = None if ntk is None else (w2 / 9.0) * _conv_cov(ntk) + nngp_new
            nngp = nngp_new
        s1, s2 = variances(layer, nngp)
        nngp, ntk = relu_layer(nngp, ntk, s1[:, :, :, None, None, None], s2[None, None, None])
        if layer > 0:
            nngp = _pool_cov(nngp)
            ntk = None if ntk is None else _pool_cov(ntk)
    out_nngp = w2 * jnp.mean(_diag(nngp), axis=-1) + b2
    out_ntk = None if ntk is None else w2 * jnp.mean(_diag(ntk), axis=-1) + out_nngp
    return out_nngp, out_ntk


def _self_sqrt_variances(p: jax.Array, *, depth: int, w_std: float, b_std: float) -> list[jax.Array]:
    """Square roots of the per-pixel variances before each ReLU for one image ``p: (H, W, 9C)``.

    Runs the NNGP recursion on the pair (x, x) and reads the variances off its diagonal;
    returns ``depth + 1`` arrays ``(H_l, W_l)``.
    """
    recorded: list[jax.Array] = []

    def variances(layer, nngp):
        h, w = nngp.shape[1], nngp.shape[2]
        s = _sqrt_var(_diag(nngp)[0, 0].reshape(1, h, w))
        recorded.append(s[0])
        return s, s

    _network(p[None], p[None], variances, with_ntk=False, depth=depth, w_std=w_std, b_std=b_std)
    return recorded


def _pad_rows(x: jax.Array, n: int) -> jax.Array:
    return x if x.shape[0] == n else jnp.pad(x, [(0, n - x.shape[0])] + [(0, 0)] * (x.ndim - 1))


def _tile(n: int, size: int) -> tuple[int, int]:
    """Tile length <= size covering n rows in as few tiles as possible with least padding: (length, count)."""
    size = max(1, min(n, size))
    count = -(-n // size)
    return -(-n // count), count


def _map_tiles(f, xs, count: int):
    """``f`` over ``count`` equal tiles of the leading axis of every array in ``xs`` (lax.map, rematerialised)."""
    if count == 1:
        return f(*xs)
    split = [x.reshape(count, x.shape[0] // count, *x.shape[1:]) for x in xs]
    out = lax.map(jax.checkpoint(lambda t: f(*t)), split)
    return jax.tree.map(lambda y: y.reshape(-1, *y.shape[2:]), out)


def convnet_kernel(
    x1,
    x2,
    *,
    get: str = "ntk",
    depth: int = 3,
    w_std: float = SQRT2,
    b_std: float = 0.1,
    block_mb: int = 1024,
) -> jax.Array:
    """Exact infinite-width ConvNet NTK or NNGP (module docstring).

    Args:
      x1: ``(n1, h, w, c)`` images.
      x2: ``(n2, h, w, c)`` images.
      get: ``"ntk"`` or ``"nngp"``.
      block_mb: approximate working memory of one tile of image pairs in MiB.
    Returns:
      ``(n1, n2)``, float64 when ``jax_enable_x64`` is on.
    """
    dtype = compute_dtype(x1, x2)
    x1, x2 = jnp.asarray(x1, dtype), jnp.asarray(x2, dtype)
    if x1.ndim != 4 or x2.ndim != 4 or x1.shape[1:] != x2.shape[1:]:
        raise InvalidInputError(
            f"convnet kernel: expected NHWC images of equal shape, got {x1.shape} and {x2.shape}"
        )
    n1, h, w, _ = x1.shape
    n2 = x2.shape[0]
    if min(h, w) < 2**depth:
        raise InvalidInputError(
            f"convnet kernel: {h}x{w} images are too small for depth={depth} (2x2 pooling {depth} times)"
        )
    settings = dict(depth=depth, w_std=w_std, b_std=b_std)
    pair_bytes = _LIVE_ARRAYS * (h * w) ** 2 * jnp.dtype(dtype).itemsize
    pairs = max(1, int(block_mb) * 2**20 // pair_bytes)

    p1, p2 = patches3x3(x1), patches3x3(x2)

    def self_pass(p):
        size, count = _tile(p.shape[0], pairs)
        pp = _pad_rows(p, size * count)
        out = _map_tiles(lambda t: jax.vmap(lambda q: _self_sqrt_variances(q, **settings))(t), [pp], count)
        return [o[: p.shape[0]] for o in out]

    sv1, sv2 = self_pass(p1), self_pass(p2)

    b_size, b_count = _tile(n2, pairs)
    a_size, a_count = _tile(n1, max(1, pairs // b_size))
    p1 = _pad_rows(p1, a_size * a_count)
    p2 = _pad_rows(p2, b_size * b_count)
    sv1 = [_pad_rows(s, a_size * a_count) for s in sv1]
    sv2 = [_pad_rows(s, b_size * b_count) for s in sv2]
    with_ntk = get == "ntk"

    def tile(ta, tb):
        pa, sa = ta
        pb, sb = tb
        nngp, ntk = _network(pa, pb, lambda layer, _: (sa[layer], sb[layer]), with_ntk=with_ntk, **settings)
        return ntk if with_ntk else nngp

    def row(ta):
        # one tile-row of x1 against every tile of x2: (a_size, n2_padded)
        out = _map_tiles(lambda pb, *sb: tile(ta, (pb, list(sb))).T, [p2, *sv2], b_count)
        return out.T

    k = _map_tiles(lambda pa, *sa: row((pa, list(sa))), [p1, *sv1], a_count)
    return k[:n1, :n2]


def _build(get: str, family: str, depth: int, w_std: float, b_std: float, block_mb: int) -> Kernel:
    depth, w_std, b_std = check_common(family, depth=depth, w_std=w_std, b_std=b_std)
    if isinstance(block_mb, bool) or not isinstance(block_mb, int) or block_mb < 1:
        raise SpecError(f"kernel {family!r}: block_mb must be an integer >= 1 (MiB per tile), got {block_mb!r}")

    fn = jax.jit(functools.partial(convnet_kernel, get=get, depth=depth, w_std=w_std, b_std=b_std, block_mb=block_mb))

    params = (("depth", depth), ("w_std", w_std), ("b_std", b_std), ("block_mb", block_mb))
    return Kernel(family, params, fn)


CONVNET_PARAMS = {
    "depth": Param(int, 3, "number of [Conv3x3, ReLU, AvgPool2x2] blocks after the first Conv3x3, ReLU"),
    "w_std": Param(float, SQRT2, "weight std: W ~ N(0, w_std^2 / fan_in)"),
    "b_std": Param(float, 0.1, "bias std: b ~ N(0, b_std^2)"),
    "block_mb": Param(int, 1024, "approximate working memory per tile of image pairs, MiB (speed/memory only)"),
}


@register("convnet-ntk", params=CONVNET_PARAMS, doc="exact NTK of the infinite-width KIP ConvNet (full pixel-pair covariance)")
def convnet_ntk(*, depth: int = 3, w_std: float = SQRT2, b_std: float = 0.1, block_mb: int = 1024) -> Kernel:
    return _build("ntk", "convnet-ntk", depth, w_std, b_std, block_mb)


@register("convnet-nngp", params=CONVNET_PARAMS, doc="exact NNGP of the infinite-width KIP ConvNet (full pixel-pair covariance)")
def convnet_nngp(*, depth: int = 3, w_std: float = SQRT2, b_std: float = 0.1, block_mb: int = 1024) -> Kernel:
    return _build("nngp", "convnet-nngp", depth, w_std, b_std, block_mb)

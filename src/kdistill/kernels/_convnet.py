"""Exact infinite-width ConvNet kernels: ``convnet-ntk`` and ``convnet-nngp``.

Architecture (neural-tangents ``stax`` with parameterization ``'ntk'``; arXiv:1912.02803),
with ``stem=1`` (the default) the KIP "ConvNet" (arXiv:2011.00050):

    Conv3x3(SAME), ReLU, [Conv3x3(SAME), ReLU, AvgPool 2x2 (stride 2, VALID)] * depth, Flatten, Dense

and with ``stem=0`` the ConvNet of DC / RFAD without normalisation (arXiv:2006.05929,
arXiv:2210.12067), the blocks alone, so the first block's Conv reads the input:

    [Conv3x3(SAME), ReLU, AvgPool 2x2 (stride 2, VALID)] * depth, Flatten, Dense

Either way there are ``depth + stem`` ReLU layers, each a Conv then a ReLU; layer l
is followed by an AvgPool when l >= stem. Images need ``2**depth`` pixels a side.

The kernel tracks the full pixel-pair covariance. For images x, x' with pixels
i, j, write S(i, j) for the NNGP and T(i, j) for the NTK of one layer's
pre-activations. Starting from S_0(i, j) = <x_i, x'_j> / C and T_0 = 0:

- Conv (weights iid across filter offsets, so only *equal* offsets on both sides
  survive; zeros outside the image):
  S <- W_std^2 / 9 * sum_{d in {-1,0,1}^2} S(i + d, j + d) + b_std^2,
  T <- W_std^2 / 9 * sum_d T(i + d, j + d) + S.
  The first Conv (the stem's, or with stem=0 the first block's) acts on a rank-C
  input covariance, so it is one matrix product of 3x3 patch vectors:
  S_1(i, j) = W_std^2 / (9 C) <p_i, p'_j> + b_std^2.
- ReLU, entrywise with the per-pixel variances q(i) = S(x, x)(i, i):
  S <- sqrt(q_i q'_j) J1(rho), T <- T J0(rho) (see :mod:`._arccos`).
- AvgPool 2x2: average S and T over the 2x2 x 2x2 blocks of pixel pairs.
- Flatten + Dense: nngp = W_std^2 mean_i S(i, i) + b_std^2, ntk = W_std^2 mean_i T(i, i) + nngp.

Cost is O((hw)^2) per pair of images. The work is done in tiles of image pairs
whose working set is about ``block_mb`` MiB (``lax.map`` over tiles, each tile
rematerialised in the backward pass), so peak memory does not grow with the
number of images; the small default keeps a tile in the CPU cache, which is
faster than big tiles. The per-pixel variances of every layer come from a first
pass over the single images (the same recursion on (x, x), NNGP only).

Differentiation: reverse mode (``jax.grad``, ``jax.vjp``) in both arguments, with a
hand-written backward pass for the tiles of pairs (XLA compiles JAX's own
transpose of this code into many separate loops, several times slower).
Forward mode (``jax.jvp``, ``jax.jacfwd``) is not supported.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ..errors import InvalidInputError, SpecError
from ._arccos import compute_dtype, j1_j0, relu_j0_slope, relu_layer
from ._fc import B_STD, SQRT2, W_STD, check_relu_scale
from .._machine import format_bytes
from ._spec import MAX_BYTES, Kernel, Param, register

__all__ = ["convnet_kernel", "convnet_ntk", "convnet_nngp", "patches3x3"]

# Full-resolution arrays alive per image pair of a tile (forward values kept for the
# backward pass plus cotangents); turns block_mb into a number of pairs per tile.
_LIVE_ARRAYS = 12


def patches3x3(x: jax.Array) -> jax.Array:
    """3x3 SAME (zero-padded) patches: ``(n, h, w, c) -> (n, h, w, 9c)``."""
    n, h, w, c = x.shape
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    return jnp.concatenate([xp[:, a : a + h, b : b + w, :] for a in range(3) for b in range(3)], axis=-1)


def _pad_pixels(s: jax.Array) -> jax.Array:
    """Zero border of one pixel on the four spatial axes of a ``(A, H, W, B, H, W)`` tile."""
    return jnp.pad(s, ((0, 0), (1, 1), (1, 1), (0, 0), (1, 1), (1, 1)))


@jax.custom_vjp
def _conv_cov(s: jax.Array) -> jax.Array:
    """``out[a, i, b, j] = sum_{d in {-1,0,1}^2} s[a, i + d, b, j + d]`` (zeros outside the image)
    for a ``(A, H, W, B, H, W)`` tile: the 3x3 SAME conv on both images with equal offsets.

    Nine slices of one padded array, which XLA fuses into a single loop. The map
    is self-adjoint (the offsets are symmetric), which the custom vjp uses: the
    transpose JAX would derive (nine pads) compiles to nine separate loops.
    """
    _, h, w = s.shape[:3]
    p = _pad_pixels(s)
    out = None
    for dy in range(3):
        for dx in range(3):
            part = p[:, dy : dy + h, dx : dx + w, :, dy : dy + h, dx : dx + w]
            out = part if out is None else out + part
    return out


_conv_cov.defvjp(lambda s: (_conv_cov(s), None), lambda _, g: (_conv_cov(g),))


def _pool_cov(s: jax.Array) -> jax.Array:
    """2x2 stride-2 VALID average pool of a ``(A, H, W, B, H, W)`` tile on both images
    (an odd last row or column is dropped, as in ``stax.AvgPool``)."""
    h2, w2 = s.shape[1] // 2, s.shape[2] // 2
    return _pool_even(s[:, : 2 * h2, : 2 * w2, :, : 2 * h2, : 2 * w2])


@jax.custom_vjp
def _pool_even(s: jax.Array) -> jax.Array:
    window = (1, 2, 2, 1, 2, 2)
    return lax.reduce_window(s, np.zeros((), s.dtype), lax.add, window, window, "VALID") / 16.0


def _unpool(g: jax.Array) -> jax.Array:
    """Adjoint of the (even-sized) pool: spread each cotangent over its 2x2 x 2x2 block, / 16."""
    a, h2, w2, b = g.shape[:4]
    up = jnp.broadcast_to(g[:, :, None, :, None, :, :, None, :, None], (a, h2, 2, w2, 2, b, h2, 2, w2, 2))
    return up.reshape(a, 2 * h2, 2 * w2, b, 2 * h2, 2 * w2) / 16.0


_pool_even.defvjp(lambda s: (_pool_even(s), None), lambda _, g: (_unpool(g),))


def _pool_cov_bwd(shape: tuple[int, ...], g: jax.Array) -> jax.Array:
    """Adjoint of :func:`_pool_cov` for an input of ``shape`` (zeros on a dropped odd row/column)."""
    up = _unpool(g)
    dh, dw = shape[1] - up.shape[1], shape[2] - up.shape[2]
    return jnp.pad(up, ((0, 0), (0, dh), (0, dw), (0, 0), (0, dh), (0, dw)))


def _diag(s: jax.Array) -> jax.Array:
    """Pixel diagonal of a ``(A, H, W, B, H, W)`` tile: ``(A, B, H*W)``."""
    a, h, w, b = s.shape[:4]
    return jnp.diagonal(s.reshape(a, h * w, b, h * w), axis1=1, axis2=3)


def _sqrt_var(q: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.maximum(q, jnp.finfo(q.dtype).tiny))


def _rows(v: jax.Array) -> jax.Array:
    """Per-pixel values of the x1 images ``(A, H, W)`` broadcast against a tile."""
    return v[:, :, :, None, None, None]


def _cols(v: jax.Array) -> jax.Array:
    """Per-pixel values of the x2 images ``(B, H, W)`` broadcast against a tile."""
    return v[None, None, None]


def _layers(depth: int, stem: int) -> int:
    """Number of [Conv, ReLU] layers (each maybe followed by a pool): ``depth + stem``."""
    return depth + stem


def _pools(layer: int, stem: int) -> bool:
    """Whether ReLU layer number ``layer`` is followed by the 2x2 AvgPool: every block's is, the stem's is not."""
    return layer >= stem


def _forward(p1, p2, variances, *, with_ntk: bool, depth: int, stem: int, w_std: float, b_std: float):
    """Propagate one tile of image pairs through the network.

    Args:
      p1: ``(A, H, W, 9C)`` patch vectors of the x1 images; p2: ``(B, H, W, 9C)``.
      variances: ``variances(layer, nngp) -> (sqrt_q1 (A, H_l, W_l), sqrt_q2 (B, H_l, W_l))``,
        the per-pixel standard deviations that ReLU number ``layer`` needs, given
        that layer's pre-activation NNGP tile.
    Returns:
      ``(nngp (A, B), ntk (A, B) or None, pre)`` with ``pre`` the list of
      pre-activation ``(nngp, ntk)`` tiles of every ReLU (the backward pass uses them).
    """
    w2, b2 = w_std**2, b_std**2
    c = p1.shape[-1]
    nngp = jnp.einsum("ahwk,bijk->ahwbij", p1, p2) * (w2 / c) + b2
    ntk = nngp if with_ntk else None
    pre = []
    for layer in range(_layers(depth, stem)):
        if layer > 0:  # layer 0's Conv is the patch product above
            nngp_new = (w2 / 9.0) * _conv_cov(nngp) + b2
            ntk = None if ntk is None else (w2 / 9.0) * _conv_cov(ntk) + nngp_new
            nngp = nngp_new
        pre.append((nngp, ntk))
        s1, s2 = variances(layer, nngp)
        nngp, ntk = relu_layer(nngp, ntk, _rows(s1), _cols(s2))
        if _pools(layer, stem):
            nngp = _pool_cov(nngp)
            ntk = None if ntk is None else _pool_cov(ntk)
    out_nngp = w2 * jnp.mean(_diag(nngp), axis=-1) + b2
    out_ntk = None if ntk is None else w2 * jnp.mean(_diag(ntk), axis=-1) + out_nngp
    return out_nngp, out_ntk, pre


def _relu_backward(nngp, ntk, s1, s2, g_nngp, g_ntk):
    """Cotangents of one ReLU layer ``(nngp, ntk, s1, s2) -> (s1 s2 J1(rho), ntk J0(rho))``,
    rho = nngp / (s1 s2), given the output cotangents. Returns ``(g_nngp, g_ntk, g_s1, g_s2)``."""
    r1, r2 = 1.0 / s1, 1.0 / s2
    rho = nngp * (_rows(r1) * _cols(r2))
    j1, j0 = j1_j0(rho)
    scale = _rows(s1) * _cols(s2)
    # d rho: from nngp' = scale J1 (dJ1 = J0 drho) and from ntk' = ntk J0
    g_rho = g_nngp * scale * j0
    g_ntk_in = None
    if ntk is not None:
        g_rho = g_rho + g_ntk * ntk * relu_j0_slope(rho)
        g_ntk_in = g_ntk * j0
    # scale = s1 s2 multiplies J1; rho = nngp / (s1 s2) gives d rho / d s1 = -rho / s1
    both = g_nngp * j1
    per = g_rho * rho
    g_s1 = (jnp.sum(both * _cols(s2), axis=(3, 4, 5)) - jnp.sum(per, axis=(3, 4, 5)) * r1)
    g_s2 = (jnp.sum(both * _rows(s1), axis=(0, 1, 2)) - jnp.sum(per, axis=(0, 1, 2)) * r2)
    return g_rho * (_rows(r1) * _cols(r2)), g_ntk_in, g_s1, g_s2


def _embed_diag(g: jax.Array, h: int, w: int) -> jax.Array:
    """``(A, B) -> (A, H, W, B, H, W)`` with g on the pixel diagonal, zeros elsewhere."""
    eye = jnp.eye(h * w, dtype=g.dtype).reshape(h, w, h, w)
    return g[:, None, None, :, None, None] * eye[None, :, :, None]


@functools.cache
def _cross_tile(with_ntk: bool, depth: int, stem: int, w_std: float, b_std: float):
    """The kernel of one tile of pairs, ``(p1, p2, s1, s2) -> (A, B)``, with a hand-written vjp.

    ``s1``/``s2`` are the lists of per-layer pixel standard deviations of the two image sets.
    JAX's own transpose of the padded slices and pooling compiles to many separate
    loops, about 5x slower than this backward pass.
    """
    settings = dict(with_ntk=with_ntk, depth=depth, stem=stem, w_std=w_std, b_std=b_std)
    w2 = w_std**2
    layers = _layers(depth, stem)

    def run(p1, p2, s1, s2):
        nngp, ntk, pre = _forward(p1, p2, lambda layer, _: (s1[layer], s2[layer]), **settings)
        return (ntk if with_ntk else nngp), pre

    @jax.custom_vjp
    def tile(p1, p2, s1, s2):
        return run(p1, p2, s1, s2)[0]

    def fwd(p1, p2, s1, s2):
        out, pre = run(p1, p2, s1, s2)
        return out, (p1, p2, s1, s2, pre)

    def bwd(res, g):
        p1, p2, s1, s2, pre = res
        h, w = s1[-1].shape[1:]
        if _pools(layers - 1, stem):
            h, w = h // 2, w // 2
        # the readout: nngp = w2 mean diag(S) + b2, ntk = w2 mean diag(T) + nngp
        g_nngp = _embed_diag(g * (w2 / (h * w)), h, w)
        g_ntk = g_nngp if with_ntk else None
        g_s1, g_s2 = [None] * layers, [None] * layers
        for layer in range(layers - 1, -1, -1):
            nngp, ntk = pre[layer]
            if _pools(layer, stem):
                g_nngp = _pool_cov_bwd(nngp.shape, g_nngp)
                g_ntk = None if g_ntk is None else _pool_cov_bwd(nngp.shape, g_ntk)
            g_nngp, g_ntk, g_s1[layer], g_s2[layer] = _relu_backward(nngp, ntk, s1[layer], s2[layer], g_nngp, g_ntk)
            if g_ntk is not None:
                g_nngp = g_nngp + g_ntk  # T = conv(T) + S (and T_1 = S_1)
            if layer > 0:
                g_nngp = (w2 / 9.0) * _conv_cov(g_nngp)
                g_ntk = None if g_ntk is None else (w2 / 9.0) * _conv_cov(g_ntk)
        scale = w2 / p1.shape[-1]
        g_p1 = scale * jnp.einsum("ahwbij,bijk->ahwk", g_nngp, p2)
        g_p2 = scale * jnp.einsum("ahwbij,ahwk->bijk", g_nngp, p1)
        return g_p1, g_p2, g_s1, g_s2

    tile.defvjp(fwd, bwd)
    return tile


def _self_sqrt_variances(p: jax.Array, *, depth: int, stem: int, w_std: float, b_std: float) -> list[jax.Array]:
    """Square roots of the per-pixel variances before each ReLU for one image ``p: (H, W, 9C)``.

    Runs the NNGP recursion on the pair (x, x) and reads the variances off the
    diagonal of each pre-activation; returns ``depth + stem`` arrays ``(H_l, W_l)``.
    """
    recorded: list[jax.Array] = []

    def variances(layer, nngp):
        h, w = nngp.shape[1], nngp.shape[2]
        s = _sqrt_var(_diag(nngp)[0, 0].reshape(1, h, w))
        recorded.append(s[0])
        return s, s

    _forward(p[None], p[None], variances, with_ntk=False, depth=depth, stem=stem, w_std=w_std, b_std=b_std)
    return recorded


def _pad_rows(x: jax.Array, n: int, value: float = 0.0) -> jax.Array:
    if x.shape[0] == n:
        return x
    return jnp.pad(x, [(0, n - x.shape[0])] + [(0, 0)] * (x.ndim - 1), constant_values=value)


def _tile(n: int, size: int) -> tuple[int, int]:
    """Tile length <= size covering n rows in as few tiles as possible with least padding: (length, count)."""
    size = max(1, min(n, size))
    count = -(-n // size)
    return -(-n // count), count


def _map_tiles(f, xs, count: int):
    """Apply ``f`` to ``count`` equal tiles of the leading axis of the arrays ``xs`` and
    concatenate the results: a ``lax.map`` whose body is rematerialised in the backward
    pass, so only one tile's intermediates are ever alive."""
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
    stem: int = 1,
    w_std: float = SQRT2,
    b_std: float = 0.1,
    block_mb: int = 16,
) -> jax.Array:
    """Exact infinite-width ConvNet NTK or NNGP (module docstring).

    Args:
      x1: ``(n1, h, w, c)`` images.
      x2: ``(n2, h, w, c)`` images.
      get: ``"ntk"`` or ``"nngp"``.
      depth: number of [Conv3x3, ReLU, AvgPool 2x2] blocks.
      stem: 1: a Conv3x3, ReLU at full resolution before the blocks (KIP); 0: none (DC / RFAD).
      block_mb: approximate working memory of one tile of image pairs in MiB.
    Returns:
      ``(n1, n2)``, float64 when ``jax_enable_x64`` is on.
    """
    _check_stem(stem, depth)
    dtype = compute_dtype(x1, x2)
    x1, x2 = jnp.asarray(x1, dtype), jnp.asarray(x2, dtype)
    if x1.ndim != 4 or x2.ndim != 4 or x1.shape[1:] != x2.shape[1:]:
        raise InvalidInputError(
            f"convnet kernel: expected NHWC images of equal shape, got {x1.shape} and {x2.shape}"
        )
    n1, h, w, _ = x1.shape
    n2 = x2.shape[0]
    if n1 == 0 or n2 == 0:
        return jnp.zeros((n1, n2), dtype)
    if min(h, w) < 2**depth:
        raise InvalidInputError(
            f"convnet kernel: {h}x{w} images are too small for depth={depth} (2x2 pooling {depth} times)"
        )
    settings = dict(depth=depth, stem=stem, w_std=w_std, b_std=b_std)
    pair_bytes = _LIVE_ARRAYS * (h * w) ** 2 * jnp.dtype(dtype).itemsize
    if pair_bytes > MAX_BYTES:
        raise InvalidInputError(
            f"convnet kernel: {h}x{w} images need about {format_bytes(pair_bytes)} per image pair (the cost grows as "
            f"(h*w)^2; limit {format_bytes(MAX_BYTES)}); downsample the images, or use rf-convnet"
        )
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
    # padding rows get unit standard deviations: their (discarded) entries stay finite,
    # so zero cotangents times them stay zero in the backward pass
    sv1 = [_pad_rows(s, a_size * a_count, 1.0) for s in sv1]
    sv2 = [_pad_rows(s, b_size * b_count, 1.0) for s in sv2]

    cross = _cross_tile(get == "ntk", depth, stem, w_std, b_std)

    def tile(ta, tb):
        return cross(ta[0], tb[0], ta[1], tb[1])

    def row(ta):
        # one tile-row of x1 against every tile of x2: (a_size, n2_padded)
        out = _map_tiles(lambda pb, *sb: tile(ta, (pb, list(sb))).T, [p2, *sv2], b_count)
        return out.T

    k = _map_tiles(lambda pa, *sa: row((pa, list(sa))), [p1, *sv1], a_count)
    return k[:n1, :n2]


def _check_stem(stem: int, depth: int) -> None:
    if isinstance(stem, bool) or stem not in (0, 1):
        raise InvalidInputError(f"convnet kernel: stem={stem!r} is not 0 or 1")
    if stem == 0 and depth < 1:
        raise InvalidInputError("convnet kernel: stem=0 needs depth >= 1 (with depth=0 there is no convolution)")


def _build(get: str, family: str, depth: int, stem: int, w_std: float, b_std: float, block_mb: int) -> Kernel:
    if stem == 0 and depth < 1:
        raise SpecError(f"kernel {family!r}: stem=0 needs depth >= 1 (with depth=0 there is no convolution)")
    # depth + stem convolutions and the readout Dense, each behind a ReLU but the readout
    check_relu_scale(family, layers=_layers(depth, stem) + 1, depth=depth, w_std=w_std, b_std=b_std)
    fn = jax.jit(functools.partial(convnet_kernel, get=get, depth=depth, stem=stem, w_std=w_std, b_std=b_std,
                                   block_mb=block_mb))

    params = (("depth", depth), ("stem", stem), ("w_std", w_std), ("b_std", b_std), ("block_mb", block_mb))
    return Kernel(family, params, fn, pair_seconds=functools.partial(_pair_seconds, stem=stem))


def _pair_seconds(image_shape: tuple[int, ...], stem: int = 1) -> float:
    """Rough seconds per image pair on a CPU: about 25 ns per pixel pair ((h*w)^2; measured at 28x28 and
    32x32 on 2 EPYC cores in float64 with stem=1, ~15 and ~25 ms per image pair), plus a fixed overhead.
    The work is mostly in the two full-resolution ReLU layers; stem=0 has one, so half (not measured)."""
    h, w = image_shape[0], image_shape[1]
    return (1 + stem) / 2 * 25e-9 * float(h * w) ** 2 + 1e-4


# depth: images need 2**depth pixels a side (checked on the data), so 10 allows 1024 x 1024; KIP uses 3.
# block_mb: one tile's working set, at most MAX_BYTES.
CONVNET_PARAMS = {
    "depth": Param(int, 3, "number of [Conv3x3, ReLU, AvgPool2x2] blocks (after the stem Conv3x3, ReLU if stem=1)",
                   min=0, max=10),
    "stem": Param(int, 1, "1: a Conv3x3, ReLU at full resolution before the blocks (KIP's ConvNet); "
                  "0: none (DC's / RFAD's ConvNet without normalisation; needs depth >= 1)", min=0, max=1),
    "w_std": W_STD,
    "b_std": B_STD,
    "block_mb": Param(int, 16, "working memory per tile of image pairs, MiB (speed and memory only, not values)",
                      min=1, max=MAX_BYTES // 2**20),
}


@register("convnet-ntk", params=CONVNET_PARAMS,
          doc="exact NTK of the infinite-width KIP ConvNet (DC's with stem=0; full pixel-pair covariance)")
def convnet_ntk(*, depth: int = 3, stem: int = 1, w_std: float = SQRT2, b_std: float = 0.1,
                block_mb: int = 16) -> Kernel:
    return _build("ntk", "convnet-ntk", depth, stem, w_std, b_std, block_mb)


@register("convnet-nngp", params=CONVNET_PARAMS,
          doc="exact NNGP of the infinite-width KIP ConvNet (DC's with stem=0; full pixel-pair covariance)")
def convnet_nngp(*, depth: int = 3, stem: int = 1, w_std: float = SQRT2, b_std: float = 0.1,
                 block_mb: int = 16) -> Kernel:
    return _build("nngp", "convnet-nngp", depth, stem, w_std, b_std, block_mb)

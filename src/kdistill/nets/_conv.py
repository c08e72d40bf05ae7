"""3x3 'same' convolutions, stride 1, NHWC inputs and HWIO weights, in several formulations.

``y[n, p, q, o] = sum_{i, j, c} xp[n, p + i, q + j, c] * w[i, j, c, o]`` with ``xp`` the input zero-padded by
one pixel on each side (i, j in 0..2): a ConvNet layer of DC (arXiv:2006.05929) and KIP (arXiv:2107.13034).

Why this module exists: XLA's CPU convolution is fast forward but slow for the gradient with respect to the
weights of large layers. Measured on 2026-12-04 on the project's 2-core AMD EPYC (JAX 0.10.2, float32, batch
256, ``benchmarks/results/conv_formulations.md``; load average about 5 from a test suite sharing the cores, so
absolute times are noisy: two identical programs there differed by 10%), XLA's weight gradient ran at 15-28
GFLOP/s on the 28x28 and 14x14 layers of width 128 and 256 (11.8 s for 28x28 256 -> 256) against 65-74
GFLOP/s for its forward, while 9 GEMMs ``x_k^T @ g``, one per tap, ran at 44-58 GFLOP/s (4.3 s). On the
first layer (c_in = 1) both of XLA's backward products ran at 4-6 GFLOP/s. A jitted float32 2048^3
``jnp.dot`` ran at 91-97 GFLOP/s in that run (190 in a quieter moment).

Formulations (``formulation=``):

- ``"xla"``: ``lax.conv_general_dilated``; autodiff gives XLA's transposed convolutions.
- ``"patches"``: the 9 shifted copies of the padded input concatenated on channels (taps in (i, j) row-major
  order, the order of ``w.reshape(9 c_in, c_out)``), one (n h w, 9 c_in) x (9 c_in, c_out) GEMM. Autodiff
  keeps the 9x patch buffer for the backward pass (3.4 GiB for one 256 x 28x28x256 layer, XLA's 0.4 GiB).
- ``"taps"``: the sum of 9 GEMMs of the shifted copies, (n h w, c_in) x (c_in, c_out). Autodiff keeps the
  9 copies (the same 9x memory).
- ``"auto"`` (default): per layer shape (static at trace time, see :func:`_plan`), XLA's forward and, in a
  custom VJP, the fastest measured formulation for each backward product, with no 9x buffer kept:

  ============================  ===========  ===========================  =============================
  layer                         forward      dL/dx                        dL/dw
  ============================  ===========  ===========================  =============================
  c_in <= 16                    XLA          col2im: ``g @ W^T``, (n h w,  patches^T @ g, one GEMM (the
                                             9 c_in), its 9 blocks added  buffer is 9 c_in <= 144 wide)
                                             back at their shifts
  c_in > 16, >= 6 GFLOP         XLA          conv3x3 of g with the        9 GEMMs ``x_k^T @ g`` in a
                                             flipped, in/out-swapped      loop, one shifted slice alive
                                             kernel (XLA's forward)       at a time
  c_in > 16, < 6 GFLOP          plain ``"xla"`` (XLA's weight gradient is fast on small layers)
  h w <= 4 (2x2, 1x1 maps)      plain ``"patches"``, forward and both gradients by autodiff (first rule)
  ============================  ===========  ===========================  =============================

  (GFLOP: ``2 n h w 9 c_in c_out``, one product.) Measured value_and_grad of one layer (forward and both
  gradients), auto / xla: 0.24 at 28x28 1 -> 128, 0.19 at 1 -> 256, 0.75 at 28x28 128 -> 128, 0.69 at 14x14
  128 -> 128, 0.60 at 28x28 256 -> 256 (10.1 s against 16.8 s), 0.50 at 14x14 256 -> 256, 0.95 at 7x7
  256 -> 256; 7x7 128 -> 128 takes plain XLA. Whole networks, value_and_grad w.r.t. weights and 256 images
  (two runs): KIP's ConvNet of width 256, 14.6 s against 27.2 s and 13.4 against 23.7; DC's of width 128
  (no norm), 1.14 s against 1.75 and 1.11 against 1.49.

  The gain depends on the load: XLA's convolutions suffered more from other jobs on the cores than GEMMs
  did. In a quieter moment (load average 0.3 rising to 3.5 during the run, same day) auto / xla was 0.19
  at 28x28 1 -> 128, 0.83 at 14x14 128 -> 128 (XLA's dL/dw at 53 GFLOP/s there, taps' at 61), 0.78 at
  14x14 256 -> 256 and 0.54 at 28x28 256 -> 256 (9.5 s against 17.6 s: XLA's dL/dw at 21 GFLOP/s whatever
  the load); at width 1024 (32 x 28x28 1024 -> 1024, load 2.4) 0.88 (9.3 s against 10.5 s).

Tiny maps (measured 2026-12-05, same machine, load about 2, 500 images, jitted, second call): XLA's
convolution collapses at 2x2 and 1x1 maps, which VGG-11's last stage has: 2x2 512 -> 512 took 4.10 s forward
and 8.31 s for both gradients (2.3 GFLOP/s), patches 0.072 and 0.175 s; 2x2 256 -> 256 0.318 / 0.666 s
against 0.014 / 0.040; 1x1 512 -> 512 0.150 / 0.316 against 0.012 / 0.036. From 3x3 on XLA's is as fast or
faster (3x3 128: 0.010 / 0.022 against 0.022 / 0.037; 4x4 512: 0.277 / 0.937 against 0.305 / 0.699; 4x4 256:
0.051 / 0.178 against 0.104 / 0.224), so only maps of at most 4 pixels take patches. VGG-11 on MNIST
(28x28, padded to 32x32) predicted 2000 images in 51 s before this rule.

Why the rule is what it is (same machine and date): XLA's forward was the fastest forward of every wide
layer (patches 1.3-2.5x slower, taps 1.2-2.3x) and at c_in = 1 as fast as taps (0.92-0.99x) and faster than
patches (1.24-1.40x), so it is always the forward. XLA's transposed conv (dL/dx) was the fastest input
gradient for every wide layer (col2im 1.13-1.51x) and col2im for c_in <= 16 (0.15x XLA's at c_in = 1, 0.78x
at 16, 1.04x at 32). For dL/dw, patches won for c_in <= 8 and tied with taps at 16 (taps' GEMMs are thin
there: at c_in = 1 taps was as slow as XLA). On wide layers XLA's dL/dw slows down as the layer grows while
taps' does not; taps / XLA seconds at batch 256 unless stated: 28x28 256 -> 256 (237 GFLOP) 0.37, 14x14 256
(59) 0.26, 28x28 128 (59) 0.63, 14x14 128 (14.8) 0.50, 512 x 14x14 64 (7.4) 0.48, 7x7 256 (14.8)
0.79-0.97, 7x7 192 (8.3) 0.87; but 32 x 16x16 256 (9.7) 1.18 and 32 x 32x32 128 (9.7) 1.03; below 6 GFLOP
XLA's won or tied: 8x8 128 (4.8) 0.98, 7x7 128 (3.7) 0.93-1.18, 64 x 14x14 128 (3.7) 1.49, 14x14 64 (3.7)
1.41, 32 x 28x28 64 (1.9) 2.4. The FLOP threshold is the simplest rule that keeps the large gains and
loses little where it is wrong (the small layers it misjudges take tenths of a second either way).

The loop (``lax.map``) for the weight gradient is deliberate: written as 9 straight-line GEMMs, XLA kept all
9 shifted slices alive at once. For 256 x 28x28x256 -> 256 the loop needed 421 MiB of temporary memory and
3.8 s, the straight-line form 1793 MiB and 4.5 s (equal speed at 28x28 128 and 14x14 256). The custom VJP
saves only ``(x, w)``: one layer's value_and_grad took 421 MiB there, XLA's 394 MiB, ``"patches"`` and
``"taps"`` (autodiff) 3.5 GiB; at 32 x 28x28 1024 -> 1024 auto 215 MiB, XLA's 232, patches 1764, taps 1814.

Higher derivatives: the custom VJP's backward is written with conv3x3 itself and differentiable JAX
operations, so reverse-over-reverse (DC's gradient matching) works (tested; its speed was not measured).
Forward mode (``jax.jvp``, ``jax.jacfwd``) is not supported by ``"auto"`` on layers where it takes the
custom VJP (JAX's rule for ``custom_vjp``); use ``"xla"`` there.

Precision: every formulation uses JAX's default matmul/conv precision, which on CPU is full float32 (on
accelerators with TF32 it is not, as for ``lax.conv_general_dilated``). float64 inputs work alike.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from ..errors import InvalidInputError

__all__ = ["FORMULATIONS", "conv3x3", "default_formulation"]

FORMULATIONS: tuple[str, ...] = ("auto", "xla", "patches", "taps")
"""Values of ``conv3x3(..., formulation=)``."""

NARROW_C_IN = 16
"""``"auto"``: layers with at most this many input channels take the col2im / patches backward."""

TAPS_MIN_FLOPS = 6e9
"""``"auto"``: wider layers of at least this many FLOPs per product (``2 n h w 9 c_in c_out``) take the
9-GEMM weight gradient; smaller ones plain XLA."""

_DIMS = ("NHWC", "HWIO", "NHWC")
_PAD = ((0, 0), (1, 1), (1, 1), (0, 0))


# ---- forward formulations: x (n, h, w, c_in), w (3, 3, c_in, c_out) -> (n, h, w, c_out) ----------------


def _conv_xla(x, w):
    return lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=_DIMS)


def _shifted(x):
    """The 9 shifted copies ``xp[:, i:i+h, j:j+w, :]`` (n, h, w, c) of the zero-padded input, taps in (i, j)
    row-major order: the order of ``w.reshape(9 * c_in, c_out)`` for HWIO weights."""
    _, h, wd, _ = x.shape
    xp = jnp.pad(x, _PAD)
    return [xp[:, i : i + h, j : j + wd, :] for i in range(3) for j in range(3)]


def _patches(x):
    """(n, h, w, c) -> (n h w, 9 c): column block k = 3 i + j holds tap (i, j)."""
    n, h, wd, c = x.shape
    return jnp.concatenate(_shifted(x), axis=-1).reshape(n * h * wd, 9 * c)


def _conv_patches(x, w):
    n, h, wd, c = x.shape
    return jnp.dot(_patches(x), w.reshape(9 * c, w.shape[-1])).reshape(n, h, wd, w.shape[-1])


def _conv_taps(x, w):
    n, h, wd, c = x.shape
    out = None
    for k, s in enumerate(_shifted(x)):
        t = jnp.dot(s.reshape(n * h * wd, c), w[k // 3, k % 3])
        out = t if out is None else out + t
    return out.reshape(n, h, wd, w.shape[-1])


_FORWARD = {"xla": _conv_xla, "patches": _conv_patches, "taps": _conv_taps}


# ---- backward products of y = conv(x, w) given g = dL/dy (n, h, w, c_out) --------------------------------


def _input_grad_xla(g, w):
    """dL/dx (n, h, w, c_in): the 'same' conv of g with the spatially flipped, in/out-swapped kernel
    ``w[2 - i, 2 - j].T``, through :func:`_conv_auto` (XLA's forward) so that its own derivatives are fast."""
    return _conv_auto(g, jnp.flip(w, (0, 1)).swapaxes(2, 3))


def _input_grad_col2im(g, w):
    """dL/dx (n, h, w, c_in) from the patch gradient ``g @ w.reshape(9 c_in, c_out).T`` (n h w, 9 c_in), each
    of its 9 blocks added back at its tap's shift (what autodiff of the patches form computes)."""
    n, h, wd, co = g.shape
    c = w.shape[2]
    dp = jnp.dot(g.reshape(n * h * wd, co), w.reshape(9 * c, co).T).reshape(n, h, wd, 9, c)
    acc = None
    for k in range(9):
        i, j = k // 3, k % 3
        t = jnp.pad(dp[:, :, :, k, :], ((0, 0), (i, 2 - i), (j, 2 - j), (0, 0)))
        acc = t if acc is None else acc + t
    return acc[:, 1 : h + 1, 1 : wd + 1, :]


def _weight_grad_xla(x, g):
    """dL/dw (3, 3, c_in, c_out): XLA's transpose of its conv."""
    w = jax.ShapeDtypeStruct((3, 3, x.shape[-1], g.shape[-1]), x.dtype)
    return jax.linear_transpose(lambda v: _conv_xla(x, v), w)(g)[0]


def _weight_grad_patches(x, g):
    """dL/dw (3, 3, c_in, c_out) = patches(x)^T @ g, one (9 c_in, n h w) x (n h w, c_out) GEMM."""
    n, h, wd, c = x.shape
    co = g.shape[-1]
    dw = lax.dot_general(_patches(x), g.reshape(n * h * wd, co), (((0,), (0,)), ((), ())))
    return dw.reshape(3, 3, c, co)


def _weight_grad_taps(x, g):
    """dL/dw (3, 3, c_in, c_out): 9 GEMMs ``x_k^T @ g``, (c_in, n h w) x (n h w, c_out), in a loop so that
    one shifted slice x_k exists at a time; the loop body is rematerialised, so that a derivative of this
    (a second derivative of the conv) stores no slices either."""
    n, h, wd, c = x.shape
    co = g.shape[-1]
    xp = jnp.pad(x, _PAD)
    g2 = g.reshape(n * h * wd, co)

    @jax.checkpoint
    def tap(k):
        s = lax.dynamic_slice(xp, (0, k // 3, k % 3, 0), (n, h, wd, c)).reshape(n * h * wd, c)
        return lax.dot_general(s, g2, (((0,), (0,)), ((), ())))

    return lax.map(tap, jnp.arange(9)).reshape(3, 3, c, co)


_INPUT_GRAD = {"xla": _input_grad_xla, "col2im": _input_grad_col2im}
_WEIGHT_GRAD = {"xla": _weight_grad_xla, "patches": _weight_grad_patches, "taps": _weight_grad_taps}


class _Plan(NamedTuple):
    """How ``"auto"`` computes each product of one layer (keys of _FORWARD, _INPUT_GRAD, _WEIGHT_GRAD)."""

    forward: str
    input_grad: str
    weight_grad: str


_XLA = _Plan("xla", "xla", "xla")
_PATCHES = _Plan("patches", "patches", "patches")  # plain autodiff of the patches formulation

TINY_PIXELS = 4
"""``"auto"``: maps of at most this many pixels (2x2, 1x1) take the patches formulation, forward and backward."""


def _plan(n: int, h: int, w: int, c_in: int, c_out: int) -> _Plan:
    """``"auto"``'s choice for a layer of this shape (the module docstring has the measurements). The rule was
    measured on a CPU; on an accelerator XLA's own convolutions (cuDNN on a GPU) are kept."""
    if jax.default_backend() != "cpu":
        return _XLA
    if h * w <= TINY_PIXELS:
        return _PATCHES
    if c_in <= NARROW_C_IN:
        return _Plan("xla", "col2im", "patches")
    if 2.0 * n * h * w * 9 * c_in * c_out >= TAPS_MIN_FLOPS:
        return _Plan("xla", "xla", "taps")
    return _XLA


def _conv_auto(x, w):
    how = _plan(*x.shape, w.shape[-1])
    if how == _XLA:
        return _conv_xla(x, w)
    if how == _PATCHES:  # its 9x buffer is 9 tiny maps: autodiff is fine
        return _FORWARD["patches"](x, w)
    return _conv_custom(x, w)


@jax.custom_vjp
def _conv_custom(x, w):
    return _FORWARD[_plan(*x.shape, w.shape[-1]).forward](x, w)


def _conv_custom_fwd(x, w):
    # the primal through the custom_vjp function itself, so that a second derivative also takes the rules below
    return _conv_custom(x, w), (x, w)


def _conv_custom_bwd(res, g):
    x, w = res
    how = _plan(*x.shape, w.shape[-1])
    return _INPUT_GRAD[how.input_grad](g, w), _WEIGHT_GRAD[how.weight_grad](x, g)


_conv_custom.defvjp(_conv_custom_fwd, _conv_custom_bwd)


def default_formulation() -> str:
    """The formulation ``conv3x3`` uses when none is given: ``$KDISTILL_CONV3X3`` if set (one of
    :data:`FORMULATIONS`; for comparisons such as ``benchmarks/nets_speed.py``), else ``"auto"``.
    Read when a function is traced, so set it before the first call."""
    value = os.environ.get("KDISTILL_CONV3X3", "auto").strip().lower() or "auto"
    if value not in FORMULATIONS:
        raise InvalidInputError(f"KDISTILL_CONV3X3 must be one of {', '.join(FORMULATIONS)}, got {value!r}; "
                                "unset it for the default")
    return value


def conv3x3(x, w, *, formulation: str | None = None):
    """3x3 'same' convolution, stride 1, no bias: ``y[n, p, q, :] = sum_{i, j} xp[n, p + i, q + j, :] @ w[i, j]``.

    Args:
      x: (n, h, w, c_in) float32 (or float64), NHWC.
      w: (3, 3, c_in, c_out), HWIO, same dtype.
      formulation: one of :data:`FORMULATIONS`, or None for :func:`default_formulation`; ``"auto"`` picks XLA's forward and the fastest
        backward products for the layer's shape (module docstring), the others are for comparison.

    Returns:
      (n, h, w, c_out), equal to ``lax.conv_general_dilated(x, w, (1, 1), "SAME", ("NHWC", "HWIO", "NHWC"))``
      up to float rounding, as are its gradients. Pure and jit/vmap/grad-compatible; all choices are made
      from static shapes.

    >>> import jax.numpy as jnp
    >>> conv3x3(jnp.ones((2, 5, 5, 1)), jnp.ones((3, 3, 1, 4))).shape
    (2, 5, 5, 4)
    """
    if formulation is None:
        formulation = default_formulation()
    if formulation not in FORMULATIONS:
        raise InvalidInputError(f"formulation must be one of {', '.join(FORMULATIONS)}, got {formulation!r}")
    xs, ws = tuple(jnp.shape(x)), tuple(jnp.shape(w))
    if len(xs) != 4 or len(ws) != 4 or ws[:2] != (3, 3) or ws[2] != xs[-1]:
        raise InvalidInputError(f"conv3x3 needs x (n, h, w, c_in) and w (3, 3, c_in, c_out), got x {xs} and w {ws}")
    if formulation == "auto":
        return _conv_auto(x, w)
    return _FORWARD[formulation](x, w)

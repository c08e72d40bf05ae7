"""Layers shared by every network in :mod:`kdistill.nets`: pure functions on NHWC arrays.

Weights are HWIO (convolutions) and (in, out) (dense layers). Initialisation follows PyTorch's defaults,
which DC's and DC-BENCH's networks keep: a layer with ``fan_in`` inputs draws its weights and bias from
``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` (``kaiming_uniform_(a=sqrt(5))`` and its bias rule); normalisation
layers start at scale 1 and shift 0.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from ._conv import conv3x3

F32 = jnp.float32
NORM_EPS = 1e-5  # PyTorch's GroupNorm / LayerNorm default
_DIMS = ("NHWC", "HWIO", "NHWC")


def uniform(key, shape, fan_in: int) -> jax.Array:
    """PyTorch's default initialisation of a layer with ``fan_in`` inputs: ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``."""
    bound = 1.0 / math.sqrt(fan_in)
    return jax.random.uniform(key, shape, F32, -bound, bound)


def conv_init(key, k: int, c_in: int, c_out: int, *, bias: bool = True) -> dict:
    """``{"w": (k, k, c_in, c_out)[, "b": (c_out,)]}`` with PyTorch's default initialisation."""
    kw, kb = jax.random.split(key)
    fan_in = k * k * c_in
    layer = {"w": uniform(kw, (k, k, c_in, c_out), fan_in)}
    if bias:
        layer["b"] = uniform(kb, (c_out,), fan_in)
    return layer


def dense_init(key, d_in: int, d_out: int) -> dict:
    """``{"w": (d_in, d_out), "b": (d_out,)}`` with PyTorch's default initialisation."""
    kw, kb = jax.random.split(key)
    return {"w": uniform(kw, (d_in, d_out), d_in), "b": uniform(kb, (d_out,), d_in)}


def norm_init(c: int) -> dict:
    """Per-channel affine parameters of a normalisation layer: scale 1, shift 0."""
    return {"scale": jnp.ones((c,), F32), "shift": jnp.zeros((c,), F32)}


def conv(x: jax.Array, layer: dict, *, stride: int = 1, padding: int | None = None,
         formulation: str | None = None) -> jax.Array:
    """A ``k x k`` convolution of ``x: (n, h, w, c_in)`` with ``layer["w"]`` (and ``layer["b"]`` if present),
    ``padding`` zeros on each side (default ``k // 2``). 3x3, stride 1, padding 1 goes through
    :func:`~kdistill.nets.conv3x3` (the fastest formulation per layer shape, or ``formulation``); the rest
    through XLA."""
    w = layer["w"]
    k = w.shape[0]
    p = k // 2 if padding is None else padding
    if k == 3 and stride == 1 and p == 1:
        y = conv3x3(x, w, formulation=formulation)
    else:
        y = lax.conv_general_dilated(x, w, (stride, stride), ((p, p), (p, p)), dimension_numbers=_DIMS)
    return y + layer["b"] if "b" in layer else y


def dense(x: jax.Array, layer: dict) -> jax.Array:
    return x @ layer["w"] + layer["b"]


def avg_pool(x: jax.Array, size: int = 2) -> jax.Array:
    """``size x size`` average pooling, stride ``size``, odd edges dropped (PyTorch's ``AvgPool2d(size)``)."""
    n, h, w, c = x.shape
    x = x[:, : h - h % size, : w - w % size, :]
    return x.reshape(n, h // size, size, w // size, size, c).mean(axis=(2, 4))


def max_pool(x: jax.Array, size: int = 2) -> jax.Array:
    """``size x size`` max pooling, stride ``size``, odd edges dropped (PyTorch's ``MaxPool2d(size)``)."""
    n, h, w, c = x.shape
    x = x[:, : h - h % size, : w - w % size, :]
    return x.reshape(n, h // size, size, w // size, size, c).max(axis=(2, 4))


def group_norm(x: jax.Array, layer: dict, groups: int) -> jax.Array:
    """PyTorch's ``GroupNorm(groups, c)``: each image's channels in ``groups`` groups, each group normalised
    over its channels and pixels, then the per-channel affine. ``groups = c`` is instance norm (DC's
    ``instancenorm``)."""
    n, h, w, c = x.shape
    g = x.reshape(n, h, w, groups, c // groups)
    mean = g.mean(axis=(1, 2, 4), keepdims=True)
    var = jnp.square(g - mean).mean(axis=(1, 2, 4), keepdims=True)
    g = (g - mean) * lax.rsqrt(var + NORM_EPS)
    return g.reshape(n, h, w, c) * layer["scale"] + layer["shift"]


def instance_norm(x: jax.Array, layer: dict) -> jax.Array:
    """Per image and channel: ``(x - mean_hw) / sqrt(var_hw + eps) * scale + shift``."""
    mean = x.mean(axis=(1, 2), keepdims=True)
    var = jnp.square(x - mean).mean(axis=(1, 2), keepdims=True)
    return (x - mean) * lax.rsqrt(var + NORM_EPS) * layer["scale"] + layer["shift"]


def layer_norm(x: jax.Array, layer: dict) -> jax.Array:
    """PyTorch's ``LayerNorm((c, h, w))`` with its elementwise affine: each image normalised over all its
    values; ``layer["scale"]``/``["shift"]`` are (h, w, c)."""
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    var = jnp.square(x - mean).mean(axis=(1, 2, 3), keepdims=True)
    return (x - mean) * lax.rsqrt(var + NORM_EPS) * layer["scale"] + layer["shift"]

"""Random finite networks of the ``fc`` and ``convnet`` architectures (NTK parameterization), for kernels.

Every layer is ``h = w_std / sqrt(fan_in) * (W * x) + b_std * b`` with W, b ~ N(0, 1)
(arXiv:1806.07572), so these are the finite-width versions of the infinite-width
kernels in :mod:`kdistill.kernels` (``fc-*`` and ``convnet-*``):

- the empirical NNGP, averaged over networks, of the readout input approaches
  ``*-nngp`` as the width grows (used by the ``rf-*`` random-feature kernels);
- the empirical NTK ``J(x1) J(x2)^T`` (J the Jacobian of the scalar output with
  respect to all W, b) approaches ``*-ntk`` (used by the Monte-Carlo tests).

Parameters are pytrees of float32 arrays drawn from a JAX key with a single
``jax.random.normal`` call (compiling a random generator per layer shape is slow
on CPU); ``apply`` casts them to the input dtype.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from ._conv import conv3x3
from ._layers import avg_pool

__all__ = ["Params", "apply_convnet", "apply_fc", "convnet_shapes", "draw", "fc_shapes", "init_convnet", "init_fc"]

Params = dict
"""``{"hidden": [(W, b), ...], "readout": (W, b)}`` with standard-normal entries."""


def fc_shapes(d_in: int, *, width: int, depth: int) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """``(W, b)`` shapes of ``[Dense(width), ReLU] * depth, Dense(1)``, readout last."""
    sizes = [d_in] + [width] * depth
    return [((sizes[i], width), (width,)) for i in range(depth)] + [((sizes[-1], 1), (1,))]


def convnet_shapes(c_in: int, *, width: int, depth: int, spatial: tuple[int, int], stem: bool = True):
    """``(W, b)`` shapes of ``Conv(width), ReLU, [Conv(width), ReLU, AvgPool 2x2] * depth,
    Flatten, Dense(1)`` on ``spatial = (h, w)`` images, readout last; ``stem=False`` drops the
    first ``Conv, ReLU`` (DC's ConvNet without normalisation: the blocks alone)."""
    convs = depth + (1 if stem else 0)
    chans = [c_in] + [width] * convs
    h, w = spatial
    for _ in range(depth):
        h, w = h // 2, w // 2
    layers = [((3, 3, chans[i], width), (width,)) for i in range(convs)]
    return layers + [((h * w * width, 1), (1,))]


def draw(key, shapes, *, batch: tuple[int, ...] = ()) -> Params:
    """Standard-normal parameters of the given layer shapes, with leading ``batch`` axes
    (one network per batch index). One ``jax.random.normal`` call, sliced per layer."""
    sizes = [math.prod(ws) + math.prod(bs) for ws, bs in shapes]
    flat = jax.random.normal(key, (*batch, sum(sizes)), jnp.float32)
    layers, start = [], 0
    for ws, bs in shapes:
        nw = math.prod(ws)
        w = flat[..., start : start + nw].reshape(*batch, *ws)
        b = flat[..., start + nw : start + nw + math.prod(bs)].reshape(*batch, *bs)
        layers.append((w, b))
        start += nw + math.prod(bs)
    return {"hidden": layers[:-1], "readout": layers[-1]}


def init_fc(key, d_in: int, *, width: int, depth: int) -> Params:
    """One random ``fc`` network on ``d_in`` inputs (see :func:`fc_shapes`)."""
    return draw(key, fc_shapes(d_in, width=width, depth=depth))


def init_convnet(key, c_in: int, *, width: int, depth: int, spatial: tuple[int, int], stem: bool = True) -> Params:
    """One random ``convnet`` network (see :func:`convnet_shapes`)."""
    return draw(key, convnet_shapes(c_in, width=width, depth=depth, spatial=spatial, stem=stem))


def apply_fc(params: Params, x, *, w_std: float, b_std: float, readout: bool = True) -> jax.Array:
    """``x: (n, ...)`` flattened to ``(n, d)``; returns ``(n,)`` outputs, or with
    ``readout=False`` the readout's input features ``(n, width)`` (``(n, d)`` when depth is 0)."""
    h = jnp.reshape(x, (x.shape[0], math.prod(x.shape[1:])))
    for w, b in params["hidden"]:
        h = jax.nn.relu(_dense(h, w, b, w_std, b_std))
    if not readout:
        return h
    w, b = params["readout"]
    return _dense(h, w, b, w_std, b_std)[:, 0]


def _dense(h, w, b, w_std, b_std):
    w, b = w.astype(h.dtype), b.astype(h.dtype)
    return (w_std / math.sqrt(w.shape[0])) * (h @ w) + b_std * b


def _conv(h, w, b, w_std, b_std):
    w, b = w.astype(h.dtype), b.astype(h.dtype)
    fan_in = w.shape[0] * w.shape[1] * w.shape[2]
    y = conv3x3(h, w)
    return (w_std / math.sqrt(fan_in)) * y + b_std * b


def apply_convnet(params: Params, x, *, w_std: float, b_std: float, readout: bool = True,
                  stem: bool = True) -> jax.Array:
    """``x: (n, h, w, c)``; returns ``(n,)`` outputs, or with ``readout=False`` the
    flattened activations after the last pool ``(n, h' * w' * width)``. ``stem`` as in
    :func:`convnet_shapes` (it must match the parameters' shapes)."""
    h = x
    for i, (w, b) in enumerate(params["hidden"]):
        h = jax.nn.relu(_conv(h, w, b, w_std, b_std))
        if i > 0 or not stem:
            h = avg_pool(h)
    h = h.reshape(h.shape[0], math.prod(h.shape[1:]))
    if not readout:
        return h
    w, b = params["readout"]
    return _dense(h, w, b, w_std, b_std)[:, 0]

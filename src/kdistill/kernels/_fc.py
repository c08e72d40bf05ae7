"""Infinite-width fully-connected ReLU network kernels: ``fc-ntk`` and ``fc-nngp``.

Architecture (neural-tangents ``stax``, parameterization ``'ntk'``, arXiv:1912.02803):
``[Dense(W_std, b_std), Relu] * depth, Dense(W_std, b_std)`` on flattened inputs,
a Dense layer being ``h = W_std / sqrt(fan_in) * W x + b_std * b`` with W, b ~ N(0, 1).

Closed-form recursion on ``x1: (n1, d)``, ``x2: (n2, d)`` (flattened images):

    nngp_0 = x1 x2^T / d,  ntk_0 = 0
    Dense:  nngp <- W_std^2 nngp + b_std^2,   ntk <- W_std^2 ntk + nngp
    ReLU:   nngp <- sqrt(q1 q2) J1(rho),      ntk <- ntk J0(rho),   rho = nngp / sqrt(q1 q2)

with q the variances (diagonal of the self-kernel) tracked alongside and
J1, J0 the arc-cosine maps of :mod:`._arccos`.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from ._arccos import compute_dtype, relu_layer
from ._spec import Kernel, Param, check_scale, register

__all__ = ["fc_kernel", "fc_ntk", "fc_nngp", "check_relu_scale", "FC_PARAMS", "W_STD", "B_STD"]

SQRT2 = math.sqrt(2.0)


def check_relu_scale(family: str, *, layers: int, depth: int, w_std: float, b_std: float) -> None:
    """Refuse a ``w_std``/``depth`` pair whose kernel overflows (or, with no bias, underflows).

    Behind a ReLU each of the ``layers`` weight layers multiplies the variances by
    ``w_std**2 / 2`` (1 at the default sqrt(2)); see :func:`._spec.check_scale`.
    """
    check_scale(family, gain=w_std**2 / 2, layers=layers, bias=b_std,
                settings=f"w_std={w_std!r} with depth={depth}")


def _flat(x, dtype) -> jax.Array:
    x = jnp.asarray(x, dtype)
    return x.reshape(x.shape[0], math.prod(x.shape[1:]))  # not -1: n may be 0


def _sqrt_var(q: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.maximum(q, jnp.finfo(q.dtype).tiny))


def fc_kernel(x1, x2, *, get: str = "ntk", depth: int = 3, w_std: float = SQRT2, b_std: float = 0.1) -> jax.Array:
    """Infinite-width FC ReLU network kernel.

    Args:
      x1: ``(n1, ...)`` inputs, flattened to ``(n1, d)``.
      x2: ``(n2, ...)`` inputs with the same trailing size d.
      get: ``"ntk"`` or ``"nngp"``.
    Returns:
      ``(n1, n2)`` kernel matrix, float64 when ``jax_enable_x64`` is on.
    """
    dtype = compute_dtype(x1, x2)
    f1, f2 = _flat(x1, dtype), _flat(x2, dtype)
    d = f1.shape[1]
    w2, b2 = w_std**2, b_std**2
    nngp = f1 @ f2.T / d
    q1, q2 = jnp.sum(f1 * f1, axis=1) / d, jnp.sum(f2 * f2, axis=1) / d
    ntk = jnp.zeros_like(nngp) if get == "ntk" else None
    for _ in range(depth):
        nngp, q1, q2 = w2 * nngp + b2, w2 * q1 + b2, w2 * q2 + b2
        if ntk is not None:
            ntk = w2 * ntk + nngp
        nngp, ntk = relu_layer(nngp, ntk, _sqrt_var(q1)[:, None], _sqrt_var(q2)[None, :])
        q1, q2 = q1 / 2, q2 / 2
    nngp = w2 * nngp + b2
    if ntk is None:
        return nngp
    return w2 * ntk + nngp


def _build(get: str, family: str, depth: int, w_std: float, b_std: float) -> Kernel:
    check_relu_scale(family, layers=depth + 1, depth=depth, w_std=w_std, b_std=b_std)
    fn = jax.jit(functools.partial(fc_kernel, get=get, depth=depth, w_std=w_std, b_std=b_std))

    return Kernel(family, (("depth", depth), ("w_std", w_std), ("b_std", b_std)), fn)


# Shared by every neural kernel (fc, convnet, rf-*): KIP uses sqrt(2) and 0.1 (or 0), neural-tangents'
# examples 1.5 and 0.05; published sweeps stay below w_std^2 = 5. The depth and w_std together are
# checked by check_relu_scale.
W_STD = Param(float, SQRT2, "weight std: W ~ N(0, w_std^2 / fan_in)", min=0.01, max=10.0)
B_STD = Param(float, 0.1, "bias std: b ~ N(0, b_std^2)", min=0.0, max=10.0)

# depth: cost is linear in it (the recursion is unrolled when tracing); KIP uses at most ~10.
FC_PARAMS = {
    "depth": Param(int, 3, "number of [Dense, ReLU] blocks before the readout Dense", min=0, max=100),
    "w_std": W_STD,
    "b_std": B_STD,
}


@register("fc-ntk", params=FC_PARAMS, doc="NTK of an infinite-width FC ReLU network ([Dense, ReLU] x depth, Dense)")
def fc_ntk(*, depth: int = 3, w_std: float = SQRT2, b_std: float = 0.1) -> Kernel:
    return _build("ntk", "fc-ntk", depth, w_std, b_std)


@register("fc-nngp", params=FC_PARAMS, doc="NNGP of an infinite-width FC ReLU network ([Dense, ReLU] x depth, Dense)")
def fc_nngp(*, depth: int = 3, w_std: float = SQRT2, b_std: float = 0.1) -> Kernel:
    return _build("nngp", "fc-nngp", depth, w_std, b_std)

"""The ReLU arc-cosine maps shared by the fully-connected and ConvNet kernels.

For a centred Gaussian pair (u, v) with variances q1, q2 and correlation rho
(Cho & Saul 2009; arXiv:1711.00165 for the NNGP, arXiv:1806.07572 for the NTK):

    E[relu(u) relu(v)]   = sqrt(q1 q2) * J1(rho),  J1(rho) = (sqrt(1 - rho^2) + (pi - arccos rho) rho) / (2 pi)
    E[relu'(u) relu'(v)] =               J0(rho),  J0(rho) = (pi - arccos rho) / (2 pi)

so one ReLU layer maps (nngp, ntk) to (sqrt(q1 q2) J1(rho), ntk * J0(rho)); the next
affine layer then adds its own NNGP to the NTK.

``J1`` and ``J0`` carry a custom derivative: dJ1/drho = J0 exactly (the two
infinite slopes of sqrt and arccos at |rho| = 1 cancel), and dJ0/drho =
1 / (2 pi sqrt(1 - rho^2)) is set to 0 where 1 - rho^2 falls below a few ulps
(|rho| = 1 happens on the diagonal of K(x, x), where rho cannot move), so
gradients stay finite everywhere.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from numpy.polynomial import Chebyshev, Polynomial

__all__ = ["relu_j1_j0", "j1_j0", "relu_j0_slope", "relu_layer", "compute_dtype", "fast_arccos"]

_TWO_PI = 2.0 * math.pi


def compute_dtype(*xs) -> jnp.dtype:
    """Float dtype the neural kernels compute in: the inputs' dtype promoted with JAX's
    default float, i.e. float64 whenever ``jax_enable_x64`` is on, else float32."""
    return jnp.promote_types(jnp.result_type(*xs), jnp.result_type(float))


@functools.cache
def _asin_poly(dtype_name: str) -> tuple[float, ...]:
    """Monomial coefficients of g(t) = (asin(sqrt t) - sqrt t) / t^1.5 on t in [0, 1/4].

    Built from the Taylor series asin z = sum_k (2k)! / (4^k k!^2 (2k + 1)) z^(2k+1)
    (80 terms, exact to double precision for t <= 1/4), then Chebyshev-economised:
    the Chebyshev coefficients on [0, 1/4] below the dtype's resolution are
    dropped (14 terms remain for float64, 7 for float32).
    """
    k = np.arange(1, 80)
    log_c = np.array([math.lgamma(2 * i + 1) - 2 * math.lgamma(i + 1) - i * math.log(4.0) for i in k])
    taylor = Polynomial(np.exp(log_c) / (2 * k + 1))
    cheb = taylor.convert(kind=Chebyshev, domain=[0.0, 0.25])
    tol = 1e-18 if dtype_name == "float64" else 1e-9
    keep = int(np.nonzero(np.abs(cheb.coef) > tol)[0].max()) + 1
    return tuple(Chebyshev(cheb.coef[:keep], domain=[0.0, 0.25]).convert(kind=Polynomial).coef)


def fast_arccos(x: jax.Array) -> jax.Array:
    """arccos on [-1, 1] from a polynomial, vectorisable on CPU (XLA lowers ``arccos``/``arctan2``
    to scalar calls, about 10x slower). Absolute error about 1 ulp of pi (4e-16 in float64,
    3e-7 in float32). Not differentiable by itself: only used under the custom jvp below.

    Range reduction: for |x| <= 1/2, acos|x| = pi/2 - asin|x|; for |x| > 1/2,
    acos|x| = 2 asin(sqrt((1 - |x|) / 2)); acos(-a) = pi - acos(a).
    """
    coef = _asin_poly(jnp.dtype(x.dtype).name)
    a = jnp.abs(x)
    big = a > 0.5
    t = jnp.where(big, 0.5 * (1.0 - a), a * a)
    p = jnp.full_like(t, coef[-1])
    for c in coef[-2::-1]:
        p = p * t + c
    # every expensive op (sqrt) has a single use, so XLA fuses this into one elementwise loop
    asin_z = jnp.where(big, jnp.sqrt(t), a) * (1.0 + t * p)
    acos_a = jnp.where(big, 2.0 * asin_z, 0.5 * math.pi - asin_z)
    return jnp.where(x < 0, math.pi - acos_a, acos_a)


def j1_j0(rho: jax.Array) -> tuple[jax.Array, jax.Array]:
    rho = jnp.clip(rho, -1.0, 1.0)
    s = jnp.sqrt((1.0 - rho) * (1.0 + rho))
    pi_minus_theta = fast_arccos(-rho)
    return (s + pi_minus_theta * rho) / _TWO_PI, pi_minus_theta / _TWO_PI


@jax.custom_jvp
def relu_j1_j0(rho: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``rho -> (J1(rho), J0(rho))`` elementwise, see the module docstring; rho is clipped to [-1, 1]."""
    return j1_j0(rho)


def relu_j0_slope(rho: jax.Array) -> jax.Array:
    """dJ0/drho = 1 / (2 pi sqrt(1 - rho^2)), set to 0 within a few ulps of |rho| = 1."""
    one_minus = (1.0 - rho) * (1.0 + rho)
    ok = one_minus > 64 * jnp.finfo(rho.dtype).eps
    return jnp.where(ok, 1.0 / (_TWO_PI * jnp.sqrt(jnp.where(ok, one_minus, 1.0))), 0.0)


@relu_j1_j0.defjvp
def _relu_j1_j0_jvp(primals, tangents):
    (rho,), (drho,) = primals, tangents
    j1, j0 = j1_j0(rho)
    return (j1, j0), (j0 * drho, relu_j0_slope(rho) * drho)


def relu_layer(nngp, ntk, sqrt_q1, sqrt_q2):
    """One ReLU layer on a block of covariances.

    Args:
      nngp: covariances E[u v], any shape broadcastable with ``sqrt_q1 * sqrt_q2``.
      ntk: the NTK before the layer, same shape, or ``None`` (NNGP only).
      sqrt_q1, sqrt_q2: square roots of the variances E[u^2], E[v^2], broadcastable.
    Returns:
      ``(nngp', ntk')`` after the ReLU (``ntk'`` is ``None`` when ``ntk`` is).
    """
    scale = sqrt_q1 * sqrt_q2
    # reciprocals on the small per-image arrays: no divide on the big block
    j1, j0 = relu_j1_j0(nngp * ((1.0 / sqrt_q1) * (1.0 / sqrt_q2)))
    new = scale * j1
    return new, (None if ntk is None else ntk * j0)

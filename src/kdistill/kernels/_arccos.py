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

import math

import jax
import jax.numpy as jnp

__all__ = ["relu_j1_j0", "relu_layer", "compute_dtype"]

_TWO_PI = 2.0 * math.pi


def compute_dtype(*xs) -> jnp.dtype:
    """Float dtype the neural kernels compute in: the inputs' dtype promoted with JAX's
    default float, i.e. float64 whenever ``jax_enable_x64`` is on, else float32."""
    return jnp.promote_types(jnp.result_type(*xs), jnp.result_type(float))


def _j1_j0(rho: jax.Array) -> tuple[jax.Array, jax.Array]:
    rho = jnp.clip(rho, -1.0, 1.0)
    s = jnp.sqrt(jnp.maximum(1.0 - rho * rho, 0.0))
    pi_minus_theta = math.pi - jnp.arctan2(s, rho)
    return (s + pi_minus_theta * rho) / _TWO_PI, pi_minus_theta / _TWO_PI


@jax.custom_jvp
def relu_j1_j0(rho: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``rho -> (J1(rho), J0(rho))`` elementwise, see the module docstring; rho is clipped to [-1, 1]."""
    return _j1_j0(rho)


@relu_j1_j0.defjvp
def _relu_j1_j0_jvp(primals, tangents):
    (rho,), (drho,) = primals, tangents
    j1, j0 = _j1_j0(rho)
    one_minus = 1.0 - rho * rho
    tol = 64 * jnp.finfo(rho.dtype).eps
    safe = jnp.where(one_minus > tol, one_minus, 1.0)
    dj0 = jnp.where(one_minus > tol, drho / (_TWO_PI * jnp.sqrt(safe)), 0.0)
    return (j1, j0), (j0 * drho, dj0)


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
    j1, j0 = relu_j1_j0(nngp / scale)
    new = scale * j1
    return new, (None if ntk is None else ntk * j0)

"""What KRR-loss methods share (KIP, RFAD, and any method that learns a support set under a KRR loss):
the ridge solve, the predictions, one jitted optimiser step and the ``{"params", "opt", "y_fixed"}`` state."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from ..._typing import KernelFn

__all__ = ["ridge_solve", "krr_predictions", "adam_update", "init_state"]


def ridge_solve(k_ss, y_s, reg: float):
    """``(K_SS + lam I)^-1 Y_S`` with ``lam = reg * tr(K_SS) / m``, by Cholesky (JAX, differentiable)."""
    m = k_ss.shape[0]
    lam = reg * jnp.trace(k_ss) / m
    factor = jax.scipy.linalg.cho_factor(k_ss + lam * jnp.eye(m, dtype=k_ss.dtype), lower=True)
    return jax.scipy.linalg.cho_solve(factor, y_s)


def krr_predictions(kernel_fn: KernelFn, x_s, y_s, x_t, *, reg: float):
    """``K(x_t, x_s) (K_SS + lam I)^-1 y_s`` with ``lam = reg * tr(K_SS) / m`` (JAX, differentiable).

    Shapes: x_s (m, h, w, c), y_s (m, k), x_t (b, h, w, c) -> (b, k).
    """
    k_ss = kernel_fn(x_s, x_s)  # before K_TS: the order the recorded reference losses were computed in
    k_ts = kernel_fn(x_t, x_s)
    return k_ts @ ridge_solve(k_ss, y_s, reg)


def adam_update(objective, optimizer):
    """``update(params, opt_state, *args) -> (params, opt_state, loss, accuracy)``: one jitted optimiser step
    on ``objective(params, *args) -> (loss, accuracy)`` (any optax optimiser, despite the name)."""

    @jax.jit
    def update(params, opt_state, *args):
        (value, acc), grads = jax.value_and_grad(objective, has_aux=True)(params, *args)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value, acc

    return update


def init_state(x_s, y_s, *, optimizer, learn_labels: bool, loss_init) -> dict:
    """``{"params": {"x", ["y"], [loss parameters]}, "opt": optimiser state, "y_fixed": labels}``."""
    params = {"x": jnp.asarray(x_s)}
    if learn_labels:
        params["y"] = jnp.asarray(y_s)
    for k, v in loss_init.items():
        params[k] = jnp.asarray(v, dtype=params["x"].dtype)
    return {"params": params, "opt": optimizer.init(params), "y_fixed": jnp.asarray(y_s)}

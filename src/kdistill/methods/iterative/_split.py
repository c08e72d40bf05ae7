"""One optimisation step of a KRR-loss method split between a coordinator and workers holding the target pool.

The KRR loss of a target batch is a sum over its rows, and each row sees the support set only through
a small "readout" the coordinator can compute alone:

    KIP:   pred_i = K(x_i, X_S) alpha,   alpha = (K_SS + lam I)^-1 Y_S,    readout r = (X_S, alpha)
    RFAD:  pred_i = phi(x_i) v,          v = Phi_S^T (Phi_S Phi_S^T + lam I)^-1 Y_S,   readout r = v

So a step takes one round trip (the KIP paper's coordinator/worker split, DESIGN.md section 1, with the
coordinator's gradient with respect to the kernel blocks folded into the workers):

1. the coordinator computes ``r = head(X_S, Y_S)`` and sends it to every worker with the step's indices;
2. each worker, for the rows of its shard, computes the rows' share of the loss (``loss * rows / b``) and
   its gradient with respect to ``r`` and the loss's own parameters (Platt's temperature): for KIP this
   includes the vector-Jacobian product of its kernel block ``K(X_T_w, X_S)``; for RFAD only
   ``phi(X_T_w)^T dL/dpred``, a (p, k) matrix;
3. the coordinator sums the workers' gradients and pulls them back through ``head`` (the K_SS path).

What crosses the network per step and worker: ``r`` out and its gradient back, plus the step's indices,
target rows and weights; never a target image (they stay on the workers). For KIP ``r`` is
m x (h w c + k) numbers, for RFAD p x k, independent of the support size and the batch.

This module is the method-independent part. A method hands :func:`split_update` its own three pieces,
module-level functions in its own module (KIP's in ``methods/_kip.py``, RFAD's in ``methods/_rfad.py``):
``head(Z, Y_S, X_S) -> r``, the support side ``rows(idx, X_S, *static, key) -> Z[idx]`` (KIP: K_SS rows,
RFAD: Phi_S rows) and the worker's ``shard`` (the rows' loss and its gradient with respect to r).

Worker-side functions are module-level (they pickle by name) and compiled once per worker; rows are
padded to a multiple of ``_ROWS`` with weight-0 copies so a step's varying shard sizes reuse a few
compiled shapes. Sums in another order than the single-process step's: equal to rounding.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._losses import LOSSES

__all__ = ["split_update", "pad_rows", "rows_loss", "support_rows", "support_rows_vjp", "step_bytes"]

_ROWS = 32  # shard rows are padded to a multiple of this


def _add(a, b):
    return jax.tree_util.tree_map(lambda u, v: u + v, a, b)


def pad_rows(x_t, y_t, w):
    """Rows padded to a multiple of ``_ROWS`` by weight-0 copies of the first; returns the mask too."""
    n = x_t.shape[0]
    extra = -n % _ROWS
    mask = np.concatenate([np.ones(n, bool), np.zeros(extra, bool)])
    if extra:
        x_t = np.concatenate([x_t, np.repeat(x_t[:1], extra, axis=0)])
        y_t = np.concatenate([y_t, np.repeat(y_t[:1], extra, axis=0)])
        w = np.concatenate([w, np.zeros(extra, w.dtype)])
    return x_t, y_t, w, mask


def rows_loss(loss: str, pred, y_t, w, mask, extra, b_total):
    """The rows' share of a batch loss that is a mean over ``b_total`` rows, and their correct count."""
    spec = LOSSES[loss]
    value = spec.fn(pred, y_t, w, dict(spec.init, **extra)) * (pred.shape[0] / b_total)
    correct = jnp.sum(mask * (jnp.argmax(pred, axis=1) == jnp.argmax(y_t, axis=1)))
    return value, correct


def step_bytes(*, m: int, d: int, k: int, b: int, workers: int, itemsize: int, x_itemsize: int, readout_bytes: int,
               z_cols: int, support_on_workers: bool, extra: int = 0) -> tuple[int, int]:
    """Bytes (sent, received) per split step, as :class:`~kdistill.parallel.DaskExecutor` counts them
    (a broadcast argument once per task; scalars and pickle framing aside): ``m`` support images of
    ``d`` numbers, ``k`` classes, ``b`` target rows, ``itemsize`` the bytes of a kernel value (8 in
    float64) and ``x_itemsize`` of an image pixel (4: images stay float32), ``readout_bytes`` the size
    of r (KIP: m d x_itemsize + m k itemsize; RFAD: p k itemsize with p random features), ``z_cols``
    the columns of Z (KIP: m; RFAD: p), ``extra`` learned loss parameters (Platt: 1). See
    docs/distributed.md."""
    sent = workers * (readout_bytes + extra * x_itemsize) + b * (8 + (k + 1) * x_itemsize)
    received = workers * (readout_bytes + extra * x_itemsize)
    if support_on_workers:
        tasks = min(workers, m)
        sent += 2 * tasks * m * d * x_itemsize + 2 * 8 * m + m * z_cols * itemsize
        received += m * z_cols * itemsize + tasks * m * d * x_itemsize
    return sent, received


# ---- the support side: Z = F(X_S) row by row (K_SS for KIP, Phi_S for RFAD), then the head ------------

@functools.lru_cache(maxsize=16)
def _support_fns(rows_fn: Callable, static: tuple):
    """``(rows(idx, x_s, key) -> Z[idx], rows_vjp(idx, g, x_s, key) -> d<g, Z[idx]>/dX_S)``, jitted, for the
    method's ``rows_fn(idx, x_s, *static, key)``."""
    def rows(idx, x_s, key):
        return rows_fn(idx, x_s, *static, key)

    def rows_vjp(idx, g, x_s, key):
        return jax.vjp(lambda x: rows(idx, x, key), x_s)[1](g)[0]

    return jax.jit(rows), jax.jit(rows_vjp)


def _key(key_data):
    return None if key_data is None else jax.random.wrap_key_data(jnp.asarray(key_data))


def support_rows(idx, x_s, rows_fn, static, key_data):
    """Rows ``idx`` of Z = F(X_S) (a worker's block of the support side)."""
    rows, _ = _support_fns(rows_fn, static)
    return np.asarray(rows(jnp.asarray(idx), x_s, _key(key_data)))


def support_rows_vjp(idx, g, x_s, rows_fn, static, key_data):
    """The gradient with respect to X_S of <g, Z[idx]> (summed over the blocks: the support side's VJP)."""
    _, rows_vjp = _support_fns(rows_fn, static)
    return np.asarray(rows_vjp(jnp.asarray(idx), g, x_s, _key(key_data)))


def split_update(head: Callable, support: tuple, shard: Callable, static: tuple, *, optimizer, learn_labels: bool,
                 loss: str, executor, support_on_workers: bool | None = None):
    """``update(params, opt_state, y_fixed, batch, key) -> (params, opt_state, loss, accuracy)``: one optimiser
    step with the batch's rows evaluated by ``executor.map_take(shard, batch.pool, batch.indices, ...)``.

    ``support = (rows_fn, static)`` names Z = F(X_S): ``rows_fn(idx, x_s, *static, key) -> Z[idx]``, a module-level
    function of the method (it travels to the workers by name); ``head(Z, Y_S, X_S) -> r``;
    ``shard(x_t, y_t, w, r, extra, *static, b_total, key_data)`` returns a worker's
    ``(loss, correct, dL/dr, dL/dextra)`` (KIP's and RFAD's in their own modules). ``support_on_workers``
    (default: when the executor has two or more workers) computes Z and its VJP in row blocks on the
    workers too (two more round trips per step, nothing left on the coordinator but the m x m solve);
    else the coordinator computes them.
    """
    loss_init = LOSSES[loss].init
    if support_on_workers is None:
        support_on_workers = len(executor.workers()) > 1

    def full(x_s, y_s, key):
        rows, _ = _support_fns(*support)
        return head(rows(jnp.arange(x_s.shape[0]), x_s, key), y_s, x_s)

    # Forward and backward are separate compiled programs with the worker round trip between them; the
    # backward recomputes the forward (a VJP closure cannot cross from one compiled program to the next
    # without recompiling every step): one more pass over the support side, on the coordinator.
    @jax.jit
    def forward(x_s, y_s, key):  # coordinator computes Z too
        return full(x_s, y_s, key)

    @jax.jit
    def backward(x_s, y_s, key, g_r):
        return jax.vjp(lambda x, y: full(x, y, key), x_s, y_s)[1](g_r)

    head_forward = jax.jit(head)  # Z from the workers

    @jax.jit
    def head_backward(z, y_s, x_s, g_r):
        return jax.vjp(head, z, y_s, x_s)[1](g_r)

    @jax.jit
    def apply(params, opt_state, grads):
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    def update(params, opt_state, y_fixed, batch, key):
        x_s = params["x"]
        y_s = params["y"] if learn_labels else y_fixed
        key_data = None if key is None else np.asarray(jax.random.key_data(key))
        host_x = np.asarray(x_s)
        rows = np.arange(x_s.shape[0])
        if support_on_workers:
            z = jnp.asarray(executor.map(support_rows, rows, broadcast=(host_x, *support, key_data),
                                         block_size=len(rows)))
            r = head_forward(z, y_s, x_s)
        else:
            r = forward(x_s, y_s, key)
        extra = {k: np.asarray(params[k]) for k in loss_init}
        b_total = len(batch.indices)
        value, correct, g_r, g_extra = executor.map_take(
            shard, batch.pool, batch.indices, np.asarray(batch.y), np.asarray(batch.weights),
            broadcast=(jax.device_get(r), extra, *static, b_total, key_data), reduce=_add)
        g_r = jax.tree_util.tree_map(lambda g, ref: jnp.asarray(g, ref.dtype), g_r, r)
        if support_on_workers:
            g_z, g_y, g_x = head_backward(z, y_s, x_s, g_r)
            g_x = g_x + jnp.asarray(executor.map(support_rows_vjp, rows, np.asarray(g_z),
                                                 broadcast=(host_x, *support, key_data), block_size=len(rows),
                                                 reduce=_add), x_s.dtype)
        else:
            g_x, g_y = backward(x_s, y_s, key, g_r)
        grads = {"x": g_x, **{k: jnp.asarray(v, params[k].dtype) for k, v in g_extra.items()}}
        if learn_labels:
            grads["y"] = g_y
        params, opt_state = apply(params, opt_state, grads)
        return params, opt_state, value, correct / b_total

    return update

"""Kernel Inducing Points (KIP; Nguyen, Chen & Lee, arXiv:2011.00050 and arXiv:2107.13034).

Learn support images X_S (and optionally labels Y_S) by gradient descent on a loss of the
KRR predictions for a target batch (X_T, Y_T):

    pred = K(X_T, X_S) (K_SS + lam I)^-1 Y_S,   lam = reg * tr(K_SS) / m,
    L = 1/2 mean_i w_i || y_i - pred_i ||^2     (``mse``, KIP)   or   Platt's cross-entropy (``platt``),

with Adam (optax). KIP is an :class:`~kdistill.methods.iterative.IterativeMethod` on the shared driver,
which owns validation, checkpoints, resume and target batches. With ``redraw_every`` and a
random-feature kernel (``rf-convnet``, ``rf-fc``), the networks behind the kernel are redrawn
from a fresh key every N steps (RFAD); validation keeps the kernel's own fixed draw.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import krr
from .._typing import KernelFn
from ..errors import InvalidInputError
from ..kernels import Kernel
from ..parallel import get_executor
from .iterative import (LOSSES, Batch, DriverSettings, Init, IterativeMethod, IterativeResult, Sampler, adam_update,
                        get_loss, init_state, krr_predictions, method_fields, option, pad_rows, register_iterative,
                        ridge_solve, rows_loss, run_iterative, split_update)
from ._label_solve import label_solve
from ._types import Context

__all__ = ["KIPSettings", "KIPResult", "kip_loss", "kip_method", "kip"]


@dataclasses.dataclass(frozen=True)
class KIPSettings(DriverSettings):
    """Settings of a KIP run: the driver's (:class:`~kdistill.methods.iterative.DriverSettings`: steps,
    batches, validation, checkpoints) and KIP's own.

    Attributes:
      lr: Adam learning rate.
      reg: relative ridge, lam = reg * tr(K_SS) / m (KIP: 1e-6; a run's ``--reg``).
      learn_labels: optimise Y_S jointly with X_S.
      label_solve_every: re-solve Y_S in closed form on the step's target batch every N steps (0: never).
      loss: ``"mse"`` (KIP) or ``"platt"`` (RFAD), see ``kdistill.methods.iterative.LOSSES``.
      redraw_every: random-feature kernels only: redraw the networks every N steps (0: never).
    """

    steps: int = 4000
    lr: float = option(0.02, "Adam learning rate (pixels move about lr per step)", min=0, min_exclusive=True, max=10)
    reg: float = option(1e-6, "relative ridge of the KRR predictions", min=0, cli=False)
    learn_labels: bool = option(False, "learn the labels too")
    label_solve_every: int = option(0, "re-solve the labels in closed form on the step's batch every N steps", min=0)
    loss: str = option("mse", "loss of the KRR predictions", choices=lambda: tuple(LOSSES))
    redraw_every: int = option(0, "random-feature kernels: redraw the networks every N steps (0: never)", min=0)

    def validate(self) -> None:
        super().validate()
        if not (self.lr > 0 and np.isfinite(self.lr)):
            raise InvalidInputError(f"KIP learning rate must be a finite number > 0, got {self.lr}")
        if not (self.reg >= 0 and np.isfinite(self.reg)):
            raise InvalidInputError(f"KIP reg must be a finite number >= 0, got {self.reg}")
        for name in ("label_solve_every", "redraw_every"):
            if getattr(self, name) < 0:
                raise InvalidInputError(f"KIP {name} must be >= 0, got {getattr(self, name)}")
        get_loss(self.loss)


KIPResult = IterativeResult


def kip_loss(kernel_fn: KernelFn, x_s, y_s, x_t, y_t, *, reg: float, loss: str = "mse", weights=None,
             params=None):
    """The KIP loss and the target batch accuracy (JAX, differentiable in ``x_s`` and ``y_s``).

    Shapes: x_s (m, h, w, c), y_s (m, k), x_t (b, h, w, c), y_t (b, k), weights (b,) (default ones).
    Returns ``(loss, accuracy)``.
    """
    pred = krr_predictions(kernel_fn, x_s, y_s, x_t, reg=reg)
    w = jnp.ones(y_t.shape[0], pred.dtype) if weights is None else weights
    value = LOSSES[loss].fn(pred, y_t, w, dict(LOSSES[loss].init, **(params or {})))
    acc = jnp.mean(jnp.argmax(pred, axis=1) == jnp.argmax(y_t, axis=1))
    return value, acc


# ---- KIP's distributed step (kdistill.methods.iterative.split_update): r = (X_S, alpha), Z = K_SS ----------

def kip_head(reg: float):
    """``(Z = K_SS, Y_S, X_S) -> r = (X_S, alpha)``."""
    return lambda z, y_s, x_s: (x_s, ridge_solve(z, y_s, reg))


def kip_support_rows(idx, x_s, kernel: Kernel, key):
    """Rows ``idx`` of K_SS (under the networks drawn from ``key`` for a random-feature kernel)."""
    return kernel.fn(x_s[idx], x_s) if key is None else kernel.keyed(key, x_s[idx], x_s)


@functools.lru_cache(maxsize=16)
def _kip_shard_fn(kernel, loss: str, keyed: bool):
    def objective(r, extra, x_t, y_t, w, mask, b_total, key):
        x_s, alpha = r
        k_ts = kernel.keyed(key, x_t, x_s) if keyed else kernel.fn(x_t, x_s)
        return rows_loss(loss, k_ts @ alpha, y_t, w, mask, extra, b_total)

    return jax.jit(jax.value_and_grad(objective, argnums=(0, 1), has_aux=True))


def kip_shard(x_t, y_t, w, r, extra, kernel: Kernel, loss: str, b_total: int, key_data):
    """A worker's share of a KIP step: ``(loss, correct, dL/dr, dL/dextra)`` for its rows."""
    x_t, y_t, w, mask = pad_rows(np.asarray(x_t), np.asarray(y_t), np.asarray(w))
    key = None if key_data is None else jax.random.wrap_key_data(jnp.asarray(key_data))
    fn = _kip_shard_fn(kernel, loss, key_data is not None)
    (value, correct), (g_r, g_extra) = fn(r, extra, x_t, y_t, w, mask, b_total, key)
    return jax.device_get((value, correct, g_r, g_extra))


def _kernel_fn(kernel: Kernel | KernelFn) -> KernelFn:
    return kernel.fn if isinstance(kernel, Kernel) else kernel


def kip_method(kernel: Kernel | KernelFn, *, lr: float, reg: float, learn_labels: bool = False,
               label_solve_every: int = 0, loss: str = "mse", redraw_every: int = 0, seed: int = 0,
               name: str = "kip", executor=None, split: bool | None = None,
               support_on_workers: bool | None = None) -> IterativeMethod:
    """KIP as an iterative method for :func:`~kdistill.methods.iterative.run_iterative`.

    State: ``{"params": {"x", ["y"], [loss parameters]}, "opt": Adam state, "y_fixed": labels}``.
    ``split`` (default: when ``executor`` is distributed) evaluates each step's target rows through
    ``executor.map_take`` (:func:`~kdistill.methods.iterative.split_update`: the workers hold the target pool; ``support_on_workers``, default
    with two or more workers, computes K_SS there too); else one fused jitted step.
    """
    fixed_fn = _kernel_fn(kernel)
    the_loss = get_loss(loss)
    if redraw_every and not (isinstance(kernel, Kernel) and kernel.keyed is not None):
        raise InvalidInputError(
            f"redraw_every needs a random-feature kernel (rf-convnet, rf-fc); {getattr(kernel, 'spec', kernel)!r} "
            "has no random draw")
    optimizer = optax.adam(lr)
    base_key = jax.random.fold_in(jax.random.key(seed), 0x6B6970)  # "kip": the redraw stream

    def objective(params, y_fixed, x_t, y_t, w, key):
        kfn = fixed_fn if key is None else functools.partial(kernel.keyed, key)
        y_s = params["y"] if learn_labels else y_fixed
        extra = {k: params[k] for k in the_loss.init}
        return kip_loss(kfn, params["x"], y_s, x_t, y_t, reg=reg, loss=loss, weights=w, params=extra)

    update = adam_update(objective, optimizer)
    init = functools.partial(init_state, optimizer=optimizer, learn_labels=learn_labels, loss_init=the_loss.init)
    if split is None:
        split = get_executor(executor).distributed
    if split:
        if not isinstance(kernel, Kernel):
            raise InvalidInputError("a distributed KIP step needs a registry kernel (a spec string or Kernel), "
                                    "not a plain function: workers rebuild it from its spec")
        split_step = split_update(kip_head(reg), (kip_support_rows, (kernel,)), kip_shard, (kernel, loss),
                                  optimizer=optimizer, learn_labels=learn_labels, loss=loss,
                                  executor=get_executor(executor), support_on_workers=support_on_workers)

    def step(state, batch: Batch):
        params, y_fixed = state["params"], state["y_fixed"]
        if label_solve_every and batch.step % label_solve_every == 0:
            # on the coordinator (the batch is here): sending the batch's images each time would cost more
            solved = label_solve(fixed_fn, np.asarray(params["x"]), np.asarray(batch.x), np.asarray(batch.y),
                                 reg=reg)
            y_fixed = jnp.asarray(solved, dtype=y_fixed.dtype)
            if learn_labels:
                params = dict(params, y=y_fixed)
        key = jax.random.fold_in(base_key, batch.step // redraw_every) if redraw_every else None
        if split:
            params, opt_state, value, acc = split_step(params, state["opt"], y_fixed, batch, key)
        else:
            params, opt_state, value, acc = update(params, state["opt"], y_fixed, batch.x, batch.y, batch.weights,
                                                   key)
        metrics = {"loss": value, "batch_accuracy": acc}
        if "log_temp" in params:
            metrics["log_temp"] = params["log_temp"]
        return {"params": params, "opt": opt_state, "y_fixed": y_fixed}, metrics

    def support(state):
        return state["params"]["x"], state["params"]["y"] if learn_labels else state["y_fixed"]

    eval_fn = kernel if isinstance(kernel, Kernel) else fixed_fn  # a Kernel's __call__ is jitted

    def validate(x_s, y_s, x_val, labels_val):
        model = krr.fit(eval_fn, np.asarray(x_s), np.asarray(y_s), reg=reg)
        return krr.accuracy(krr.predict(eval_fn, model, x_val, executor=executor), labels_val)

    def scores(state, x, y):
        """Each example's KIP loss under the current support set (what smart-pick draws by)."""
        x_s, y_s = support(state)
        model = krr.fit(eval_fn, np.asarray(x_s), np.asarray(y_s), reg=reg)
        pred = jnp.asarray(krr.predict(eval_fn, model, x, executor=executor))
        return np.asarray(the_loss.per_example(pred, y, state["params"]))

    return IterativeMethod(name, init, step, support, validate,
                           hint=f"lower --lr or raise the ridge (reg={reg})", scores=scores)


def kip(
    kernel: Kernel | KernelFn,
    x_train: np.ndarray,
    labels: np.ndarray,
    *,
    num_classes: int,
    ipc: int,
    seed: int,
    settings: KIPSettings = KIPSettings(),
    init: Init | None = None,
    sampler: Sampler | None = None,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    fingerprint: dict[str, Any] | None = None,
    on_checkpoint: Callable[[int], None] | None = None,
    progress: bool = False,
    executor=None,
) -> KIPResult:
    """Run KIP on ``x_train: (n, h, w, c)``, ``labels: (n,)`` and return the best support set.

    A convenience over :func:`kip_method` + :func:`~kdistill.methods.iterative.run_iterative` (see there for
    the validation split, ``init``, ``sampler(step, state) -> (indices, weights)``, checkpoints and resume).
    """
    settings.validate()
    method = kip_method(kernel, lr=settings.lr, reg=settings.reg, learn_labels=settings.learn_labels,
                        label_solve_every=settings.label_solve_every, loss=settings.loss,
                        redraw_every=settings.redraw_every, seed=seed, executor=executor)
    fp = dict(fingerprint or {}, kip=method_fields(settings, DriverSettings))
    return run_iterative(method, x_train, labels, num_classes=num_classes, ipc=ipc, seed=seed,
                         settings=settings.driver(), kernel=kernel if isinstance(kernel, Kernel) else None,
                         init=init, sampler=sampler, checkpoint=checkpoint, resume=resume, fingerprint=fp,
                         on_checkpoint=on_checkpoint, progress=progress)


def _build(s: KIPSettings, ctx: Context) -> IterativeMethod:
    return kip_method(ctx.kernel, lr=s.lr, reg=s.reg, learn_labels=s.learn_labels,
                      label_solve_every=s.label_solve_every, loss=s.loss, redraw_every=s.redraw_every,
                      seed=ctx.config.seed, executor=ctx.executor)


register_iterative("kip", KIPSettings, _build, doc="Kernel Inducing Points (Nguyen et al. 2021): Adam on the support "
                   "images (and labels) to minimise the KRR loss on target batches; any kernel",
                   smoke={"steps": 4, "target_batch": 60, "val_every": 2, "checkpoint_every": 1, "learn_labels": True},
                   smoke_kernel="rbf")

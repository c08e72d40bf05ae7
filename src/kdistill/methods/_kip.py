"""Kernel Inducing Points (KIP; Nguyen, Chen & Lee, arXiv:2011.00050 and arXiv:2107.13034).

Learn support images X_S (and optionally labels Y_S) by gradient descent on a loss of the
KRR predictions for a target batch (X_T, Y_T):

    pred = K(X_T, X_S) (K_SS + lam I)^-1 Y_S,   lam = reg * tr(K_SS) / m,
    L = 1/2 mean_i w_i || y_i - pred_i ||^2     (``mse``, KIP)   or   Platt's cross-entropy (``platt``),

with Adam (optax). KIP is an :class:`~kdistill.methods.IterativeMethod` on the shared driver,
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
from .._executor import get_executor
from .._typing import KernelFn
from ..errors import InvalidInputError
from ..kernels import Kernel
from ._driver import (Batch, DriverSettings, IterativeMethod, IterativeResult, driver_options, driver_settings,
                      run_iterative)
from ._label_solve import label_solve
from ._losses import LOSSES, get_loss
from ._registry import Option, register_method
from ._sampling import Init, Sampler
from ._split import kip_head, kip_shard, ridge_solve, split_update
from ._types import Context, MethodOutput

__all__ = ["KIPSettings", "KIPResult", "kip_loss", "krr_predictions", "kip_method", "kip"]


@dataclasses.dataclass(frozen=True)
class KIPSettings:
    """Settings of a KIP run: the driver's (steps, batches, validation, checkpoints) and KIP's own.

    Attributes:
      lr: Adam learning rate.
      reg: relative ridge, lam = reg * tr(K_SS) / m (KIP: 1e-6).
      learn_labels: optimise Y_S jointly with X_S.
      label_solve_every: re-solve Y_S in closed form on the step's target batch every N steps (0: never).
      loss: ``"mse"`` (KIP) or ``"platt"`` (RFAD), see :mod:`._losses`.
      redraw_every: random-feature kernels only: redraw the networks every N steps (0: never).
      The other fields are :class:`~kdistill.methods.DriverSettings`.
    """

    steps: int = 4000
    lr: float = 0.02
    reg: float = 1e-6
    target_batch: int = 5000
    learn_labels: bool = False
    label_solve_every: int = 0
    val_every: int = 100
    val_size: int = 5000
    patience: int = 0
    checkpoint_every: int = 100
    init: str = "real"
    sampler: str = "uniform"
    time_limit: float = 0.0
    loss: str = "mse"
    redraw_every: int = 0
    pick_every: int = 50
    pick_pool: int = 10_000
    pick_floor: float = 0.1
    pick_unbiased: bool = False
    pick_global: bool = False

    def driver(self) -> DriverSettings:
        return driver_settings(dataclasses.asdict(self))

    def validate(self) -> None:
        self.driver().validate()
        if not (self.lr > 0 and np.isfinite(self.lr)):
            raise InvalidInputError(f"KIP learning rate must be a finite number > 0, got {self.lr}")
        if not (self.reg >= 0 and np.isfinite(self.reg)):
            raise InvalidInputError(f"KIP reg must be a finite number >= 0, got {self.reg}")
        for name in ("label_solve_every", "redraw_every"):
            if getattr(self, name) < 0:
                raise InvalidInputError(f"KIP {name} must be >= 0, got {getattr(self, name)}")
        get_loss(self.loss)


KIPResult = IterativeResult


def krr_predictions(kernel_fn: KernelFn, x_s, y_s, x_t, *, reg: float):
    """``K(x_t, x_s) (K_SS + lam I)^-1 y_s`` with ``lam = reg * tr(K_SS) / m`` (JAX, differentiable).

    Shapes: x_s (m, h, w, c), y_s (m, k), x_t (b, h, w, c) -> (b, k).
    """
    k_ss = kernel_fn(x_s, x_s)  # before K_TS: the order the recorded reference losses were computed in
    k_ts = kernel_fn(x_t, x_s)
    return k_ts @ ridge_solve(k_ss, y_s, reg)


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


def adam_update(objective, optimizer):
    """``update(params, opt_state, *args) -> (params, opt_state, loss, accuracy)``: one jitted optimiser step
    on ``objective(params, *args) -> (loss, accuracy)`` (KIP's and RFAD's steps)."""

    @jax.jit
    def update(params, opt_state, *args):
        (value, acc), grads = jax.value_and_grad(objective, has_aux=True)(params, *args)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value, acc

    return update


def init_state(x_s, y_s, *, optimizer, learn_labels: bool, loss_init) -> dict:
    """``{"params": {"x", ["y"], [loss parameters]}, "opt": optimiser state, "y_fixed": labels}`` (KIP, RFAD)."""
    params = {"x": jnp.asarray(x_s)}
    if learn_labels:
        params["y"] = jnp.asarray(y_s)
    for k, v in loss_init.items():
        params[k] = jnp.asarray(v, dtype=params["x"].dtype)
    return {"params": params, "opt": optimizer.init(params), "y_fixed": jnp.asarray(y_s)}


def _kernel_fn(kernel: Kernel | KernelFn) -> KernelFn:
    return kernel.fn if isinstance(kernel, Kernel) else kernel


def kip_method(kernel: Kernel | KernelFn, *, lr: float, reg: float, learn_labels: bool = False,
               label_solve_every: int = 0, loss: str = "mse", redraw_every: int = 0, seed: int = 0,
               name: str = "kip", executor=None, split: bool | None = None,
               support_on_workers: bool | None = None) -> IterativeMethod:
    """KIP as an iterative method for :func:`~kdistill.methods.run_iterative`.

    State: ``{"params": {"x", ["y"], [loss parameters]}, "opt": Adam state, "y_fixed": labels}``.
    ``split`` (default: when ``executor`` is distributed) evaluates each step's target rows through
    ``executor.map_take`` (:mod:`._split`: the workers hold the target pool; ``support_on_workers``, default
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
        split = bool(getattr(executor, "distributed", False))
    if split:
        if not isinstance(kernel, Kernel):
            raise InvalidInputError("a distributed KIP step needs a registry kernel (a spec string or Kernel), "
                                    "not a plain function: workers rebuild it from its spec")
        split_step = split_update(kip_head(reg), ("kip", kernel, None, None), kip_shard, (kernel, loss),
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
        params = {k: state["params"].get(k, v) for k, v in the_loss.init.items()}
        one = jnp.ones(1, pred.dtype)
        per = jax.vmap(lambda p, t: the_loss.fn(p[None], t[None], one, params))(pred, jnp.asarray(y, pred.dtype))
        return np.asarray(per)

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

    A convenience over :func:`kip_method` + :func:`~kdistill.methods.run_iterative` (see there for
    the validation split, ``init``, ``sampler(step, state) -> (indices, weights)``, checkpoints and resume).
    """
    settings.validate()
    method = kip_method(kernel, lr=settings.lr, reg=settings.reg, learn_labels=settings.learn_labels,
                        label_solve_every=settings.label_solve_every, loss=settings.loss,
                        redraw_every=settings.redraw_every, seed=seed, executor=executor)
    fp = dict(fingerprint or {}, kip={k: getattr(settings, k) for k in
                                      ("lr", "reg", "learn_labels", "label_solve_every", "loss", "redraw_every")})
    return run_iterative(method, x_train, labels, num_classes=num_classes, ipc=ipc, seed=seed,
                         settings=settings.driver(), kernel=kernel if isinstance(kernel, Kernel) else None,
                         init=init, sampler=sampler, checkpoint=checkpoint, resume=resume, fingerprint=fp,
                         on_checkpoint=on_checkpoint, progress=progress)


_DEFAULTS = KIPSettings()

KIP_OPTIONS = (
    *driver_options(_DEFAULTS.driver()),
    Option("lr", float, _DEFAULTS.lr, "Adam learning rate (pixels move about lr per step)", min=0,
           min_exclusive=True, max=10),
    Option("learn_labels", bool, False, "learn the labels too"),
    Option("label_solve_every", int, 0, "re-solve the labels in closed form on the step's batch every N steps",
           min=0),
    Option("loss", str, _DEFAULTS.loss, "loss of the KRR predictions", choices=tuple(LOSSES)),
    Option("redraw_every", int, 0, "random-feature kernels: redraw the networks every N steps (0: never)", min=0),
)


@register_method("kip", doc="Kernel Inducing Points (Nguyen et al. 2021): Adam on the support images (and labels) "
                 "to minimise the KRR loss on target batches; any kernel", options=KIP_OPTIONS, iterative=True)
def _run_kip(ctx: Context, opts: dict) -> MethodOutput:
    settings = KIPSettings(**{**opts, "reg": ctx.relative_reg(), "val_size": ctx.config.val_size})
    settings.validate()
    checkpoint = None if ctx.workdir is None else Path(ctx.workdir) / "checkpoint.npz"
    res = kip(ctx.kernel, ctx.x_train, ctx.labels, num_classes=ctx.num_classes, ipc=ctx.config.ipc,
              seed=ctx.config.seed, settings=settings, checkpoint=checkpoint, resume=ctx.resume,
              fingerprint={"kernel": ctx.kernel.spec, "precision": ctx.config.precision}, progress=ctx.progress,
              on_checkpoint=ctx.on_checkpoint, executor=ctx.executor)
    info = {"settings": dataclasses.asdict(settings), "init": settings.init, "sampler": settings.sampler,
            "init_seconds": res.init_seconds, "sampler_seconds": res.sampler_seconds,
            "steps_run": res.steps_run, "best_step": res.best_step,
            "best_val_accuracy": res.best_val_accuracy, "stopped_early": res.stopped_early,
            "stop_reason": res.stop_reason, "final_loss": res.history["loss"][-1] if res.history["loss"] else None}
    return MethodOutput(res.images, res.labels, info, reg=settings.reg, seconds={"kip": res.seconds},
                        history=res.history, init_images=res.init_images, seconds_before=res.seconds_before)

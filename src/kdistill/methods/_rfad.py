"""RFAD (Loo, Hasani, Amini & Rus, NeurIPS 2022, arXiv:2210.12067), arranged for a CPU.

KIP's objective with the kernel of random finite networks. Two kernels are involved:

- the *fixed* kernel, ``--kernel rf-convnet:models=M,width=W,depth=D`` (one draw, from the spec's
  ``seed``): validation (keeping the best set) and the final KRR evaluation use it, so a set is
  judged by networks it was never trained on. Give it more networks for a tighter estimate, or
  evaluate the set with the exact ``convnet-nngp`` it estimates (``benchmarks/rfad_checks.py``);
- the *training* draws: ``--draw-models`` networks (default 2) of the spec's architecture and width
  (``--draw-width`` to change it), drawn afresh from ``fold_in(seed, step // redraw_every)``.

The maths. With phi_m(x) in R^p the readout features (after the last pool) of network m,

    K(x, x') = w_std^2 / (models p) * sum_m <phi_m(x), phi_m(x')> + b_std^2,

the empirical NNGP of the readout layer (weights N(0, w_std^2 / p), bias N(0, b_std^2)). RFAD's code
writes K = 2 Phi Phi^T + 0.01 with Phi the features divided by sqrt(models p): that is w_std^2 = 2
(w_std = sqrt 2, ReLU's He scale) and b_std^2 = 0.01 (b_std = 0.1), the defaults here. The KRR
predictions on a target batch are K_TS (K_SS + lam I)^-1 Y_S with lam = reg * tr(K_SS) / m, a ridge
relative to the mean eigenvalue; RFAD's trace-relative jitter of 5e-3 is ``reg = 5e-3``, the default.
The loss is RFAD's Platt loss by default: softmax cross-entropy of exp(log_temp) * predictions, with
log_temp learned alongside the images (``--loss mse`` for KIP's). Labels start as centred one-hot
(1 - 1/k, -1/k; RFAD: 1 - 0.1, -0.1) and are learned with ``--learn-labels``.

What makes it run on a CPU: DC's ConvNet without the stem conv (``stem=0``, a quarter of the FLOPs of
KIP's on 28x28), 2 networks of width 64 per draw instead of RFAD's 8 of width 256, float32
(``--precision auto``), straight-line network code that differentiates 2-3x faster than a scan, and
the validation images' features under the fixed kernel computed once per run. With
``redraw_every`` R > 1 the networks stay fixed for R steps and the target batch is held too (the
driver's ``hold_batch``), so the target features are computed once per window and only the support
set goes through the networks each step: 2.7x more steps, but at equal wall-clock on MNIST ipc 10 the
fresh draws of R = 1 (RFAD's) won, so R = 1 is the default. The speed knobs' defaults (architecture,
networks and width per draw, target batch, R) come from the 3-minute ablation in
``benchmarks/results/rfad.md``; the fixed kernel's 16 networks follow RFAD's validation (16 models). Networks and batches are functions of (seed, step), so a
resumed run recomputes the window's features and ends where an uninterrupted run would.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import krr
from .._executor import get_executor
from .._machine import check_memory
from ..errors import InvalidInputError
from ..kernels import Kernel
from ..kernels._random_features import random_features
from ._driver import Batch, DriverSettings, IterativeMethod, driver_options, driver_settings, run_iterative
from ._kip import adam_update, init_state
from ._losses import LOSSES, get_loss
from ._registry import Option, register_method
from ._split import rfad_head, rfad_shard, ridge_solve, split_update
from ._types import Context, MethodOutput

__all__ = ["DEFAULT_KERNEL", "RFADSettings", "rfad_method", "rfad_features"]


@dataclasses.dataclass(frozen=True)
class RFADSettings(DriverSettings):
    """RFAD's settings: the driver's (:class:`~kdistill.methods.DriverSettings`, with RFAD's target batch)
    and its own (see the module docstring). ``hold_batch`` follows ``redraw_every``.

    Attributes:
      lr: Adam learning rate of the images (and labels, and the log temperature).
      reg: relative ridge lam = reg * tr(K_SS) / m (RFAD's jitter: 5e-3).
      learn_labels: learn Y_S too (RFAD's published runs do).
      loss: ``"platt"`` (RFAD) or ``"mse"`` (KIP).
      redraw_every: new networks, and a new held target batch, every N steps.
      draw_models: networks per training draw.
      draw_width: their width (None: the spec's ``width``).
    """

    target_batch: int = 1280
    lr: float = 0.01
    reg: float = 5e-3
    learn_labels: bool = False
    loss: str = "platt"
    redraw_every: int = 1
    draw_models: int = 2
    draw_width: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "hold_batch", self.redraw_every)

    def driver(self) -> DriverSettings:
        return driver_settings(dataclasses.asdict(self))

    def validate(self) -> None:
        if self.redraw_every < 1:
            raise InvalidInputError(f"RFAD redraw_every must be >= 1, got {self.redraw_every}")
        super().validate()
        if not (self.lr > 0 and np.isfinite(self.lr)):
            raise InvalidInputError(f"RFAD learning rate must be a finite number > 0, got {self.lr}")
        if not (self.reg > 0 and np.isfinite(self.reg)):
            raise InvalidInputError(f"RFAD reg must be a finite number > 0, got {self.reg}")
        get_loss(self.loss)


def rfad_features(kernel: Kernel, *, models: int | None = None, width: int | None = None):
    """``features(x, key) -> (n, models * p + 1)``: the kernel's random features with its networks drawn from
    ``key`` (a traced argument: a new key per window does not recompile); ``models`` and ``width``
    replace the spec's when given (cheaper training draws of the same architecture)."""
    if kernel.name not in ("rf-convnet", "rf-fc"):
        raise InvalidInputError(
            f"rfad needs a random-feature kernel, not {kernel.spec!r}: leave out --kernel for rfad's own "
            f"({DEFAULT_KERNEL}), or give an rf-convnet or rf-fc spec (its fixed draw validates and evaluates; "
            f"training draws --draw-models networks of its architecture)")
    params = dict(kernel.params)
    params.update({k: v for k, v in (("models", models), ("width", width)) if v is not None})
    return functools.partial(random_features, arch=kernel.name[len("rf-"):], **params)


def _features_block(x, kernel):
    return np.asarray(kernel.features(x), np.float32)


def _predictions(phi_s, y_s, phi_t, reg):
    alpha = ridge_solve(phi_s @ phi_s.T, y_s, reg)
    return (phi_t @ phi_s.T) @ alpha


def rfad_method(kernel: Kernel, *, lr: float, reg: float, learn_labels: bool = False, loss: str = "platt",
                redraw_every: int = 1, seed: int = 0, draw_models: int | None = None,
                draw_width: int | None = None, executor=None, split: bool | None = None,
                support_on_workers: bool | None = None) -> IterativeMethod:
    """RFAD as an iterative method (run with the driver's ``hold_batch = redraw_every``).

    ``split`` (default: when ``executor`` is distributed) computes each step's target features on the
    workers that hold the target pool (:mod:`._split`; they are recomputed every step, so R > 1 saves
    nothing there; ``support_on_workers``, default with two or more workers, computes the support set's
    features there too); else one fused jitted step with the window's target features cached here.

    State: ``{"params": {"x", ["y"], [loss parameters]}, "opt": Adam state, "y_fixed": labels}``; the
    window's target features, and the validation images' features under ``kernel``'s fixed draw, live
    in caches outside the state (recomputed after a resume).
    """
    features = rfad_features(kernel, models=draw_models, width=draw_width)
    the_loss = get_loss(loss)
    optimizer = optax.adam(lr)
    base_key = jax.random.fold_in(jax.random.key(seed), 0x72666164)  # "rfad": the stream of network draws
    window_features = jax.jit(lambda x, key: features(x, key=key))
    cache: dict[str, Any] = {"window": None, "indices": None, "phi_t": None}

    def objective(params, y_fixed, phi_t, y_t, w, key):
        phi_s = features(params["x"], key=key)
        y_s = params["y"] if learn_labels else y_fixed
        pred = _predictions(phi_s, y_s, phi_t, reg)
        extra = {k: params[k] for k in the_loss.init}
        value = LOSSES[loss].fn(pred, y_t, w, dict(the_loss.init, **extra))
        return value, jnp.mean(jnp.argmax(pred, axis=1) == jnp.argmax(y_t, axis=1))

    update = adam_update(objective, optimizer)
    init = functools.partial(init_state, optimizer=optimizer, learn_labels=learn_labels, loss_init=the_loss.init)
    if split is None:
        split = bool(getattr(executor, "distributed", False))
    if split:
        split_step = split_update(rfad_head(reg), ("rfad", kernel, draw_models, draw_width), rfad_shard,
                                  (kernel, draw_models, draw_width, loss), optimizer=optimizer,
                                  learn_labels=learn_labels, loss=loss, executor=get_executor(executor),
                                  support_on_workers=support_on_workers)

    def step(state, batch: Batch):
        window = batch.step // redraw_every
        key = jax.random.fold_in(base_key, window)
        if split:
            params, opt_state, value, acc = split_step(state["params"], state["opt"], state["y_fixed"], batch, key)
            metrics = {"loss": value, "batch_accuracy": acc}
            if "log_temp" in params:
                metrics["log_temp"] = params["log_temp"]
            return {"params": params, "opt": opt_state, "y_fixed": state["y_fixed"]}, metrics
        if cache["window"] != window or not np.array_equal(cache["indices"], batch.indices):
            cache.update(window=window, indices=np.array(batch.indices), phi_t=window_features(batch.x, key))
        params, opt_state, value, acc = update(state["params"], state["opt"], state["y_fixed"], cache["phi_t"],
                                               batch.y, batch.weights, key)
        metrics = {"loss": value, "batch_accuracy": acc}
        if "log_temp" in params:
            metrics["log_temp"] = params["log_temp"]
        return {"params": params, "opt": opt_state, "y_fixed": state["y_fixed"]}, metrics

    def support(state):
        return state["params"]["x"], state["params"]["y"] if learn_labels else state["y_fixed"]

    def validate(x_s, y_s, x_val, labels_val):
        # dual KRR with the fixed kernel, written in its features so the validation images go through
        # the networks once per run rather than once per validation (kept in float32: accuracy only)
        x_s = np.asarray(x_s)
        if cache.get("x_val") is not x_val or cache["val_shape"] != x_val.shape:
            p = int(kernel.features(x_s[:1]).shape[1])
            check_memory(8 * x_val.shape[0] * p, f"the features of {x_val.shape[0]} validation images under {kernel.spec}",
                         "use a smaller --val-size or fewer networks in --kernel")
            phi_val = get_executor(executor).map(_features_block, x_val, broadcast=(kernel,), block_size=len(x_val))
            cache.update(x_val=x_val, val_shape=x_val.shape, phi_val=np.asarray(phi_val, np.float32))
        phi_s = np.asarray(kernel.features(x_s), np.float64)
        alpha = krr.solve(phi_s @ phi_s.T, np.asarray(y_s), reg=reg).alpha
        return krr.accuracy(cache["phi_val"] @ (phi_s.T @ alpha).astype(np.float32), labels_val)

    return IterativeMethod("rfad", init, step, support, validate, hint=f"lower --lr or raise --reg (reg={reg})")


_DEFAULTS = RFADSettings()
DEFAULT_KERNEL = "rf-convnet:models=16,width=64,depth=3,stem=0"
"""The fixed kernel (validation, evaluation) when no --kernel is given: 16 networks (RFAD validates with 16) of
DC's/RFAD's ConvNet without its stem conv, width 64 (benchmarks/results/rfad.md has the choice's data)."""

RFAD_OPTIONS = (
    *driver_options(_DEFAULTS.driver()),
    Option("lr", float, _DEFAULTS.lr, "Adam learning rate", min=0, min_exclusive=True, max=10),
    Option("learn_labels", bool, False, "learn the labels too"),
    Option("loss", str, _DEFAULTS.loss, "loss of the KRR predictions (RFAD: platt)", choices=tuple(LOSSES)),
    Option("redraw_every", int, _DEFAULTS.redraw_every, "new random networks, and a new target batch whose features "
           "are then reused, every N steps (RFAD: 1)", min=1, max=10**6),
    Option("draw_models", int, _DEFAULTS.draw_models, "networks per training draw (RFAD: 8)", min=1, max=1024),
    Option("draw_width", int, _DEFAULTS.draw_width, "width of the training networks (default: the --kernel spec's "
           "width; RFAD: 256)", min=1, max=4096),
)


@register_method("rfad", doc="RFAD (Loo et al. 2022): KIP with the features of random ConvNets (--draw-models of "
                 "them, redrawn every --redraw-every steps) and Platt's loss; the --kernel spec's fixed draw "
                 "validates and evaluates", options=RFAD_OPTIONS, iterative=True,
                 precision="float32", kernel=DEFAULT_KERNEL)
def _run_rfad(ctx: Context, opts: dict) -> MethodOutput:
    rfad_features(ctx.kernel)  # a clear error before any work
    settings = RFADSettings(**{**opts, "reg": ctx.relative_reg(default=_DEFAULTS.reg),
                               "val_size": ctx.config.val_size})
    settings.validate()
    method = rfad_method(ctx.kernel, lr=settings.lr, reg=settings.reg, learn_labels=settings.learn_labels,
                         loss=settings.loss, redraw_every=settings.redraw_every, seed=ctx.config.seed,
                         draw_models=settings.draw_models, draw_width=settings.draw_width, executor=ctx.executor)
    checkpoint = None if ctx.workdir is None else Path(ctx.workdir) / "checkpoint.npz"
    fp = {"kernel": ctx.kernel.spec, "precision": ctx.config.precision,
          "rfad": {k: getattr(settings, k) for k in ("lr", "reg", "learn_labels", "loss", "redraw_every", "draw_models",
                                                     "draw_width")}}
    res = run_iterative(method, ctx.x_train, ctx.labels, num_classes=ctx.num_classes, ipc=ctx.config.ipc,
                        seed=ctx.config.seed, settings=settings.driver(), kernel=ctx.kernel, checkpoint=checkpoint,
                        resume=ctx.resume, fingerprint=fp, on_checkpoint=ctx.on_checkpoint, progress=ctx.progress)
    info = {"settings": dataclasses.asdict(settings), "init": settings.init, "steps_run": res.steps_run,
            "best_step": res.best_step, "best_val_accuracy": res.best_val_accuracy,
            "stopped_early": res.stopped_early, "stop_reason": res.stop_reason,
            "final_loss": res.history["loss"][-1] if res.history["loss"] else None}
    return MethodOutput(res.images, res.labels, info, reg=settings.reg, seconds={"rfad": res.seconds},
                        history=res.history, init_images=res.init_images, seconds_before=res.seconds_before)

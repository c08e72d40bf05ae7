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
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import krr
from .._machine import check_memory
from ..errors import InvalidInputError
from ..kernels import Kernel
from ..parallel import get_executor
from .iterative import (LOSSES, Batch, DriverSettings, IterativeMethod, adam_update, get_loss, init_state, option,
                        pad_rows, register_iterative, ridge_solve, rows_loss, split_update)
from ._types import Context

__all__ = ["DEFAULT_KERNEL", "RFADSettings", "rfad_method", "rfad_features"]


@dataclasses.dataclass(frozen=True)
class RFADSettings(DriverSettings):
    """RFAD's settings: the driver's (:class:`~kdistill.methods.iterative.DriverSettings`, with RFAD's target batch)
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
    lr: float = option(0.01, "Adam learning rate", min=0, min_exclusive=True, max=10)
    reg: float = option(5e-3, "relative ridge of the KRR predictions (RFAD's jitter)", min=0, min_exclusive=True,
                        cli=False)
    learn_labels: bool = option(False, "learn the labels too")
    loss: str = option("platt", "loss of the KRR predictions (RFAD: platt)", choices=lambda: tuple(LOSSES))
    redraw_every: int = option(1, "new random networks, and a new target batch whose features are then reused, "
                               "every N steps (RFAD: 1)", min=1, max=10**6)
    draw_models: int = option(2, "networks per training draw (RFAD: 8)", min=1, max=1024)
    draw_width: int | None = option(None, "width of the training networks (default: the --kernel spec's width; "
                                    "RFAD: 256)", min=1, max=4096)
    hold_batch: int = dataclasses.field(default=1, init=False)  # follows redraw_every (__post_init__)

    def __post_init__(self):
        object.__setattr__(self, "hold_batch", self.redraw_every)

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
    if kernel.draw_features is None:
        raise InvalidInputError(
            f"rfad needs a random-feature kernel, not {kernel.spec!r}: leave out --kernel for rfad's own "
            f"({DEFAULT_KERNEL}), or give an rf-convnet or rf-fc spec (its fixed draw validates and evaluates; "
            f"training draws --draw-models networks of its architecture)")
    return functools.partial(kernel.draw_features, models=models, width=width)


# ---- RFAD's distributed step (kdistill.methods.iterative.split_update): r = v, Z = Phi_S -------------------

def rfad_head(reg: float):
    """``(Z = Phi_S, Y_S, X_S) -> r = v = Phi_S^T (Phi_S Phi_S^T + lam I)^-1 Y_S``."""
    return lambda z, y_s, x_s: z.T @ ridge_solve(z @ z.T, y_s, reg)


def rfad_support_rows(idx, x_s, kernel: Kernel, models, width, key):
    """Rows ``idx`` of Phi_S: the support images' features under the networks drawn from ``key``."""
    return rfad_features(kernel, models=models, width=width)(x_s[idx], key=key)


@functools.lru_cache(maxsize=16)
def _rfad_shard_fn(kernel, models, width, loss: str):
    features = rfad_features(kernel, models=models, width=width)

    def objective(v, extra, phi_t, y_t, w, mask, b_total):
        return rows_loss(loss, phi_t @ v, y_t, w, mask, extra, b_total)

    grad = jax.value_and_grad(objective, argnums=(0, 1), has_aux=True)

    @jax.jit
    def run(v, extra, x_t, y_t, w, mask, b_total, key):
        return grad(v, extra, features(x_t, key=key), y_t, w, mask, b_total)

    return run


def rfad_shard(x_t, y_t, w, v, extra, kernel: Kernel, models, width, loss: str, b_total: int, key_data):
    """A worker's share of an RFAD step: ``(loss, correct, dL/dv, dL/dextra)`` for its rows' features under
    the networks drawn from ``key_data``."""
    x_t, y_t, w, mask = pad_rows(np.asarray(x_t), np.asarray(y_t), np.asarray(w))
    key = jax.random.wrap_key_data(jnp.asarray(key_data))
    (value, correct), (g_v, g_extra) = _rfad_shard_fn(kernel, models, width, loss)(v, extra, x_t, y_t, w, mask,
                                                                                   b_total, key)
    return jax.device_get((value, correct, g_v, g_extra))


def _features_block(x, kernel):
    return np.asarray(kernel.features(x), np.float32)


def _predictions(phi_s, y_s, phi_t, reg):
    alpha = ridge_solve(phi_s @ phi_s.T, y_s, reg)
    return (phi_t @ phi_s.T) @ alpha


SCORE_BLOCK = 1000
"""Candidates per pass through the networks when smart-pick rescores (one compiled shape, bounded memory)."""


def rfad_method(kernel: Kernel, *, lr: float, reg: float, learn_labels: bool = False, loss: str = "platt",
                redraw_every: int = 1, seed: int = 0, draw_models: int | None = None,
                draw_width: int | None = None, executor=None, split: bool | None = None,
                support_on_workers: bool | None = None) -> IterativeMethod:
    """RFAD as an iterative method (run with the driver's ``hold_batch = redraw_every``).

    ``split`` (default: when ``executor`` is distributed) computes each step's target features on the
    workers that hold the target pool (:func:`~kdistill.methods.iterative.split_update`; they are recomputed every step, so R > 1 saves
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
        split = get_executor(executor).distributed
    if split:
        split_step = split_update(rfad_head(reg), (rfad_support_rows, (kernel, draw_models, draw_width)), rfad_shard,
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

    score_key = jax.random.fold_in(base_key, 0x73636F72)  # "scor": smart-pick's draw, the same at every rescoring

    def scores(state, x, y):
        """Each example's RFAD loss under the current support set (what smart-pick draws by), in the features of
        one draw of the training networks that never changes (a resumed run rescores alike). The support set and
        the candidates go through the networks together, in blocks of ``SCORE_BLOCK`` rows, the last one padded:
        one compiled shape."""
        x_s, y_s = support(state)
        both = np.concatenate([np.asarray(x_s), np.asarray(x, np.asarray(x_s).dtype)])
        blocks = []
        for start in range(0, len(both), SCORE_BLOCK):
            block = both[start:start + SCORE_BLOCK]
            padded = np.zeros((SCORE_BLOCK, *both.shape[1:]), both.dtype)
            padded[:len(block)] = block
            blocks.append(np.asarray(window_features(jnp.asarray(padded), score_key))[:len(block)])
        phi = jnp.asarray(np.concatenate(blocks))
        m = len(x_s)
        pred = _predictions(phi[:m], jnp.asarray(y_s, phi.dtype), phi[m:], reg)
        return np.asarray(the_loss.per_example(pred, y, state["params"]))

    return IterativeMethod("rfad", init, step, support, validate, hint=f"lower --lr or raise --reg (reg={reg})",
                           scores=scores)


DEFAULT_KERNEL = "rf-convnet:models=16,width=64,depth=3,stem=0"
"""The fixed kernel (validation, evaluation) when no --kernel is given: 16 networks (RFAD validates with 16) of
DC's/RFAD's ConvNet without its stem conv, width 64 (benchmarks/results/rfad.md has the choice's data)."""

def _build(s: RFADSettings, ctx: Context) -> IterativeMethod:
    return rfad_method(ctx.kernel, lr=s.lr, reg=s.reg, learn_labels=s.learn_labels, loss=s.loss,
                       redraw_every=s.redraw_every, seed=ctx.config.seed, draw_models=s.draw_models,
                       draw_width=s.draw_width, executor=ctx.executor)


register_iterative("rfad", RFADSettings, _build, doc="RFAD (Loo et al. 2022): KIP with the features of random ConvNets "
                   "(--draw-models of them, redrawn every --redraw-every steps) and Platt's loss; the --kernel spec's "
                   "fixed draw validates and evaluates", precision="float32", kernel=DEFAULT_KERNEL,
                   smoke={"steps": 6, "target_batch": 60, "val_every": 2, "checkpoint_every": 1, "redraw_every": 3,
                          "learn_labels": True},
                   smoke_kernel="rf-convnet:models=1,width=4,depth=2", check=lambda ctx: rfad_features(ctx.kernel))

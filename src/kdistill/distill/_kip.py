"""Kernel Inducing Points (KIP; Nguyen, Chen & Lee, arXiv:2011.00050 and arXiv:2107.13034).

Learn support images X_S (and optionally labels Y_S) by gradient descent on the
KRR loss of a target batch (X_T, Y_T):

    L(X_S, Y_S) = 1/2 mean_i || y_i - K(x_i, X_S) (K_SS + lam I)^-1 Y_S ||^2,
    lam = reg * tr(K_SS) / m,

with Adam (optax). Target batches and the initial support set are pluggable
(:mod:`._sampling`). The best support set by held-out validation accuracy is kept;
checkpoints are atomic and a resumed run reproduces an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import krr
from .._progress import step_bar
from .._typing import KernelFn
from ..data import one_hot
from ..errors import InvalidInputError
from ._checkpoint import load_checkpoint, save_checkpoint
from ._label_solve import label_solve
from ._sampling import INITS, Init, Sampler, class_balanced_sampler

__all__ = ["KIPSettings", "KIPResult", "kip_loss", "kip"]


@dataclasses.dataclass(frozen=True)
class KIPSettings:
    """Settings of a KIP run (saved with its checkpoints and result).

    Attributes:
      steps: optimisation steps.
      lr: Adam learning rate.
      reg: relative ridge, lam = reg * tr(K_SS) / m (KIP: 1e-6).
      target_batch: target images per step, class-balanced (capped at the pool size).
      learn_labels: optimise Y_S jointly with X_S.
      label_solve_every: re-solve Y_S in closed form on the step's target batch every N steps (0: never).
      val_every: validate (KRR accuracy on the held-out split) every N steps (0: never; keep the last).
      val_size: held-out training images for validation (0: none).
      patience: stop after this many validations without improvement (0: never stop early).
      checkpoint_every: write a checkpoint every N steps (0: never).
      init: support initialisation, a name in ``INITS`` (``"real"``, ``"noise"``).
      time_limit: stop (keeping the best set so far) after this many seconds of this process (0: none).
    """

    steps: int = 1000
    lr: float = 0.01
    reg: float = 1e-6
    target_batch: int = 5000
    learn_labels: bool = False
    label_solve_every: int = 0
    val_every: int = 100
    val_size: int = 5000
    patience: int = 0
    checkpoint_every: int = 100
    init: str = "real"
    time_limit: float = 0.0

    def validate(self) -> None:
        for name in ("steps", "target_batch"):
            if getattr(self, name) < 1:
                raise InvalidInputError(f"KIP {name} must be >= 1, got {getattr(self, name)}")
        for name in ("label_solve_every", "val_every", "val_size", "patience", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise InvalidInputError(f"KIP {name} must be >= 0, got {getattr(self, name)}")
        if self.time_limit < 0:
            raise InvalidInputError(f"KIP time_limit must be >= 0 seconds, got {self.time_limit}")
        if not (self.lr > 0 and np.isfinite(self.lr)):
            raise InvalidInputError(f"KIP learning rate must be > 0, got {self.lr}")
        if not (self.reg >= 0 and np.isfinite(self.reg)):
            raise InvalidInputError(f"KIP reg must be >= 0, got {self.reg}")
        if self.init not in INITS:
            raise InvalidInputError(f"unknown init {self.init!r}; valid inits: {', '.join(INITS)}")


@dataclasses.dataclass(frozen=True)
class KIPResult:
    """images: (m, h, w, c); labels: (m, k); history: per-step loss/accuracy and validation accuracy."""

    images: np.ndarray
    labels: np.ndarray
    history: dict[str, list]
    best_step: int
    best_val_accuracy: float | None
    steps_run: int
    stopped_early: bool
    seconds: float


def kip_loss(kernel_fn: KernelFn, x_s, y_s, x_t, y_t, *, reg: float):
    """KIP's loss and the target batch accuracy (JAX, differentiable in ``x_s`` and ``y_s``).

    Shapes: x_s (m, h, w, c), y_s (m, k), x_t (b, h, w, c), y_t (b, k). Returns ``(loss, accuracy)``.
    """
    k_ss = kernel_fn(x_s, x_s)
    k_ts = kernel_fn(x_t, x_s)
    m = k_ss.shape[0]
    lam = reg * jnp.trace(k_ss) / m
    factor = jax.scipy.linalg.cho_factor(k_ss + lam * jnp.eye(m, dtype=k_ss.dtype), lower=True)
    pred = k_ts @ jax.scipy.linalg.cho_solve(factor, y_s)
    loss = 0.5 * jnp.mean(jnp.sum((y_t - pred) ** 2, axis=1))
    acc = jnp.mean(jnp.argmax(pred, axis=1) == jnp.argmax(y_t, axis=1))
    return loss, acc


def _make_step(kernel_fn: KernelFn, optimizer, reg: float, learn_labels: bool):
    def objective(params, y_fixed, x_t, y_t):
        y_s = params["y"] if learn_labels else y_fixed
        return kip_loss(kernel_fn, params["x"], y_s, x_t, y_t, reg=reg)

    @jax.jit
    def step(params, opt_state, y_fixed, x_t, y_t):
        (loss, acc), grads = jax.value_and_grad(objective, has_aux=True)(params, y_fixed, x_t, y_t)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, acc

    return step


def _val_accuracy(kernel_fn, x_s, y_s, x_val, labels_val, reg) -> float:
    model = krr.fit(kernel_fn, np.asarray(x_s), np.asarray(y_s), reg=reg)
    return krr.accuracy(krr.predict(kernel_fn, model, x_val), labels_val)


def kip(
    kernel_fn: KernelFn,
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
) -> KIPResult:
    """Run KIP on ``x_train: (n, h, w, c)``, ``labels: (n,)`` and return the best support set.

    ``val_size`` training images (drawn with ``seed``) are held out for validation; the
    rest is the target pool and the source of the initial support set. ``init`` and
    ``sampler`` (``sampler(step) -> pool indices``) replace the defaults. With
    ``checkpoint`` set, state is saved every ``checkpoint_every`` steps; ``resume`` continues
    from that file (refusing a corrupt one or one from other settings).
    """
    settings.validate()
    t0 = time.perf_counter()
    n = x_train.shape[0]
    rng = np.random.default_rng([seed, 7])
    val_size = min(settings.val_size, n // 5)
    perm = rng.permutation(n)
    val_idx, pool_idx = np.sort(perm[:val_size]), np.sort(perm[val_size:])
    x_pool, lab_pool = x_train[pool_idx], labels[pool_idx]
    y_pool = one_hot(lab_pool, num_classes, dtype=x_train.dtype)
    x_val, lab_val = x_train[val_idx], labels[val_idx]
    sampler = sampler or class_balanced_sampler(lab_pool, settings.target_batch, num_classes=num_classes, seed=seed)

    x_s, y_s = (init or INITS[settings.init])(x_pool, lab_pool, num_classes=num_classes, ipc=ipc, seed=seed)
    dtype = x_train.dtype
    x_s, y_s = np.asarray(x_s, dtype=dtype), np.asarray(y_s, dtype=dtype)
    optimizer = optax.adam(settings.lr)
    params = {"x": jnp.asarray(x_s)}
    if settings.learn_labels:
        params["y"] = jnp.asarray(y_s)
    opt_state = optimizer.init(params)
    step_fn = _make_step(kernel_fn, optimizer, settings.reg, settings.learn_labels)
    history: dict[str, list] = {"step": [], "loss": [], "batch_accuracy": [], "val_step": [], "val_accuracy": []}
    best = {"x": x_s, "y": y_s, "acc": -1.0, "step": 0}
    start, bad_vals = 0, 0
    fp = dict(fingerprint or {}, settings=dataclasses.asdict(settings), ipc=ipc, seed=seed, n=int(n))

    if resume:
        if checkpoint is None or not Path(checkpoint).exists():
            raise InvalidInputError(f"nothing to resume: no checkpoint at {checkpoint}")
        arrays, meta = load_checkpoint(checkpoint, fingerprint=fp)
        leaves, treedef = jax.tree_util.tree_flatten((params, opt_state))
        try:
            restored = [arrays[f"state_{i}"].astype(np.asarray(leaf).dtype) for i, leaf in enumerate(leaves)]
            best = {"x": arrays["best_x"], "y": arrays["best_y"], "acc": meta["best_acc"], "step": meta["best_step"]}
            y_s = arrays["y_fixed"]
        except KeyError as e:
            raise InvalidInputError(f"checkpoint {checkpoint} lacks {e}; it is not a KIP checkpoint") from None
        params, opt_state = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(a) for a in restored])
        start, bad_vals, history = meta["step"], meta["bad_vals"], meta["history"]

    def save(step_next: int) -> None:
        leaves = jax.tree_util.tree_leaves((params, opt_state))
        arrays = {f"state_{i}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
        arrays.update(best_x=np.asarray(best["x"]), best_y=np.asarray(best["y"]), y_fixed=np.asarray(y_s))
        save_checkpoint(checkpoint, arrays, {"step": step_next, "bad_vals": bad_vals, "history": history,
                                             "best_acc": best["acc"], "best_step": best["step"], "fingerprint": fp})
        if on_checkpoint is not None:
            on_checkpoint(step_next)

    stopped = False
    step = start
    with step_bar(settings.steps, description="KIP", completed=start, enabled=progress) as bar:
        for step in range(start, settings.steps):
            idx = sampler(step)
            x_t, y_t = jnp.asarray(x_pool[idx]), jnp.asarray(y_pool[idx])
            if settings.label_solve_every and step % settings.label_solve_every == 0:
                solved = label_solve(kernel_fn, np.asarray(params["x"]), x_pool[idx], y_pool[idx], reg=settings.reg)
                y_s = solved.astype(dtype)
                if settings.learn_labels:
                    params = dict(params, y=jnp.asarray(y_s))
            params, opt_state, loss, acc = step_fn(params, opt_state, jnp.asarray(y_s), x_t, y_t)
            loss = float(loss)
            if not np.isfinite(loss):
                raise InvalidInputError(
                    f"KIP loss became {loss} at step {step}; lower --lr or raise the ridge (reg={settings.reg})"
                )
            history["step"].append(step)
            history["loss"].append(loss)
            history["batch_accuracy"].append(float(acc))
            current_y = params["y"] if settings.learn_labels else y_s
            fields = {"loss": loss}
            last = step == settings.steps - 1
            if val_size and settings.val_every and ((step + 1) % settings.val_every == 0 or last):
                va = _val_accuracy(kernel_fn, params["x"], current_y, x_val, lab_val, settings.reg)
                history["val_step"].append(step + 1)
                history["val_accuracy"].append(va)
                if va > best["acc"]:
                    best = {"x": np.asarray(params["x"]), "y": np.asarray(current_y), "acc": va, "step": step + 1}
                    bad_vals = 0
                else:
                    bad_vals += 1
                fields["val"] = va
                stopped = bool(settings.patience) and bad_vals >= settings.patience
            bar.update(**fields)
            if checkpoint is not None and settings.checkpoint_every and (
                    (step + 1) % settings.checkpoint_every == 0 or last or stopped):
                save(step + 1)
            if settings.time_limit and time.perf_counter() - t0 > settings.time_limit and not last:
                stopped = True
                if checkpoint is not None and settings.checkpoint_every:
                    save(step + 1)
            if stopped:
                break
    if best["acc"] < 0:  # no validation: keep the final support set
        best = {"x": np.asarray(params["x"]),
                "y": np.asarray(params["y"] if settings.learn_labels else y_s), "acc": None, "step": step + 1}
    return KIPResult(
        images=np.asarray(best["x"]), labels=np.asarray(best["y"]), history=history, best_step=int(best["step"]),
        best_val_accuracy=best["acc"], steps_run=len(history["step"]), stopped_early=stopped,
        seconds=time.perf_counter() - t0,
    )

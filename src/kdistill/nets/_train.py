"""Training a network of :mod:`kdistill.nets`: optax optimisers, the epoch plan, one jitted step, epochs.

Optimisers (:data:`OPTIMIZERS`, built by :func:`optimizer`) are optax transformations whose
hyper-parameters (``learning_rate``, ``momentum``, ``weight_decay``) live in the optimiser state
(``optax.inject_hyperparams``), so one compiled step serves every learning rate, schedule and setting:

- ``"sgd"``: ``optax.chain(add_decayed_weights(weight_decay), sgd(learning_rate, momentum))``, which is
  PyTorch's ``SGD`` (no dampening, weight decay added to the gradient):
  ``g = grad + wd * p;  v = momentum * v + g;  p = p - lr * v``;
- ``"adam"``: ``optax.chain(add_decayed_weights(weight_decay), adam(learning_rate, b1=momentum))``
  (weight decay added to the gradient, as PyTorch's ``Adam``).

An epoch (:func:`epoch_plan`) visits every image once in a random order, in batches of ``batch``; the last,
partial batch is padded and masked, so it averages over its real images only (PyTorch's
``drop_last=False``). Each step augments its batch (:func:`~kdistill.nets.augment_batch`, a fresh draw per
image) with its own key. Steps are driven from Python, one jitted call each: XLA's CPU backend runs
convolutions inside a ``lax.scan``/``while`` loop some 30x slower than at top level.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._progress import track
from ..errors import InvalidInputError
from ._augment import augment_batch

__all__ = ["LOSSES", "OPTIMIZERS", "epoch_plan", "init_optimizer", "init_params", "loss_value", "max_learning_rate",
           "momentum_step", "ntk_top_eigenvalue", "optimizer", "outputs", "predict", "run_epochs", "seed_key",
           "train_step"]

LOSSES = ("xent", "mse", "mse-mean")
OPTIMIZERS = ("sgd", "adam")
_ACTIVATION_BUDGET = 2**26  # floats per activation when predicting in chunks (256 MiB)


def _sgd(learning_rate, momentum, weight_decay):
    return optax.chain(optax.add_decayed_weights(weight_decay), optax.sgd(learning_rate, momentum=momentum))


def _adam(learning_rate, momentum, weight_decay):
    return optax.chain(optax.add_decayed_weights(weight_decay), optax.adam(learning_rate, b1=momentum))


@functools.cache
def optimizer(name: str) -> optax.GradientTransformation:
    """The optax transformation ``name`` (one of :data:`OPTIMIZERS`) with injected hyper-parameters
    (module docstring); one object per name, so it can key a compiled step."""
    factories = {"sgd": _sgd, "adam": _adam}
    if name not in factories:
        raise InvalidInputError(f"unknown optimizer {name!r}; valid: {', '.join(OPTIMIZERS)}")
    return optax.inject_hyperparams(factories[name])(learning_rate=0.0, momentum=0.0, weight_decay=0.0)


def init_optimizer(name: str, params, *, learning_rate: float, momentum: float = 0.9,
                   weight_decay: float = 0.0):
    """The state of :func:`optimizer` ``name`` for ``params``, with its hyper-parameters set."""
    state = optimizer(name).init(params)
    hyper = {"learning_rate": learning_rate, "momentum": momentum, "weight_decay": weight_decay}
    return _with_hyper(state, **hyper)


def _with_hyper(state, **values):
    hyper = dict(state.hyperparams)
    hyper.update({k: jnp.asarray(v, jnp.float32) for k, v in values.items()})
    return state._replace(hyperparams=hyper)


def seed_key(seed: int) -> jax.Array:
    """``jax.random.key(seed)`` with XLA's RngBitGenerator: deterministic on a given backend, and it compiles in
    a fraction of a second where threefry takes seconds per array shape on a CPU."""
    return jax.random.key(int(seed), impl="rbg")


@functools.partial(jax.jit, static_argnames=("input_shape", "num_classes", "net"))
def init_params(key, input_shape, num_classes, *, net):
    """``net.init`` under ``jax.jit`` (one compilation per network and shape)."""
    return net.init(key, input_shape, num_classes)


def outputs(params, net, x, anchor=None, scale=1.0, anchor_logits=None) -> jax.Array:
    """``scale * (f(x; params) - f(x; anchor))``: the network's logits, centred on those of the ``anchor``
    parameters (its initial ones: RFAD's ``centering``) when one is given; gradients reach ``params`` only.
    ``anchor_logits``: ``f(x; anchor)`` already computed (then ``anchor`` is not run)."""
    out = net.apply(params, x)
    if anchor_logits is not None:
        out = out - jax.lax.stop_gradient(anchor_logits)
    elif anchor is not None:
        out = out - jax.lax.stop_gradient(net.apply(anchor, x))
    return out * scale


def loss_value(params, net, loss: str, x, t, mask, anchor=None, scale=1.0, anchor_logits=None) -> jax.Array:
    """The mean over the rows with ``mask`` 1 of ``0.5 ||f(x) - t||^2`` (``"mse"``), ``mean_c (f(x)_c - t_c)^2``
    (``"mse-mean"``: PyTorch's ``MSELoss``, RFAD's) or ``-sum_c t_c log softmax(f(x))_c`` (``"xent"``, ``t``
    probability rows), where ``f`` is :func:`outputs` (``anchor``, ``scale``, ``anchor_logits``)."""
    out = outputs(params, net, x, anchor, scale, anchor_logits)
    if loss == "mse":
        per = 0.5 * jnp.sum(jnp.square(out - t), axis=-1)
    elif loss == "mse-mean":
        per = jnp.mean(jnp.square(out - t), axis=-1)
    else:
        per = -jnp.sum(t * jax.nn.log_softmax(out, axis=-1), axis=-1)
    return jnp.sum(per * mask) / jnp.maximum(jnp.sum(mask), 1.0)


@functools.partial(jax.jit, static_argnames=("m", "batch"))
def epoch_plan(key, epoch, *, m: int, batch: int):
    """Batches of epoch ``epoch`` over ``m`` images: indices ``(steps, batch)``, a mask of real (not padding)
    entries and a key per step, all from ``fold_in(key, epoch)``."""
    steps = -(-m // batch)
    pad = steps * batch - m
    k_perm, k_aug = jax.random.split(jax.random.fold_in(key, epoch))
    order = jnp.concatenate([jax.random.permutation(k_perm, m), jnp.zeros((pad,), jnp.int32)])
    mask = jnp.concatenate([jnp.ones((m,), jnp.float32), jnp.zeros((pad,), jnp.float32)])
    return order.reshape(steps, batch), mask.reshape(steps, batch), jax.random.split(k_aug, steps)


@functools.partial(jax.jit, static_argnames=("net", "loss", "augment", "flip", "opt"), donate_argnums=(0, 1))
def train_step(params, opt_state, x, t, idx, mask, key, lr, anchor=None, scale=1.0, anchor_decay=0.0,
               anchor_logits=None, *, net, loss: str, augment: str = "none", flip: bool = True, opt: str = "sgd"):
    """One optimiser step on the batch ``x[idx]`` (augmented with ``key``) against targets ``t[idx]`` at
    learning rate ``lr`` (a traced scalar). With an ``anchor`` (parameters like ``params``) the outputs are
    centred on it (:func:`outputs`) and ``anchor_decay * (params - anchor)`` joins the gradient: weight decay
    towards the anchor rather than towards zero. ``anchor_logits``: ``(m, k)``, the anchor's logits of every
    image of ``x``, computed once (only without augmentation, where the batch is ``x[idx]`` as stored): the step
    then centres on ``anchor_logits[idx]`` and skips the anchor's forward pass. Returns ``(params, opt_state,
    loss)``."""
    xb = augment_batch(augment, key, x[idx], flip=flip)
    base = None if anchor_logits is None else anchor_logits[idx]
    value, grads = jax.value_and_grad(loss_value)(params, net, loss, xb, t[idx], mask, anchor, scale, base)
    if anchor is not None:
        grads = jax.tree.map(lambda g, p, a: g + anchor_decay * (p - a), grads, params, anchor)
    opt_state = _with_hyper(opt_state, learning_rate=lr)
    updates, opt_state = optimizer(opt).update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, value


@functools.partial(jax.jit, donate_argnums=(0, 1))
def momentum_step(params, trace, grads, lr, momentum):
    """One ``"sgd"`` step without weight decay whose momentum buffer ``trace`` (a pytree like ``params``) is
    kept by the caller: ``trace = momentum * trace + grads;  params -= lr * trace``. Returns
    ``(params, trace)``."""
    # what "sgd"'s chain does without weight decay: optax.trace, then a step of -lr along it
    direction, state = optax.trace(decay=momentum).update(grads, optax.TraceState(trace=trace))
    return optax.apply_updates(params, jax.tree.map(lambda d: -lr * d, direction)), state.trace


def run_epochs(params, opt_state, x, t, *, key, epochs: int, batch: int, net, loss: str,
               lr_at: Callable[[int, int], float] | None = None, augment: str = "none", flip: bool = True,
               opt: str = "sgd", progress: bool = False, description: str = "", first_epoch: int = 0,
               anchor=None, scale: float = 1.0, anchor_decay: float = 0.0,
               anchor_logits=None) -> tuple[Any, Any, np.ndarray]:
    """Train ``params`` of ``net`` for ``epochs`` epochs on ``x: (m, h, w, c)`` with targets ``t: (m, k)``.

    ``batch``: images per step (``min(batch, m)`` is used). ``lr_at(step, steps_per_epoch)``: the learning
    rate of each step (0-based over the whole run); None keeps the state's. Epoch ``e``'s order and
    augmentation come from ``fold_in(key, e)``; the epochs run are ``first_epoch .. first_epoch + epochs - 1``
    (a run continued in pieces draws what one uninterrupted run would). ``anchor``, ``scale``,
    ``anchor_decay``: see :func:`train_step`. Without augmentation the anchor's logits of ``x`` are computed
    once per call, or taken from ``anchor_logits`` (a caller that trains in pieces computes them once for all).
    Returns ``(params, opt_state, mean loss per epoch)``.
    """
    m = int(x.shape[0])
    b = min(int(batch), m)
    steps = -(-m // b)
    losses = np.zeros(epochs, np.float32)
    fixed = None if lr_at is not None else float(opt_state.hyperparams["learning_rate"])
    extra = {} if anchor is None else {"anchor": anchor, "anchor_decay": jnp.asarray(anchor_decay, jnp.float32)}
    if anchor is not None and augment == "none":  # the anchor's logits of the stored images, once (RFAD: 17% a step)
        extra["anchor_logits"] = (jnp.asarray(predict(net, anchor, x), x.dtype) if anchor_logits is None
                                  else anchor_logits)
    if scale != 1.0:
        extra["scale"] = jnp.asarray(scale, jnp.float32)
    for n in track(range(epochs), total=epochs, description=description or "epochs", enabled=progress):
        epoch = first_epoch + n
        idx, mask, keys = epoch_plan(key, epoch, m=m, batch=b)
        values = []
        for i in range(steps):
            lr = fixed if lr_at is None else lr_at(epoch * steps + i, steps)
            params, opt_state, v = train_step(params, opt_state, x, t, idx[i], mask[i], keys[i],
                                              jnp.asarray(lr, jnp.float32), **extra, net=net, loss=loss,
                                              augment=augment, flip=flip, opt=opt)
            values.append(v)
        losses[n] = float(np.mean(jax.device_get(values)))
    return params, opt_state, losses


def _reduced(net, params, x) -> jax.Array:
    """``sum_c f_c(x) / sqrt(k)``: one output per image whose NTK stands for the network's (KIP's notebook)."""
    out = net.apply(params, x)
    return jnp.sum(out, axis=-1) / jnp.sqrt(jnp.asarray(out.shape[-1], out.dtype))


@functools.partial(jax.jit, static_argnames=("net",))
def _example_grads(params, x, *, net):
    """``(n, P)``: the gradient of :func:`_reduced` for each image of ``x`` with respect to the parameters, flat
    (reverse mode only: the fast convolutions define no forward mode)."""
    grads = jax.vmap(jax.grad(lambda p, xi: _reduced(net, p, xi[None])[0]), in_axes=(None, 0))(params, x)
    return jnp.concatenate([g.reshape(x.shape[0], -1) for g in jax.tree.leaves(grads)], axis=1)


def ntk_top_eigenvalue(net, params, x, *, chunk: int = 10) -> float:
    """The largest eigenvalue of the empirical NTK ``J J^T`` (``n x n``) of ``sum_c f_c / sqrt(k)`` on
    ``x: (n, h, w, c)`` at ``params`` (KIP's stand-in for the network's NTK). ``J`` is built ``chunk`` images at
    a time and each block of ``J J^T`` from two chunks, so memory holds ``2 * chunk`` gradients at most
    (at width 1024, some 2 GB for KIP's ConvNet)."""
    x = jnp.asarray(x, jnp.float32)
    n = int(x.shape[0])
    starts = list(range(0, n, chunk))
    kernel = np.zeros((n, n))
    for i, a in enumerate(starts):
        g_a = np.asarray(_example_grads(params, x[a:a + chunk], net=net), np.float64)
        for b in starts[i:]:
            g_b = g_a if b == a else np.asarray(_example_grads(params, x[b:b + chunk], net=net), np.float64)
            block = g_a @ g_b.T
            kernel[a:a + len(g_a), b:b + len(g_b)] = block
            kernel[b:b + len(g_b), a:a + len(g_a)] = block.T
    if not np.all(np.isfinite(kernel)):
        raise InvalidInputError("the network's NTK on the sample images is not finite; the learning rate cannot be "
                                "estimated from it (give one)")
    top = float(np.linalg.eigvalsh(kernel)[-1])
    if not top > 0:
        raise InvalidInputError("the network's NTK on the sample images is zero; the learning rate cannot be "
                                "estimated from it (give one)")
    return top


def max_learning_rate(net, params, x, loss: str, num_classes: int) -> float:
    """The largest learning rate at which gradient descent on ``loss`` stays stable for a network whose
    Gauss-Newton curvature is its NTK on ``x`` (neural-tangents' ``predict.max_learning_rate`` as KIP's
    notebook calls it: ``2 / lambda_max`` of the loss's Hessian, no momentum term). For ``"mse"``
    (``0.5 * sum_c``, mean over images) that is ``2 n / lambda``, for ``"mse-mean"`` (mean over images and
    classes) ``n k / lambda``, with ``lambda`` from :func:`ntk_top_eigenvalue` on the ``n`` images."""
    if loss not in ("mse", "mse-mean"):
        raise InvalidInputError(f"a learning rate from the NTK needs an MSE loss, got {loss!r}; give the lr")
    n = int(np.asarray(x).shape[0])
    lam = ntk_top_eigenvalue(net, params, x)
    return (2.0 * n if loss == "mse" else float(n * num_classes)) / lam


@functools.partial(jax.jit, static_argnames=("net",))
def _logits(params, x, *, net):
    return net.apply(params, x)


def predict(net, params, x, anchor=None) -> np.ndarray:
    """Logits ``(n, k)`` of ``x: (n, h, w, c)``, in fixed-size chunks (one compilation, bounded memory); with
    an ``anchor``, centred on its logits (:func:`outputs`)."""
    if anchor is not None:
        return predict(net, params, x) - predict(net, anchor, x)
    x = np.asarray(x, dtype=np.float32)
    n = x.shape[0]
    per_image = int(np.prod(x.shape[1:-1])) * getattr(net, "width", 1)
    chunk = int(max(16, min(n, _ACTIVATION_BUDGET // max(per_image, 1))))
    out = []
    for start in range(0, n, chunk):
        block = x[start:start + chunk]
        short = chunk - block.shape[0]
        if short:
            block = np.concatenate([block, np.zeros((short,) + x.shape[1:], np.float32)])
        out.append(np.asarray(_logits(params, jnp.asarray(block), net=net))[: chunk - short])
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

"""A pool of online models: finite networks trained on the distilled set while it is being learned.

FRePo (Zhou, Nezhadarya & Ba, NeurIPS 2022) and RCIG (Loo et al., ICML 2023) judge the support set by the
features of networks that are themselves trained on it, a few steps at a time, and re-initialised once they
are "old", so that the set must serve networks at every stage of training. A pool holds ``size`` such
networks of one architecture:

    pool = ModelPool(net, size=10, max_age=100, lr=3e-4)
    state = pool.init(key, input_shape, num_classes)  # every network fresh, ages staggered
    params_i = pool.take(state, i)                   # network i's parameters
    state = pool.advance(state, i, x_s, y_s, key)    # one step on the set, or a fresh start when old

``state`` is ``{"params", "opt", "age"}`` with the networks stacked along a leading axis (a pytree of
arrays: checkpoints hold it as it is, and one compiled ``advance`` serves every index). Ages start staggered
(``i * max_age // size``, as FRePo's pool does) so that the networks are not all reset at the same step. A
network whose age is past ``max_age`` is re-initialised from ``key`` at its next ``advance`` instead of
trained (FRePo's rule: a fresh network takes ``max_age + 1`` steps); otherwise it takes one optimiser step
(:data:`~kdistill.nets.OPTIMIZERS`) on the whole set under ``loss`` (MSE on the set's labels, FRePo's inner
loss), and its age grows by one.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax

from ..errors import InvalidInputError
from ._train import LOSSES, OPTIMIZERS, _with_hyper, loss_value, optimizer

__all__ = ["ModelPool"]


@dataclasses.dataclass(frozen=True)
class ModelPool:
    """``size`` networks ``net`` trained by ``opt`` at ``lr`` under ``loss``, reset after ``max_age`` steps."""

    net: Any
    size: int = 10
    max_age: int = 100
    opt: str = "adam"
    lr: float = 3e-4
    momentum: float = 0.9
    loss: str = "mse"

    def __post_init__(self):
        if not (isinstance(self.size, int) and self.size >= 1 and isinstance(self.max_age, int) and self.max_age >= 1):
            raise InvalidInputError(f"a model pool needs size >= 1 and max_age >= 1, got {self.size}, {self.max_age}")
        if self.opt not in OPTIMIZERS or self.loss not in LOSSES:
            raise InvalidInputError(f"unknown optimizer {self.opt!r} or loss {self.loss!r}; valid: "
                                    f"{', '.join(OPTIMIZERS)} and {', '.join(LOSSES)}")

    def _fresh(self, key, input_shape, num_classes):
        params = self.net.init(key, input_shape, num_classes)
        state = _with_hyper(optimizer(self.opt).init(params), learning_rate=self.lr, momentum=self.momentum,
                            weight_decay=0.0)
        return params, state

    def init(self, key, input_shape, num_classes: int) -> dict:
        """Every network freshly initialised from ``fold_in(key, i)``; ages ``i * max_age // size``."""
        return _init(self, key, tuple(int(v) for v in input_shape), int(num_classes))

    def take(self, state: dict, i) -> Any:
        """Network ``i``'s parameters."""
        return jax.tree.map(lambda a: a[i], state["params"])

    def advance(self, state: dict, i: int, x, y, key) -> dict:
        """Network ``i`` after one step on ``(x (m, h, w, c), y (m, k))``, or re-initialised from ``key`` when
        its age is past ``max_age`` (decided here, on the host: under ``lax.cond`` XLA's CPU backend took
        1.5 s per call for what the two branches do in 0.06 s)."""
        i = int(i)
        if int(state["age"][i]) > self.max_age:
            return _reset(self, state, jnp.asarray(i, jnp.int32), key, tuple(x.shape[1:]), int(y.shape[1]))
        return _train(self, state, jnp.asarray(i, jnp.int32), x, y)


@functools.partial(jax.jit, static_argnames=("pool", "input_shape", "num_classes"))
def _init(pool: ModelPool, key, input_shape, num_classes):
    keys = [jax.random.fold_in(key, i) for i in range(pool.size)]
    made = [pool._fresh(k, input_shape, num_classes) for k in keys]
    params = jax.tree.map(lambda *a: jnp.stack(a), *[p for p, _ in made])
    opt = jax.tree.map(lambda *a: jnp.stack(a), *[s for _, s in made])
    age = jnp.asarray([i * pool.max_age // pool.size for i in range(pool.size)], jnp.int32)
    return {"params": params, "opt": opt, "age": age}


def _put(state, i, params, opt_state, age):
    put = lambda stack, one: stack.at[i].set(one)  # noqa: E731
    return {"params": jax.tree.map(put, state["params"], params), "opt": jax.tree.map(put, state["opt"], opt_state),
            "age": state["age"].at[i].set(age)}


@functools.partial(jax.jit, static_argnums=0)
def _train(pool: ModelPool, state, i, x, y):
    params = jax.tree.map(lambda a: a[i], state["params"])
    opt_state = jax.tree.map(lambda a: a[i], state["opt"])
    mask = jnp.ones((x.shape[0],), jnp.float32)
    grads = jax.grad(loss_value)(params, pool.net, pool.loss, x, y, mask)
    updates, opt_state = optimizer(pool.opt).update(grads, opt_state, params)
    return _put(state, i, optax.apply_updates(params, updates), opt_state, state["age"][i] + 1)


@functools.partial(jax.jit, static_argnums=(0, 4, 5))
def _reset(pool: ModelPool, state, i, key, input_shape, num_classes):
    params, opt_state = pool._fresh(key, input_shape, num_classes)
    return _put(state, i, params, opt_state, jnp.zeros((), jnp.int32))

"""Support-set initialisations and target-batch samplers for iterative methods (pluggable).

An init is ``init(x, labels, *, kernel, num_classes, ipc, key) -> (images, targets)``: it sees the
(preprocessed) target pool, the run's kernel (for kernel-aware coresets) and a JAX PRNG key.

A sampler is ``sampler(step, state) -> (indices, weights)``: indices into the target pool and a
weight per index (ones for uniform batches; importance samplers return weights that keep the
sampled loss unbiased). ``state`` is the method's current state (the support set), so a sampler
can score examples under the current model. Samplers are pure functions of ``(step, state)``, or
keep a cache they expose through ``state_dict()`` / ``load_state_dict()`` (the driver checkpoints
it), so a resumed run draws exactly what an uninterrupted run would have drawn.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

import jax
import numpy as np

from ...data import class_balanced_indices, one_hot
from ...errors import InvalidInputError
from ...kernels import Kernel

__all__ = ["Init", "Sampler", "SamplerFactory", "INITS", "SAMPLERS", "real_init", "noise_init",
           "class_balanced_sampler", "numpy_seed", "get_init", "get_sampler"]


class Init(Protocol):
    def __call__(self, x: np.ndarray, labels: np.ndarray, *, kernel: Kernel | None, num_classes: int, ipc: int,
                 key: jax.Array) -> tuple[np.ndarray, np.ndarray]: ...


class Sampler(Protocol):
    def __call__(self, step: int, state: Any) -> tuple[np.ndarray, np.ndarray]: ...


SamplerFactory = Callable[..., Sampler]
"""``factory(labels, batch_size, *, num_classes, seed, x, targets, scores, settings) -> Sampler`` over a pool
with ``labels: (n,)``, images ``x``, one-hot ``targets``, the method's ``scores(state, x, y) -> (n,)`` (or
None) and the driver's settings; a factory uses what it needs."""


def numpy_seed(key: jax.Array) -> int:
    """The 64-bit integer held by a PRNG key (``numpy_seed(jax.random.key(s)) == s`` for 0 <= s < 2**32),
    for NumPy generators that must agree with a seed."""
    data = np.asarray(jax.random.key_data(key)).astype(np.uint64).ravel()
    value = 0
    for word in data[-2:]:
        value = (value << 32) | int(word)
    return value


def real_init(x, labels, *, kernel=None, num_classes, ipc, key):
    """Class-balanced random real images with mean-centred one-hot labels."""
    idx = class_balanced_indices(labels, ipc, seed=numpy_seed(key), num_classes=num_classes)
    return np.asarray(x[idx]), one_hot(labels[idx], num_classes, dtype=np.float64)


def noise_init(x, labels, *, kernel=None, num_classes, ipc, key):
    """Gaussian images with the pool's per-pixel mean and std, balanced one-hot labels."""
    rng = np.random.default_rng(numpy_seed(key))
    mean, std = x.mean(axis=0), x.std(axis=0)
    images = mean + std * rng.standard_normal((ipc * num_classes, *x.shape[1:]))
    cls = np.repeat(np.arange(num_classes), ipc)
    return images.astype(x.dtype), one_hot(cls, num_classes, dtype=np.float64)


INITS: dict[str, Init] = {"real": real_init, "noise": noise_init}
"""Support-set initialisations by name (``--init``)."""


def class_balanced_sampler(labels: np.ndarray, batch_size: int, *, num_classes: int, seed: int,
                           **context: Any) -> Sampler:
    """Uniform batches of ``batch_size`` indices (capped at n) with (nearly) equal counts per class,
    all weights 1.

    Step ``s`` uses ``numpy.random.default_rng([seed, s])``. When the batch covers the whole
    pool, every step returns all indices.
    """
    labels = np.asarray(labels)
    n = labels.shape[0]
    if batch_size < num_classes:
        raise InvalidInputError(f"target batch {batch_size} is smaller than the number of classes {num_classes}")
    by_class = [np.flatnonzero(labels == c) for c in range(num_classes)]
    if batch_size >= n:
        everything, ones = np.arange(n), np.ones(n)
        return lambda step, state=None: (everything, ones)
    base, extra = divmod(batch_size, num_classes)

    def sample(step: int, state: Any = None) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([seed, step])
        order = rng.permutation(num_classes)
        parts = []
        for rank, c in enumerate(order):
            want = min(base + (1 if rank < extra else 0), by_class[c].size)
            parts.append(rng.choice(by_class[c], size=want, replace=False))
        idx = np.sort(np.concatenate(parts))
        return idx, np.ones(idx.size)

    return sample


SAMPLERS: dict[str, SamplerFactory] = {"uniform": class_balanced_sampler}
"""Target samplers by name (``--sampler``)."""


def get_init(name: str) -> Init:
    if name not in INITS:
        raise InvalidInputError(f"unknown init {name!r}; valid inits: {', '.join(INITS)}")
    return INITS[name]


def get_sampler(name: str) -> SamplerFactory:
    if name not in SAMPLERS:
        raise InvalidInputError(f"unknown sampler {name!r}; valid samplers: {', '.join(SAMPLERS)}")
    return SAMPLERS[name]

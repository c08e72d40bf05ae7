"""Target-batch samplers and support-set initialisations for KIP (pluggable).

A sampler is ``sampler(step) -> indices``: a pure function of the step, so a
resumed run draws exactly the batches an uninterrupted run would have drawn.
An init is ``init(x, labels, *, num_classes, ipc, seed) -> (images, targets)``.
"""

from __future__ import annotations

from typing import Callable, Protocol

import numpy as np

from ..data import class_balanced_indices, one_hot
from ..errors import InvalidInputError

__all__ = ["Sampler", "Init", "class_balanced_sampler", "real_init", "noise_init", "INITS"]

Sampler = Callable[[int], np.ndarray]


class Init(Protocol):
    def __call__(self, x: np.ndarray, labels: np.ndarray, *, num_classes: int, ipc: int,
                 seed: int) -> tuple[np.ndarray, np.ndarray]: ...


def class_balanced_sampler(labels: np.ndarray, batch_size: int, *, num_classes: int, seed: int) -> Sampler:
    """Batches of ``batch_size`` indices (capped at n) with (nearly) equal counts per class.

    Step ``s`` uses ``numpy.random.default_rng([seed, s])``. When the batch covers the whole
    pool, every step returns all indices.
    """
    labels = np.asarray(labels)
    n = labels.shape[0]
    if batch_size < num_classes:
        raise InvalidInputError(f"target batch {batch_size} is smaller than the number of classes {num_classes}")
    by_class = [np.flatnonzero(labels == c) for c in range(num_classes)]
    if batch_size >= n:
        everything = np.arange(n)
        return lambda step: everything
    base, extra = divmod(batch_size, num_classes)

    def sample(step: int) -> np.ndarray:
        rng = np.random.default_rng([seed, step])
        order = rng.permutation(num_classes)
        parts = []
        for rank, c in enumerate(order):
            want = min(base + (1 if rank < extra else 0), by_class[c].size)
            parts.append(rng.choice(by_class[c], size=want, replace=False))
        return np.sort(np.concatenate(parts))

    return sample


def real_init(x, labels, *, num_classes, ipc, seed):
    """Class-balanced random real images with mean-centred one-hot labels."""
    idx = class_balanced_indices(labels, ipc, seed=seed, num_classes=num_classes)
    return np.asarray(x[idx]), one_hot(labels[idx], num_classes, dtype=np.float64)


def noise_init(x, labels, *, num_classes, ipc, seed):
    """Gaussian images with the training set's per-pixel mean and std, balanced one-hot labels."""
    rng = np.random.default_rng(seed)
    mean, std = x.mean(axis=0), x.std(axis=0)
    images = mean + std * rng.standard_normal((ipc * num_classes, *x.shape[1:]))
    cls = np.repeat(np.arange(num_classes), ipc)
    return images.astype(x.dtype), one_hot(cls, num_classes, dtype=np.float64)


INITS: dict[str, Init] = {"real": real_init, "noise": noise_init}
"""Support-set initialisations by name (coreset inits will join them)."""

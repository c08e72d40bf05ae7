"""The random baseline: class-balanced real training images with their one-hot labels."""

from __future__ import annotations

import numpy as np

from ..data import class_balanced_indices, one_hot
from ._registry import register_method
from ._types import Context, MethodOutput

__all__ = ["random_real"]


def random_real(
    x_train: np.ndarray, labels: np.ndarray, *, ipc: int, num_classes: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pick ``ipc`` random training images of every class.

    Args:
      x_train: (n, h, w, c) images. labels: (n,) ints in [0, k).
    Returns: images (ipc*k, h, w, c), mean-centred one-hot labels (ipc*k, k),
      and the chosen indices into ``x_train``.
    """
    idx = class_balanced_indices(labels, ipc, seed=seed, num_classes=num_classes)
    return x_train[idx], one_hot(labels[idx], num_classes), idx


@register_method("random", doc="class-balanced random real images with one-hot labels (the baseline every "
                 "paper reports); any kernel")
def _run_random(ctx: Context, opts: dict) -> MethodOutput:
    images, labels, idx = random_real(ctx.x_train, ctx.labels, ipc=ctx.config.ipc, num_classes=ctx.num_classes,
                                      seed=ctx.config.seed)
    return MethodOutput(images, labels, {"indices": idx.tolist()})

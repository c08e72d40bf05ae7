"""Label Solve (Nguyen et al., arXiv:2011.00050): optimal support labels for fixed support images.

    Y_S* = argmin_{Y_S} || Y_T - K_TS A^-1 Y_S ||^2,   A = K_SS + lam I,
i.e. least squares in B = A^-1 Y_S with normal equations (K_ST K_TS) B = K_ST Y_T,
accumulated over blocks of targets by an executor (memory O(m^2 + block * m)), then Y_S = A B.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import krr
from ..parallel import Executor, get_executor
from .._typing import KernelFn
from ..data import class_balanced_indices
from ..errors import InvalidInputError
from ._registry import Option, register_method
from ._types import Context, MethodOutput

__all__ = ["label_solve", "label_loss"]


def _normal_equations_block(x_t, y_t, x_support, kernel):
    """One block's share of the normal equations: ``(K_ST K_TS, K_ST Y_T)``."""
    k_ts = np.asarray(kernel(x_t, x_support), dtype=np.float64)
    return k_ts.T @ k_ts, k_ts.T @ y_t


def _add_pair(a, b):
    return a[0] + b[0], a[1] + b[1]


def label_solve(
    kernel: KernelFn,
    x_support: np.ndarray,
    x_target: np.ndarray,
    y_target: np.ndarray,
    *,
    reg: float = 1e-6,
    chunk_size: int = 2048,
    progress: bool = False,
    executor: Executor | None = None,
) -> np.ndarray:
    """Optimal labels ``(m, k)`` for ``x_support: (m, h, w, c)`` against targets ``(n, h, w, c), (n, k)``.

    ``reg`` is relative: lam = reg * tr(K_SS) / m. The normal equations are solved
    by a symmetric eigendecomposition, with directions below ``m * eps * max`` dropped
    (the minimum-norm solution when K_ST K_TS is singular).
    """
    x_support = np.asarray(x_support)
    m = x_support.shape[0]
    y_target = np.asarray(y_target, dtype=np.float64)
    gram, cross = get_executor(executor).map(
        _normal_equations_block, x_target, y_target, broadcast=(x_support, kernel), block_size=chunk_size,
        reduce=_add_pair, progress=progress, description="label solve")
    e, q = np.linalg.eigh((gram + gram.T) / 2)
    keep = e > m * np.finfo(np.float64).eps * max(float(e.max()), 1e-300)
    b = q[:, keep] @ ((q[:, keep].T @ cross) / e[keep, None])
    k_ss = krr.kernel_matrix(kernel, x_support, x_support, executor=executor)
    lam = krr.absolute_reg(np.trace(k_ss), m, reg)
    return (k_ss + lam * np.eye(m)) @ b


def label_loss(kernel: KernelFn, x_support, y_support, x_target, y_target, *, reg: float = 1e-6) -> float:
    """``1/2 mean_i || y_i - K(x_i, X_S) (K_SS + lam I)^-1 Y_S ||^2`` over all targets (float64, NumPy)."""
    model = krr.fit(kernel, x_support, y_support, reg=reg)
    r = np.asarray(y_target, dtype=np.float64) - krr.predict(kernel, model, x_target)
    return 0.5 * float(np.mean(np.sum(r * r, axis=1)))


def _support_file(path: Path, preprocess: str, image_shape: tuple[int, ...]) -> np.ndarray:
    from .. import io
    from ..data import Preprocessor

    ds = io.load(path)
    kind = Preprocessor.from_arrays(ds.arrays).kind if ds.arrays else "none"
    if kind != preprocess:
        raise InvalidInputError(
            f"{path} holds images preprocessed with {kind!r} but this run uses --preprocess {preprocess}; "
            "use the same preprocessing")
    if ds.images.shape[1:] != tuple(image_shape):
        raise InvalidInputError(f"support images in {path} are {ds.images.shape[1:]} but the dataset's are "
                                f"{tuple(image_shape)}")
    if ds.images.shape[0] == 0:
        raise InvalidInputError(f"{path} holds no images; give a distilled set with at least one")
    return ds.images


@register_method(
    "label-solve",
    doc="closed-form optimal labels for fixed support images (random real images, or --support FILE) against "
        "the whole training set; any kernel",
    options=[Option("support", Path, None, "support images from this distilled-set file (default: random real "
                    "images)")],
)
def _run_label_solve(ctx: Context, opts: dict) -> MethodOutput:
    reg = ctx.relative_reg()
    info: dict = {}
    if opts.get("support") is None:
        idx = class_balanced_indices(ctx.labels, ctx.config.ipc, seed=ctx.config.seed, num_classes=ctx.num_classes)
        support = ctx.x_train[idx]
        info["indices"] = idx.tolist()
        info["support"] = "class-balanced real images"
    else:
        support = _support_file(opts["support"], ctx.config.preprocess, ctx.x_train.shape[1:])
        support = np.asarray(support, dtype=ctx.x_train.dtype)
        info["support"] = f"file {opts['support']}"
    labels = label_solve(ctx.kernel, support, ctx.x_train, ctx.targets, reg=reg, progress=ctx.progress,
                         executor=ctx.executor)
    return MethodOutput(support, labels.astype(np.float32), info, reg=reg)

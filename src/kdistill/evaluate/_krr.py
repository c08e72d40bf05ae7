"""KRR evaluation: accuracy of a (distilled) support set, and the full-data reference model."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from .. import krr
from ..parallel import Executor
from .._machine import check_memory
from .._typing import Array
from ..kernels import Kernel

__all__ = ["check_dual_memory", "FittedKRR", "fit_krr", "support_accuracy", "support_predictions", "per_class_accuracy",
           "FullReference", "full_data_reference", "MAX_DUAL_N", "MAX_PRIMAL_P"]

MAX_DUAL_N = 10_000
"""Largest training set for which the full-data reference is fitted in the dual (an n x n kernel)."""

MAX_PRIMAL_P = 16_384
"""Largest feature dimension for which primal ridge is used (a p x p Gram matrix)."""


def support_accuracy(
    kernel: Kernel, x_support: Array, y_support: Array, x_test: Array, labels_test: Array, *, reg: float = 1e-6,
    lam: float | None = None, executor: Executor | None = None,
) -> float:
    """Test accuracy of KRR trained on ``(x_support: (m,h,w,c), y_support: (m,k))`` with relative ``reg``
    (or absolute ``lam`` when given)."""
    model = krr.fit(kernel, x_support, y_support, reg=reg, lam=lam, executor=executor)
    return krr.accuracy(krr.predict(kernel, model, x_test, executor=executor), labels_test)


def support_predictions(
    kernel: Kernel, x_support: Array, y_support: Array, x_test: Array, *, reg: float = 1e-6,
    lam: float | None = None, executor: Executor | None = None,
) -> np.ndarray:
    """``(n_test, k)`` KRR outputs of the model trained on ``(x_support, y_support)``."""
    model = krr.fit(kernel, x_support, y_support, reg=reg, lam=lam, executor=executor)
    return krr.predict(kernel, model, x_test, executor=executor)


def per_class_accuracy(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> list[float | None]:
    """Accuracy on the test images of each class (``None`` for a class with no test image)."""
    hit = np.asarray(predictions).argmax(axis=1) == np.asarray(labels)
    return [float(hit[labels == c].mean()) if np.any(labels == c) else None for c in range(num_classes)]


@dataclasses.dataclass(frozen=True)
class FullReference:
    """The model trained on the whole training set (or why there is none)."""

    test_accuracy: float | None
    reg: float | None
    form: str | None  # "primal" | "dual" | None
    selection: krr.RegSelection | None
    note: str | None
    model: krr.PrimalModel | krr.DualModel | None = None


@dataclasses.dataclass(frozen=True)
class FittedKRR:
    """A model on a whole training set: ``form`` ``"primal"`` (explicit features) or ``"dual"``, and the
    ridge selection when ``reg`` was ``"auto"``."""

    model: krr.PrimalModel | krr.DualModel
    form: str
    selection: krr.RegSelection | None

    def predict(self, kernel: Kernel, x: Array, *, executor: Executor | None = None) -> np.ndarray:
        """``(n, k)`` outputs on ``x: (n, h, w, c)``."""
        if self.form == "primal":
            return krr.predict_primal(kernel.features, self.model, x, executor=executor)
        return krr.predict(kernel, self.model, x, executor=executor)


def check_dual_memory(n: int) -> None:
    """Refuse a dual model on ``n`` images that cannot fit in memory (K, K + lam I and its factor: 3 n^2 float64)."""
    check_memory(24 * n * n, f"the dual (n x n) KRR model on all n={n} training images",
                 "lower --max-dual-n (the full-data reference is then skipped), use --no-full, or a kernel with "
                 "explicit features (primal ridge)")


def fit_krr(
    kernel: Kernel,
    x_train: Array,
    y_train: Array,
    *,
    reg: float | str = "auto",
    grid: Sequence[float] = krr.DEFAULT_GRID,
    val_fraction: float = 0.05,
    seed: int = 0,
    max_dual_n: int = MAX_DUAL_N,
    chunk_size: int = 4096,
    progress: bool = False,
    executor: Executor | None = None,
) -> FittedKRR | str:
    """KRR on all of ``x_train: (n, h, w, c)``, ``y_train: (n, k)``, with relative ``reg`` or ``"auto"``
    (chosen on a held-out ``val_fraction``, then refitted on everything).

    Primal when the kernel has an explicit feature map of dimension at most ``MAX_PRIMAL_P``
    (memory independent of n), dual when n <= ``max_dual_n``; otherwise the reason there is no
    model, as a string.
    """
    x_train = np.asarray(x_train)
    n = x_train.shape[0]
    auto = reg == "auto"
    if kernel.features is not None and int(np.asarray(kernel.features(x_train[:1])).shape[1]) <= MAX_PRIMAL_P:
        if auto:
            model, sel = krr.fit_primal_selected(
                kernel.features, x_train, y_train, grid=grid, val_fraction=val_fraction, seed=seed,
                chunk_size=chunk_size, progress=progress, executor=executor,
            )
            return FittedKRR(model, "primal", sel)
        model = krr.fit_primal(kernel.features, x_train, y_train, reg=float(reg), chunk_size=chunk_size,
                               progress=progress, executor=executor)
        return FittedKRR(model, "primal", None)
    if n <= max_dual_n:
        check_dual_memory(n)
        sel = None
        if auto:
            sel = krr.select_dual(kernel, x_train, y_train, grid=grid, val_fraction=val_fraction, seed=seed,
                                  executor=executor)
        model = krr.fit(kernel, x_train, y_train, reg=sel.reg if auto else float(reg), executor=executor)
        return FittedKRR(model, "dual", sel)
    why = "has no explicit feature map" if kernel.features is None else "has a feature map too large for primal ridge"
    return (f"n_train={n} exceeds max_dual_n={max_dual_n} (an n x n kernel matrix) and kernel {kernel.spec!r} "
            f"{why}")


def full_data_reference(
    kernel: Kernel,
    x_train: Array,
    y_train: Array,
    x_test: Array | None,
    labels_test: Array | None,
    *,
    executor: Executor | None = None,
    **fit_options: Any,
) -> FullReference:
    """Fit on all of ``x_train`` with reg chosen on a held-out ``val_fraction`` (:func:`fit_krr`, which takes
    ``fit_options``: grid, val_fraction, seed, max_dual_n, chunk_size, progress); test it.

    When no model is possible: ``test_accuracy=None`` and a ``note`` saying why. Without a test set
    (``x_test=None``) the model is fitted and ``test_accuracy`` is ``None``.
    """
    fitted = fit_krr(kernel, x_train, y_train, reg="auto", executor=executor, **fit_options)
    if isinstance(fitted, str):
        return FullReference(None, None, None, None, f"not computed: {fitted}; raise --max-dual-n to force it")
    acc = None if x_test is None else krr.accuracy(fitted.predict(kernel, x_test, executor=executor), labels_test)
    return FullReference(acc, fitted.selection.reg, fitted.form, fitted.selection, None, fitted.model)

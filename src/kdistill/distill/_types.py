"""Settings, inputs and outputs shared by every distillation method."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import numpy as np

from .. import evaluate
from ..kernels import Kernel

__all__ = ["RunConfig", "Context", "MethodOutput"]


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Settings of a run, saved next to its result.

    Attributes:
      method: a name in :data:`METHODS`.
      ipc: images per class (>= 1).
      kernel: kernel spec string (``kdistill.kernels.from_spec``).
      seed: seeds every random choice of the run.
      preprocess: ``"none"``, ``"standardize"`` or ``"zca"``.
      reg: relative ridge of the model trained on the distilled set (lam = reg * tr(K_SS) / m), or
        ``"auto"``: chosen from ``krr.DEFAULT_GRID`` on ``val_size`` held-out training images.
        Methods that build a set for one ridge (analytic) override it.
      full_reference: also fit the whole training set for comparison.
      max_dual_n: largest n for a dual full-data reference.
      val_fraction: held-out share of the training set for choosing the full model's ridge.
      options: method-specific settings.
    """

    method: str = "random"
    ipc: int = 10
    kernel: str = "linear"
    seed: int = 0
    preprocess: str = "standardize"
    reg: float | str = "auto"
    val_size: int = 2000
    full_reference: bool = True
    max_dual_n: int = evaluate.MAX_DUAL_N
    val_fraction: float = 0.05
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Context:
    """What a distillation method receives (training data already preprocessed).

    ``full_reference()`` fits the model on the whole training set (ridge chosen on a
    held-out split) and reports its test accuracy; methods that need that model
    (analytic) call it, and the pipeline then does not fit it again. Methods never
    see the test set itself.
    """

    x_train: np.ndarray  # (n, h, w, c) float32, preprocessed
    labels: np.ndarray  # (n,) int
    targets: np.ndarray  # (n, k) float32, mean-centred one-hot
    num_classes: int
    kernel: Kernel
    config: RunConfig
    progress: bool
    full_reference: Callable[..., "evaluate.FullReference"]


@dataclasses.dataclass(frozen=True)
class MethodOutput:
    """What a method returns: the support set, extra summary fields, and optionally the
    full-data reference when the method had to fit it anyway."""

    images: np.ndarray  # (m, h, w, c)
    labels: np.ndarray  # (m, k)
    info: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    full_reference: evaluate.FullReference | None = None
    lam: float | None = None  # absolute ridge the distilled set is built for (overrides config.reg)
    reg: float | None = None  # relative ridge the set was optimised for (used unless the user set --reg)
    seconds: Mapping[str, float] = dataclasses.field(default_factory=dict)
    history: Mapping[str, list] | None = None  # per-step curves of iterative methods (history.json)

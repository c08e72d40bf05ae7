"""Settings, inputs and outputs shared by every distillation method."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from .. import evaluate, krr
from ..parallel import Executor, LOCAL
from ..kernels import Kernel

__all__ = ["RunConfig", "Context", "MethodOutput"]


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Settings of a run, saved next to its result (``run.json``).

    Attributes:
      method: a registered method name (``kdistill methods``).
      ipc: images per class (>= 1).
      kernel: kernel spec string (``kdistill.kernels.from_spec``), or None: the method's own (``kdistill methods``),
        else ``"linear"``; the run records the one used.
      seed: seeds every random choice of the run.
      preprocess: ``"none"``, ``"standardize"`` or ``"zca"``.
      reg: relative ridge of the model trained on the distilled set (lam = reg * tr(K_SS) / m), or
        ``"auto"``: chosen from ``krr.DEFAULT_GRID`` on held-out training images (``val_size``).
        Methods that build a set for one ridge (analytic) override it; iterative KRR methods train
        with it (``"auto"`` means their own default, 1e-6).
      val_size: held-out training images, the one validation setting of a run: ``reg="auto"`` chooses the
        ridge on them, and iterative methods validate on them to keep their best step. At most a fifth of
        the training set is used (``krr.effective_val_size``); the summary records the number used.
      full_reference: also fit the whole training set for comparison (needs a test set).
      max_dual_n: largest n for a dual full-data reference.
      val_fraction: held-out share of the training set for choosing the full model's ridge.
      precision: ``"float64"`` or ``"float32"`` for kernel values (ridge solves are float64), or ``"auto"``:
        the method's own (float32 for rfad, float64 for the others); the run records the one used.
      baseline: also evaluate class-balanced random real images at the same ipc with the same kernel
        (ridge chosen like ``reg="auto"``), the baseline every paper reports (skipped for ``random``).
      time_limit: seconds the whole run may take (0: no limit), counted from the start of the process for
        ``kdistill distill``: iterative methods learn for what is left once evaluating the set is set aside,
        and the random-real baseline and the full-data reference are skipped (and the summary says so) when
        their estimate does not fit in what remains.
      options: the method's options (names and types from its registration).
    """

    method: str = "random"
    ipc: int = 10
    kernel: str | None = None
    seed: int = 0
    preprocess: str = "standardize"
    reg: float | str = "auto"
    val_size: int = krr.DEFAULT_VAL_SIZE
    full_reference: bool = True
    max_dual_n: int = evaluate.MAX_DUAL_N
    val_fraction: float = 0.05
    precision: str = "auto"
    baseline: bool = True
    time_limit: float = 0.0
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Context:
    """What a distillation method receives (training data already preprocessed).

    ``full_reference()`` fits the model on the whole training set (ridge chosen on a
    held-out split) and reports its test accuracy; methods that need that model
    (analytic) call it, and the pipeline then does not fit it again. Methods never
    see the test set itself. ``workdir`` is the run directory (iterative methods keep
    their checkpoint there) or ``None``; ``resume`` asks them to continue from it.
    """

    x_train: np.ndarray  # (n, h, w, c) float32, preprocessed
    labels: np.ndarray  # (n,) int
    targets: np.ndarray  # (n, k) float32, mean-centred one-hot
    num_classes: int
    kernel: Kernel
    config: RunConfig
    progress: bool
    full_reference: Callable[..., "evaluate.FullReference"]
    workdir: Path | None = None
    resume: bool = False
    executor: Executor = LOCAL
    on_checkpoint: Callable[[int], None] | None = None  # called with the step after each checkpoint
    dataset_name: str | None = None  # the dataset's registry name (method defaults that differ per dataset)
    time_limit: float = 0.0  # seconds for the learning phase (0: none), from the run's time_limit

    def relative_reg(self, default: float = 1e-6) -> float:
        """The ridge iterative KRR methods train with: ``config.reg``, or ``default`` for ``"auto"``."""
        return default if self.config.reg == "auto" else float(self.config.reg)


@dataclasses.dataclass(frozen=True)
class MethodOutput:
    """What a method returns: the support set, its own summary fields, and optionally the
    full-data reference when the method had to fit it anyway.

    ``info`` lands in ``summary.json`` under ``"method_info"`` (it cannot overwrite the run's keys).
    ``init_images`` (preprocessed, aligned with ``images``) are the real images the set started from,
    drawn above the distilled ones in ``init_vs_distilled.png``.
    """

    images: np.ndarray  # (m, h, w, c)
    labels: np.ndarray  # (m, k)
    info: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    full_reference: evaluate.FullReference | None = None
    lam: float | None = None  # absolute ridge the distilled set is built for (overrides config.reg)
    reg: float | None = None  # relative ridge the set was optimised for (used unless the user set --reg)
    seconds: Mapping[str, float] = dataclasses.field(default_factory=dict)
    history: Mapping[str, list] | None = None  # per-step curves of iterative methods (history.json)
    init_images: np.ndarray | None = None
    seconds_before: float = 0.0  # distillation seconds of earlier segments of a resumed run (added to "distill")

"""A run's time budget (``--time-limit``): what each phase after the learning will cost, and what to skip.

The learning phase of an iterative method gets what is left once the evaluation it cannot do without
(the distilled set's test accuracy, the ridge choice on held-out images) and the random-real baseline are
set aside; the full-data reference runs only when its estimate fits in what remains (the baseline too,
should the learning have overrun), else it is skipped with a line that names the flag. Estimates come from
timing the kernel on a few training images in this process (:func:`probe`), after one call that compiles,
and the machine's own GEMM rates; once the evaluation has run, the later estimates are scaled by how far
its own estimate was off (from 128 images the rate per image of rf-convnet on MNIST came out 1.5-2x slow).
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from typing import Callable

import numpy as np

from .. import evaluate, krr
from .._machine import usable_cores
from ..parallel import Executor

__all__ = ["Budget", "Rates", "probe"]

_PROBE_IMAGES = 128  # images whose features are timed
_PROBE_PAIRS = (32, 4)  # kernels without a feature map: 32 images against 4 (a kernel value can be costly)
_WRITE_SECONDS = 5.0  # writing distilled.npz, the figures and the report (a second or two on MNIST)
_SAY_SECONDS = 10.0  # without a time limit, phases estimated shorter than this pass without a line
_MARGIN = 1.25  # estimates are from a few images on a machine whose load changes: keep a quarter spare


@dataclasses.dataclass(frozen=True)
class Rates:
    """Measured costs: seconds per image of the kernel's features (kernels with a feature map) or per kernel
    value (the others), the feature dimension, and the machine's GEMM rate in flop/s."""

    per_image: float | None
    per_pair: float | None
    feature_dim: int | None
    gemm_flops: float
    gemm64_flops: float | None = None  # NumPy's float64 GEMM (ridge solves, eigendecompositions): half if None

    @property
    def _f64(self) -> float:
        return self.gemm64_flops or self.gemm_flops / 2

    def images(self, n: int, m: int) -> float:
        """Seconds for the kernel between ``n`` images and ``m`` support images, and the m x m solve."""
        if self.per_image is not None:
            work = (n + m) * self.per_image + 2.0 * n * m * (self.feature_dim or 1) / self.gemm_flops
        else:
            work = n * m * self.per_pair
        return work + m**3 / self._f64

    def full(self, n_train: int, n_test: int, val_fraction: float, max_dual_n: int) -> float | None:
        """Seconds for the full-data reference as ``evaluate.full_data_reference`` computes it, or None when it
        would not be computed at all (too large for the dual form). Primal (features of width p): the features
        of every training image and of the held-out ``val_fraction`` again, the float64 p x p Gram matrix, one
        eigendecomposition for the ridge search (about 10 p^3 flop), the refit's Cholesky, the test features.
        Dual: the n x n kernel matrix and its eigendecomposition, then the test rows against all n."""
        p = self.feature_dim
        n_val = val_fraction * n_train
        if self.per_image is not None and p is not None and p <= evaluate.MAX_PRIMAL_P:
            features = (n_train + n_val + n_test) * self.per_image
            flop64 = 2.0 * (n_train + n_val) * p * p + 10.0 * p**3 + p**3 / 3.0 + 2.0 * (n_val + n_test) * p * p
            return features + flop64 / self._f64
        if n_train > max_dual_n:
            return None
        if self.per_pair is not None:
            pairs = (n_train + n_test) * n_train * self.per_pair
        else:  # a feature map too wide for primal ridge: features once, then the n x n products
            pairs = (n_train + n_test) * (self.per_image + 2.0 * n_train * (p or 1) / self.gemm_flops)
        return pairs + (10.0 * n_train**3 + n_train**3 / 3.0) / self._f64


def _timed(fn: Callable[[], object]) -> tuple[float, object]:
    """Seconds of the second call of ``fn`` (the first compiles, or fills caches), and what it returned."""
    fn()
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def gemm_flops() -> tuple[float, float]:
    """This machine's GEMM rates (flop/s) on a 512^3 product, measured now: float32 with JAX on its default
    device (where kernels run: a GPU's when there is one) and float64 with NumPy (ridge solves, eigh)."""
    import jax.numpy as jnp

    a = np.random.default_rng(0).normal(size=(512, 512))
    a32 = jnp.asarray(a, jnp.float32)
    s32 = min(_timed(lambda: (a32 @ a32).block_until_ready())[0] for _ in range(3))
    s64 = min(_timed(lambda: a @ a)[0] for _ in range(3))
    return 2 * 512**3 / max(s32, 1e-6), 2 * 512**3 / max(s64, 1e-6)


def probe(kernel, x: np.ndarray, m: int, executor: Executor | None = None) -> Rates:
    """Time ``kernel`` on a few of the images ``x`` (after a call that compiles): seconds per image of its
    features, or per kernel value when it has no feature map (exact ConvNet kernels on a CPU: their measured
    ``pair_seconds``, scaled to this machine's cores; on a GPU they are timed like the others)."""
    import jax

    f32, f64 = gemm_flops()
    if kernel.features is not None:
        b = min(_PROBE_IMAGES, x.shape[0])
        rows = x[:b]
        seconds, phi = _timed(lambda: np.asarray(kernel.features(rows)))
        return Rates(per_image=seconds / b, per_pair=None, feature_dim=int(phi.shape[1]), gemm_flops=f32,
                     gemm64_flops=f64)
    if kernel.pair_seconds is not None and jax.default_backend() == "cpu":  # exact ConvNet kernels: measured
        per_pair = kernel.pair_seconds(tuple(x.shape[1:])) * 2 / usable_cores()  # per image pair on 2 cores
        return Rates(per_image=None, per_pair=per_pair, feature_dim=None, gemm_flops=f32, gemm64_flops=f64)
    rows, support = x[:min(_PROBE_PAIRS[0], x.shape[0])], x[:max(1, min(m, _PROBE_PAIRS[1]))]
    seconds, _ = _timed(lambda: krr.kernel_matrix(kernel, rows, support, executor=executor))
    return Rates(per_image=None, per_pair=seconds / (rows.shape[0] * support.shape[0]), feature_dim=None,
                 gemm_flops=f32, gemm64_flops=f64)


def _clock(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


class Budget:
    """The seconds a run may take (``limit``; 0: no limit), counted from ``started`` (a
    ``time.perf_counter()`` value) plus ``spent`` seconds before it (the CLI's startup and data loading).
    ``say`` prints a line before each costly phase (None: silent)."""

    def __init__(self, limit: float, *, started: float, spent: float = 0.0, say: Callable[[str], None] | None = None):
        self.limit = float(limit or 0.0)
        self._deadline = started - spent + self.limit if self.limit else math.inf
        self._say = say
        self.skipped: dict[str, str] = {}
        self.estimates: dict[str, float] = {}

    def left(self) -> float:
        """Seconds left (inf without a limit)."""
        return self._deadline - time.perf_counter()

    def learning_seconds(self, reserve: float) -> float:
        """Seconds for the learning phase when ``reserve`` seconds must stay for what follows it (at least
        a millisecond: one step runs whatever the limit)."""
        if not self.limit:
            return 0.0
        seconds = self.left() - _MARGIN * reserve - _WRITE_SECONDS
        if seconds <= 0:
            self._line(f"--time-limit {self.limit:g} leaves no time to learn once evaluating the set (about "
                       f"{_clock(reserve)}) is set aside: one step runs, and the run will take longer than the limit")
        return max(seconds, 1e-3)

    def phase(self, name: str, estimate: float | None, *, what: str, optional_flag: str | None = None) -> bool:
        """Announce the phase ``name`` (``what`` it does) with its ``estimate`` in seconds (a line when the run has
        a limit or the phase is estimated at 10 s or more); returns False, with a line saying so, when it is
        optional (``optional_flag`` turns it off) and would break the limit."""
        if estimate is not None:
            self.estimates[name] = round(estimate, 2)
        about = "" if estimate is None else f", about {_clock(estimate)}"
        left = self.left()
        if optional_flag is not None and estimate is not None and _MARGIN * estimate + _WRITE_SECONDS > left:
            why = (f"skipped: about {_clock(estimate)}, more than the {_clock(max(left, 0))} left of --time-limit "
                   f"{self.limit:g} (a larger --time-limit keeps it; {optional_flag} skips it without this estimate)")
            self.skipped[name] = why
            self._line(f"{what}: {why}")
            return False
        if self.limit or (estimate is not None and estimate >= _SAY_SECONDS):
            budget = f" ({_clock(max(left, 0))} left of --time-limit {self.limit:g})" if self.limit else ""
            self._line(f"{what}{about}{budget}")
        return True

    def _line(self, text: str) -> None:
        if self._say is not None:
            self._say(text)

    def describe(self) -> dict:
        """What the summary records: the limit, each phase's estimate and what was skipped."""
        return {"time_limit": self.limit, "estimates": dict(self.estimates), "skipped": dict(self.skipped)}


def stderr_line(text: str) -> None:
    print(text, file=sys.stderr, flush=True)

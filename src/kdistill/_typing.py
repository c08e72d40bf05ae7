"""Type aliases shared across the package."""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np

Array = jax.Array | np.ndarray
"""Any array the numerical core accepts (JAX or NumPy)."""

Key = jax.Array
"""A JAX PRNG key (``jax.random.key(seed)``)."""

KernelFn = Callable[[Any, Any], jax.Array]
"""``k(x1, x2) -> (n1, n2)`` for NHWC inputs ``x1: (n1, h, w, c)``, ``x2: (n2, h, w, c)``."""

FeatureFn = Callable[[Any], jax.Array]
"""``phi(x) -> (n, p)`` for NHWC input ``x: (n, h, w, c)``."""

"""Shared fixtures and tolerances.

Float64 is enabled for the whole suite so that both float32 and float64 inputs
can be exercised (inputs are created with explicit dtypes).
"""

import jax
import numpy as np
import pytest

jax.config.update("jax_enable_x64", True)

# One place for tolerances, per dtype (STYLE.md habit 10).
TOL = {np.float32: dict(rtol=2e-4, atol=2e-5), np.float64: dict(rtol=1e-9, atol=1e-10)}


@pytest.fixture
def rng():
    return np.random.default_rng(0)

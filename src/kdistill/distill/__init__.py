"""Distillation methods and the run pipeline."""

from . import _analytic as analytic
from ._analytic import distilled_features as distilled_features
from ._analytic import lambda_s_bound as lambda_s_bound
from ._methods import METHODS as METHODS
from ._pipeline import RunResult as RunResult
from ._pipeline import run as run
from ._random import random_real as random_real
from ._types import Context as Context
from ._types import MethodOutput as MethodOutput
from ._types import RunConfig as RunConfig

__all__ = [
    "METHODS", "Context", "MethodOutput", "RunConfig", "RunResult", "analytic", "distilled_features",
    "lambda_s_bound", "random_real", "run",
]

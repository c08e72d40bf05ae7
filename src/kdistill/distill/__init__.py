"""Distillation methods and the run pipeline."""

from ._pipeline import METHODS as METHODS
from ._pipeline import Context as Context
from ._pipeline import MethodOutput as MethodOutput
from ._pipeline import RunConfig as RunConfig
from ._pipeline import RunResult as RunResult
from ._pipeline import run as run
from ._random import random_real as random_real

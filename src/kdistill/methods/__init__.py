"""Distillation methods, the method registry, the iterative driver and the run pipeline.

Every method registers itself (:func:`register_method`) with typed :class:`Option` s; the CLI,
validation, ``run.json`` and ``kdistill methods`` come from the registration. Iterative methods
are an :class:`IterativeMethod` (``init`` / ``step`` / ``support`` / ``validate``) run by
:func:`run_iterative`, which owns batches, validation, checkpoints and resume.
"""

from ._registry import Method as Method
from ._registry import Option as Option
from ._registry import get_method as get_method
from ._registry import methods as methods
from ._registry import register_method as register_method
from ._registry import resolve_options as resolve_options
from ._registry import unregister_method as unregister_method
from ._types import Context as Context
from ._types import MethodOutput as MethodOutput
from ._types import RunConfig as RunConfig
from ._driver import driver_options as driver_options
from ._driver import Batch as Batch
from ._driver import DriverSettings as DriverSettings
from ._driver import IterativeMethod as IterativeMethod
from ._driver import IterativeResult as IterativeResult
from ._driver import driver_settings as driver_settings
from ._driver import run_iterative as run_iterative
from ._losses import LOSSES as LOSSES
from ._losses import Loss as Loss
from ._losses import mse as mse
from ._losses import platt as platt
from ._sampling import INITS as INITS
from ._sampling import SAMPLERS as SAMPLERS
from ._sampling import class_balanced_sampler as class_balanced_sampler
from ._sampling import noise_init as noise_init
from ._sampling import real_init as real_init
# method modules register themselves on import
# (coreset inits and smart-pick first: iterative methods list the INITS and SAMPLERS as choices)
from . import _random, _analytic, _label_solve, _coreset, _smart_pick, _kip, _rfad, _dc  # noqa: E401,F401
from ._coreset import coreset_init as coreset_init
from ._smart_pick import SmartPick as SmartPick
from . import _analytic as analytic
from ._analytic import distilled_features as distilled_features
from ._analytic import lambda_s_bound as lambda_s_bound
from ._kip import KIPSettings as KIPSettings
from ._kip import kip as kip
from ._kip import kip_loss as kip_loss
from ._kip import kip_method as kip_method
from ._label_solve import label_solve as label_solve
from ._rfad import RFADSettings as RFADSettings
from ._rfad import rfad_method as rfad_method
from ._dc import DCSettings as DCSettings
from ._dc import dc_method as dc_method
from ._dc import match_distance as match_distance
from ._random import random_real as random_real
from ._pipeline import RunResult as RunResult
from ._pipeline import run as run
from ._rundir import read_run_json as read_run_json
from ._rundir import RUN_FILES as RUN_FILES
from ._rundir import run_to_dir as run_to_dir
from ._rundir import write_run_outputs as write_run_outputs

__all__ = [
    "Batch", "Context", "DCSettings", "DriverSettings", "INITS", "IterativeMethod", "IterativeResult",
    "KIPSettings", "LOSSES", "Loss", "Method", "MethodOutput", "Option", "RFADSettings", "RUN_FILES", "RunConfig",
    "RunResult",
    "SAMPLERS", "SmartPick", "analytic", "class_balanced_sampler", "coreset_init", "distilled_features",
    "dc_method", "driver_options", "driver_settings", "get_method",
    "kip", "kip_loss",
    "kip_method", "label_solve", "lambda_s_bound", "match_distance", "methods", "mse", "noise_init", "platt", "random_real",
    "read_run_json", "real_init", "register_method", "resolve_options", "rfad_method", "run", "run_iterative",
    "run_to_dir",
    "unregister_method", "write_run_outputs",
]

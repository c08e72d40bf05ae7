"""Distillation methods and the method registry.

Every method registers itself (:func:`register_method`) with typed :class:`Option` s; the CLI,
validation, ``run.json`` and ``kdistill methods`` come from the registration. Iterative methods are built
from :mod:`kdistill.methods.iterative` (the driver, checkpoints, inits, samplers, losses, the KRR-loss
helpers and the distributed step). Running a method on a dataset is :mod:`kdistill.runs`.

The methods: ``random``, ``analytic`` (Chen, Huang & Weng 2024), ``label-solve`` and ``kip`` (Nguyen et al.
2021), ``rfad`` (Loo et al. 2022), ``dc`` (Zhao et al. 2021), ``coreset`` (Distil-Boost's initialisations,
which also serve every iterative method as ``--init``; its SMART-PICK sampler is ``--sampler smart-pick``).
"""

from ._registry import Method as Method
from ._registry import Option as Option
from ._registry import cli_flags as cli_flags
from ._registry import get_method as get_method
from ._registry import methods as methods
from ._registry import register_method as register_method
from ._registry import resolve_options as resolve_options
from ._registry import unregister_method as unregister_method
from ._types import Context as Context
from ._types import MethodOutput as MethodOutput
from ._types import RunConfig as RunConfig
from . import iterative as iterative
# method modules register themselves on import
from . import _random, _analytic, _label_solve, _coreset, _smart_pick, _kip, _rfad, _dc, _frepo, _rcig  # noqa: E401,F401
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
from ._frepo import FRePoSettings as FRePoSettings
from ._frepo import frepo_method as frepo_method
from ._rcig import RCIGSettings as RCIGSettings
from ._rcig import rcig_method as rcig_method
from ._random import random_real as random_real

__all__ = [
    "Context", "DCSettings", "FRePoSettings", "KIPSettings", "Method", "MethodOutput", "Option", "RCIGSettings",
    "RFADSettings", "RunConfig",
    "SmartPick", "analytic", "cli_flags", "coreset_init", "dc_method", "distilled_features", "frepo_method", "get_method",
    "iterative", "kip", "kip_loss", "kip_method", "label_solve", "lambda_s_bound", "match_distance", "methods",
    "random_real", "rcig_method", "register_method", "resolve_options", "rfad_method", "unregister_method",
]


_MOVED = {"run": "kdistill.runs", "run_to_dir": "kdistill.runs", "read_run_json": "kdistill.runs",
          "RUN_FILES": "kdistill.runs", "write_run_outputs": "kdistill.runs", "RunResult": "kdistill.runs",
          **{n: "kdistill.methods.iterative" for n in (
              "run_iterative", "DriverSettings", "IterativeMethod", "IterativeResult", "Batch", "driver_options",
              "driver_settings", "INITS", "SAMPLERS", "LOSSES", "Loss", "mse", "platt", "class_balanced_sampler",
              "noise_init", "real_init")}}


def __getattr__(name: str):
    """Names that moved out of ``kdistill.methods``: one line saying where they are now."""
    if name in _MOVED:
        raise AttributeError(f"kdistill.methods.{name} moved: use {_MOVED[name]}.{name}")
    raise AttributeError(f"module 'kdistill.methods' has no attribute {name!r}")

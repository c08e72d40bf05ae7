"""Building blocks of iterative distillation methods (KIP, RFAD, DC, and the next ones).

A new method is one module: a frozen settings dataclass subclassing :class:`DriverSettings` whose fields
are declared with :func:`option`, a ``build(settings, ctx) -> IterativeMethod``, and one call to
:func:`register_iterative` (the CLI options, validation, resume fingerprint, checkpoint, summary fields
and output come from it; README "Adding a method" has a complete example).

A method is an :class:`IterativeMethod` (``init`` / ``step`` / ``support`` / ``validate``, optionally
``scores``); :func:`run_iterative` runs it and owns everything around the steps: the validation split, the
initial support set (:data:`INITS`), target batches (:data:`SAMPLERS`), keeping the best set, patience, the
time limit, checkpoints (:func:`save_checkpoint`) with exact resume, progress and the history.

Shared by the KRR-loss methods: the losses (:data:`LOSSES`), :func:`ridge_solve`, :func:`krr_predictions`,
one jitted optimiser step (:func:`adam_update`) and its state (:func:`init_state`), and the distributed
step (:func:`split_update`) a method hands its own head, support rows and shard functions to.
"""

from ._checkpoint import load_checkpoint as load_checkpoint
from ._checkpoint import save_checkpoint as save_checkpoint
from ._driver import Batch as Batch
from ._driver import DriverSettings as DriverSettings
from ._driver import IterativeMethod as IterativeMethod
from ._driver import IterativeResult as IterativeResult
from ._driver import driver_options as driver_options
from ._driver import driver_settings as driver_settings
from ._driver import run_iterative as run_iterative
from ._krr import adam_update as adam_update
from ._krr import init_state as init_state
from ._krr import krr_predictions as krr_predictions
from ._krr import ridge_solve as ridge_solve
from ._register import CHECKPOINT as CHECKPOINT
from ._register import register_iterative as register_iterative
from ._settings import check_settings as check_settings
from ._settings import hidden as hidden
from ._settings import method_fields as method_fields
from ._settings import option as option
from ._settings import settings_options as settings_options
from ._losses import LOSSES as LOSSES
from ._losses import Loss as Loss
from ._losses import get_loss as get_loss
from ._losses import mse as mse
from ._losses import platt as platt
from ._sampling import INITS as INITS
from ._sampling import SAMPLERS as SAMPLERS
from ._sampling import Init as Init
from ._sampling import Sampler as Sampler
from ._sampling import SamplerFactory as SamplerFactory
from ._sampling import class_balanced_sampler as class_balanced_sampler
from ._sampling import get_init as get_init
from ._sampling import get_sampler as get_sampler
from ._sampling import noise_init as noise_init
from ._sampling import numpy_seed as numpy_seed
from ._sampling import real_init as real_init
from ._split import pad_rows as pad_rows
from ._split import rows_loss as rows_loss
from ._split import split_update as split_update
from ._split import step_bytes as step_bytes

__all__ = [
    "CHECKPOINT", "check_settings", "hidden", "method_fields", "option", "register_iterative", "settings_options",
    "Batch", "DriverSettings", "INITS", "Init", "IterativeMethod", "IterativeResult", "LOSSES", "Loss", "SAMPLERS",
    "Sampler", "SamplerFactory", "adam_update", "class_balanced_sampler", "driver_options", "driver_settings",
    "get_init", "get_loss", "get_sampler", "init_state", "krr_predictions", "load_checkpoint", "mse", "noise_init",
    "numpy_seed", "pad_rows", "platt", "real_init", "ridge_solve", "rows_loss", "run_iterative", "save_checkpoint",
    "split_update", "step_bytes",
]

"""kdistill: dataset distillation with kernel ridge regression.

The public face: :func:`distill` (your own arrays in one call), :class:`KRR` and
:class:`Distiller` (scikit-learn estimators), :class:`DistilledSet`, :func:`load_set` /
:func:`save_set`, :func:`run` / :func:`run_to_dir` with a :class:`RunConfig`, and the subpackages
:mod:`kdistill.data` (datasets, preprocessing), :mod:`kdistill.kernels` (kernels from spec
strings), :mod:`kdistill.krr` (ridge regression), :mod:`kdistill.methods` (the method registry and
the methods; :mod:`kdistill.methods.iterative` the building blocks of iterative ones),
:mod:`kdistill.runs` (a run, in memory or in a run directory), :mod:`kdistill.parallel` (executors),
:mod:`kdistill.nets` (finite networks), :mod:`kdistill.evaluate`, :mod:`kdistill.io` (distilled-set
files), :mod:`kdistill.report`.

Names are imported on first use, so ``import kdistill`` (and the CLI) starts fast.

>>> import kdistill
>>> sorted(kdistill.methods.methods())
['analytic', 'coreset', 'dc', 'frepo', 'kip', 'label-solve', 'random', 'rcig', 'rfad']
"""

from __future__ import annotations

import importlib
from importlib import metadata as _metadata
from typing import TYPE_CHECKING

from . import errors as errors

try:
    __version__ = _metadata.version("kdistill")
except _metadata.PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"

# public name -> (module, attribute); attribute None: the module itself
_LAZY = {
    "distill": ("._api", "distill"),
    "KRR": ("._estimators", "KRR"),
    "Distiller": ("._estimators", "Distiller"),
    "DistilledSet": ("._io", "DistilledSet"),
    "load_set": ("._io", "load"),
    "save_set": ("._io", "save"),
    "Executor": (".parallel", "Executor"),
    "LocalExecutor": (".parallel", "LocalExecutor"),
    "PRECISIONS": ("._precision", "PRECISIONS"),
    "precision_scope": ("._precision", "precision_scope"),
    "RunConfig": (".methods", "RunConfig"),
    "run": (".runs", "run"),
    "run_to_dir": (".runs", "run_to_dir"),
    "data": (".data", None),
    "kernels": (".kernels", None),
    "krr": (".krr", None),
    "nets": (".nets", None),
    "methods": (".methods", None),
    "parallel": (".parallel", None),
    "runs": (".runs", None),
    "evaluate": (".evaluate", None),
    "io": (".io", None),
    "report": (".report", None),
}

__all__ = sorted(["errors", *_LAZY])


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'kdistill' has no attribute {name!r}")
    module, attr = _LAZY[name]
    mod = importlib.import_module(module, __name__)
    value = mod if attr is None else getattr(mod, attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(__all__) | set(globals()))


if TYPE_CHECKING:  # pragma: no cover
    from . import data, evaluate, io, kernels, krr, methods, parallel, report, runs  # noqa: F401
    from ._api import distill  # noqa: F401
    from ._estimators import KRR, Distiller  # noqa: F401
    from .parallel import Executor, LocalExecutor  # noqa: F401
    from ._io import DistilledSet  # noqa: F401
    from ._io import load as load_set  # noqa: F401
    from ._io import save as save_set  # noqa: F401
    from ._precision import PRECISIONS, precision_scope  # noqa: F401
    from .methods import RunConfig  # noqa: F401
    from .runs import run, run_to_dir  # noqa: F401

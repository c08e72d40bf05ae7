"""kdistill: dataset distillation with kernel ridge regression.

Subpackages: :mod:`kdistill.data` (datasets, preprocessing), :mod:`kdistill.kernels`
(kernels from spec strings), :mod:`kdistill.krr` (ridge regression),
:mod:`kdistill.distill` (methods and the run pipeline), :mod:`kdistill.evaluate`,
:mod:`kdistill.io` (distilled-set files), :mod:`kdistill.report` (figures).
"""

from importlib import metadata as _metadata

from . import errors as errors

try:
    __version__ = _metadata.version("kdistill")
except _metadata.PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"

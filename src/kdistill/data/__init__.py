"""Datasets, their official file formats, preprocessing and label helpers.

``load("mnist")`` finds a dataset's official files (or an offline copy) and
returns a :class:`Dataset` of ``(n, h, w, c) float32`` images in ``[0, 1]`` and
``(n,) int64`` labels; ``availability()`` says what can be loaded right now and
how to get the rest; ``download(name)`` fetches official files, md5-checked.
Decoded official files are cached in ``<data_dir>/.cache/`` so that later loads are
fast; ``KDISTILL_NO_CACHE=1`` turns that off.
"""

from ._arrays import Dataset as Dataset
from ._arrays import load_arrays as load_arrays
from ._preprocess import KINDS as PREPROCESSING_KINDS
from ._preprocess import Preprocessor as Preprocessor
from ._preprocess import class_balanced_indices as class_balanced_indices
from ._preprocess import fit_preprocessor as fit_preprocessor
from ._preprocess import layer_norm as layer_norm
from ._preprocess import one_hot as one_hot
from ._registry import DATASETS as DATASETS
from ._registry import REGISTRY as REGISTRY
from ._registry import DatasetInfo as DatasetInfo
from ._registry import DatasetStatus as DatasetStatus
from ._registry import RemoteFile as RemoteFile
from ._registry import availability as availability
from ._registry import canonical_name as canonical_name
from ._registry import download as download
from ._registry import load as load
from ._registry import resolve_data_dir as resolve_data_dir

__all__ = [
    "DATASETS",
    "PREPROCESSING_KINDS",
    "REGISTRY",
    "Dataset",
    "DatasetInfo",
    "DatasetStatus",
    "Preprocessor",
    "RemoteFile",
    "availability",
    "canonical_name",
    "class_balanced_indices",
    "download",
    "fit_preprocessor",
    "layer_norm",
    "load",
    "load_arrays",
    "one_hot",
    "resolve_data_dir",
]

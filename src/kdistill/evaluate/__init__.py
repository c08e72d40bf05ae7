"""Evaluation protocol: KRR accuracy of distilled sets and the full-data reference."""

from ._krr import MAX_DUAL_N as MAX_DUAL_N
from ._krr import FullReference as FullReference
from ._krr import full_data_reference as full_data_reference
from ._krr import support_accuracy as support_accuracy
from ._file import evaluate_file as evaluate_file

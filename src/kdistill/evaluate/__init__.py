"""Evaluation protocol: KRR accuracy of distilled sets and the full-data reference."""

from ._krr import MAX_DUAL_N as MAX_DUAL_N
from ._krr import MAX_PRIMAL_P as MAX_PRIMAL_P
from ._krr import FittedKRR as FittedKRR
from ._krr import check_dual_memory as check_dual_memory
from ._krr import FullReference as FullReference
from ._krr import fit_krr as fit_krr
from ._krr import full_data_reference as full_data_reference
from ._krr import per_class_accuracy as per_class_accuracy
from ._krr import support_accuracy as support_accuracy
from ._krr import support_predictions as support_predictions
from ._file import evaluate_file as evaluate_file
from ..nets import MODELS as MODELS
from ..nets import make_model as make_model
from ._finite import AUGMENTS as AUGMENTS
from ._finite import PROTOCOLS as PROTOCOLS
from ._finite import resolve_augment as resolve_augment
from ._finite import FiniteSettings as FiniteSettings
from ._finite import finite_settings as finite_settings
from ._finite import training_targets as training_targets
from ._finite import train as train
from ._finite import accuracy as accuracy
from ._finite import train_and_evaluate as train_and_evaluate
from ._finite import finite_accuracy as finite_accuracy
from ._finite import finite_evaluate_file as finite_evaluate_file
